"""Backbones by name, timm-style: ``create_backbone("lenet" | "dtn" | "mlp" | "torchvision:resnet50" |
"timm:vit_small_patch16_224" | "hf:bert-base-multilingual-cased", in_channels=..., image_size=..., pretrained=...)``.

Every backbone returns a flat feature vector and exposes ``out_features``. Pretrained weights are
loaded from a local file (``pretrained: /path/to/weights.safetensors``) or, for
``pretrained: true``, from the library's weight cache ``~/.cache/transferlab/weights/<name>.safetensors``
(``$TRANSFERLAB_WEIGHTS`` overrides); timm models also try timm's own hub cache. Nothing here waits
on a network: with no local weights the error says where to put them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import TransferlabError, state_dict_mismatch
from ..registry import Registry

BackboneFactory = Callable[..., nn.Module]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def _flat_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        was_training = features.training
        features.eval()
        out = features(torch.zeros(1, in_channels, image_size, image_size))
        features.train(was_training)
    return int(out.flatten(1).shape[1])


class LeNet(nn.Module):
    """LeNet as used for MNIST<->USPS in ADDA/TLlib: conv(20,5)-pool-conv(50,5)-dropout-pool-fc(500)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(20, 50, kernel_size=5), nn.Dropout2d(p=0.5), nn.MaxPool2d(2), nn.ReLU(),
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(_flat_size(self.conv, in_channels, image_size), 500), nn.ReLU(), nn.Dropout(0.5)
        )
        self.out_features = 500

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class DTN(nn.Module):
    """The digit network of Long et al. (CDAN) / TLlib for 32x32 RGB digits (SVHN, MNIST-M)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()

        def block(i: int, o: int, drop: float) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 5, stride=2, padding=2), nn.BatchNorm2d(o), nn.Dropout2d(drop), nn.ReLU()]

        self.conv = nn.Sequential(*block(in_channels, 64, 0.1), *block(64, 128, 0.3), *block(128, 256, 0.5))
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(_flat_size(self.conv, in_channels, image_size), 512),
            nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5),
        )
        self.out_features = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """A perceptron for pre-extracted feature vectors (e.g. Office-Caltech SURF/GoogLeNet, Amazon reviews):
    ``Linear -> activation`` per hidden width, with dropout between hidden layers (not after the last one).

    The default, ``hidden=(256, 256)`` with ReLU and dropout 0.5, is the library's original two-layer MLP;
    ``hidden=(100,)`` with sigmoid is the shallow network of the DANN paper's Amazon-reviews experiments;
    ``hidden=()`` passes the features through unchanged (a linear model on top, e.g. with no bottleneck).
    An int ``hidden`` means two layers of that width."""

    def __init__(self, in_features: int, hidden: int | tuple[int, ...] | list[int] = (256, 256),
                 activation: str = "relu", dropout: float = 0.5) -> None:
        super().__init__()
        widths = (hidden, hidden) if isinstance(hidden, int) else tuple(hidden)
        if activation not in ACTIVATIONS:
            raise TransferlabError(f"unknown MLP activation '{activation}'. Valid: {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise TransferlabError(f"MLP dropout must lie in [0, 1); got {dropout}")
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Linear(widths[i - 1] if i else in_features, width), ACTIVATIONS[activation]()]
            if i < len(widths) - 1 and dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.out_features = widths[-1] if widths else in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES.add("lenet", lambda in_channels=1, image_size=28, **_: LeNet(in_channels, image_size))
BACKBONES.add("dtn", lambda in_channels=3, image_size=32, **_: DTN(in_channels, image_size))
BACKBONES.add("mlp", lambda in_features, mlp=None, **_: MLP(in_features, **(mlp or {})))


def weights_cache() -> Path:
    return Path(os.environ.get("TRANSFERLAB_WEIGHTS", "~/.cache/transferlab/weights")).expanduser()


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a torch file with ``weights_only=True`` (no code runs)."""
    if not path.is_file():
        raise TransferlabError(f"pretrained weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise TransferlabError(
                f"pretrained weights file {path} is not a readable safetensors file ({exc}); it may be truncated or "
                f"in another format. Download or convert it again (safetensors.torch.save_file(state_dict, path))"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling refusal or corruption)
        raise TransferlabError(
            f"refusing to load {path}: it is not a plain tensor file ({type(exc).__name__}). Only safetensors "
            f"files and torch files holding tensors are loaded; convert it with safetensors."
        ) from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


class _Headless(nn.Module):
    """Wrap a torchvision classifier so it returns pooled features (its final fc replaced by Identity)."""

    def __init__(self, model: nn.Module, out_features: int) -> None:
        super().__init__()
        self.model = model
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _torchvision(name: str, pretrained: bool | str) -> nn.Module:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise TransferlabError(
            f"torchvision has no model '{name}'. Valid names: {', '.join(torchvision.models.list_models())}"
        ) from None
    if pretrained:
        path = Path(pretrained) if isinstance(pretrained, str) else weights_cache() / f"torchvision-{name}.safetensors"
        if not path.is_file():
            raise TransferlabError(
                f"pretrained weights for torchvision:{name} not found at {path}. This machine may be offline: "
                f"download them elsewhere (torchvision.models.get_model_weights('{name}')), save the state "
                f"dict with safetensors to that path, or set model.pretrained to a local file."
            )
        missing, _ = model.load_state_dict(load_weights_file(path), strict=False)
        if missing:
            raise TransferlabError(f"{path} does not match torchvision:{name}; missing keys such as {missing[:3]}")
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        last = head[-1] if isinstance(head, nn.Sequential) else head
        if isinstance(last, nn.Linear):
            out_features = last.in_features
            if isinstance(head, nn.Sequential):
                head[-1] = nn.Identity()
            else:
                setattr(model, attr, nn.Identity())
            return _Headless(model, out_features)
    raise TransferlabError(f"cannot find the classification layer of torchvision:{name} to use it as a backbone")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached now (``HF_HUB_OFFLINE``, or no answer from its host within
    ``timeout`` seconds), or None when it may be. Without this, an offline machine waits about a minute on the
    hub client's retries before the same error."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    if constants.is_offline_mode():
        return "huggingface_hub is in offline mode"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # through a proxy: a direct connection says nothing
    return _no_answer(constants.ENDPOINT, timeout)


@functools.lru_cache(maxsize=None)
def _no_answer(endpoint: str, timeout: float) -> str | None:
    """A TCP connection to the endpoint's host, given ``timeout`` seconds in all (name lookup included)."""
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: dict = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("ok"):
        return None
    return f"{host} cannot be reached ({outcome.get('error') or f'no answer within {timeout:.0f} s'})"


def _timm_cached_weights(name: str) -> str | None:
    """A local copy of timm's pretrained weights for ``name`` (Hugging Face hub cache, or torch.hub's for
    URL weights), or None."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str):
                return found
    if cfg.url:
        from urllib.parse import urlparse

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return str(path)
    return None


def _timm(name: str, pretrained: bool | str, in_channels: int) -> nn.Module:
    import timm

    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise TransferlabError(f"timm has no model '{name}' (see timm.list_models())")
    kwargs: dict = {"num_classes": 0, "in_chans": in_channels}
    if isinstance(pretrained, str):
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(pretrained).expanduser())}
        kwargs["pretrained"] = True
    else:
        kwargs["pretrained"] = bool(pretrained)
        offline = _hub_unreachable() if pretrained else None
        if offline is not None:  # fail fast, or load the cached copy without asking the hub
            cached = _timm_cached_weights(name)
            if cached is None:
                raise TransferlabError(
                    f"timm:{name} with model.pretrained: true needs its weights from the Hugging Face hub, but {offline} "
                    f"and they are not in the local cache. Download them once where there is a network (python -c "
                    f"\"import timm; timm.create_model('{name}', pretrained=True)\"), or put the weights file "
                    f"somewhere local and set model.pretrained to its path.")
            kwargs["pretrained_cfg_overlay"] = {"file": cached}
    try:
        model = timm.create_model(name, **kwargs)
    except Exception as exc:  # noqa: BLE001  (hub errors come in many types)
        raise TransferlabError(
            f"could not load pretrained weights for timm:{name} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Offline? Put the weights file somewhere local and set model.pretrained to its path."
        ) from None
    model.out_features = model.num_features
    return model


def create_backbone(name: str, *, in_channels: int = 3, image_size: int = 224, in_features: int | None = None,
                    pretrained: bool | str = False, mlp: dict | None = None, hf: dict | None = None) -> nn.Module:
    """Build a backbone by registry name or ``torchvision:NAME`` / ``timm:NAME`` / ``hf:NAME_OR_PATH``. ``mlp`` holds
    the ``mlp`` backbone's settings (:class:`MLP`'s ``hidden``, ``activation``, ``dropout``), ``hf`` those of
    :func:`~transferlab.models.encoders.create_hf_encoder` (pooling, freezing)."""
    if name.startswith("hf:"):
        from .encoders import create_hf_encoder

        return create_hf_encoder(name.split(":", 1)[1], **(hf or {}))
    if name.startswith("torchvision:"):
        model = _torchvision(name.split(":", 1)[1], pretrained)
        if in_channels != 3:  # grey input: the first convolution's filters summed over RGB (timm's rule)
            from .surgery import set_input_channels

            set_input_channels(model, in_channels)
        return model
    if name.startswith("timm:"):
        return _timm(name.split(":", 1)[1], pretrained, in_channels)
    factory = BACKBONES.get(name)
    if name == "mlp" and in_features is None:
        raise TransferlabError("backbone 'mlp' takes feature vectors (datasets of kind features); this data is "
                               "images: choose lenet, dtn, torchvision:<name> or timm:<name>")
    try:
        model = factory(in_channels=in_channels, image_size=image_size, in_features=in_features, mlp=mlp)
    except RuntimeError as exc:  # e.g. an image too small for the network's convolutions
        raise TransferlabError(
            f"backbone '{name}' cannot be built for {in_channels}x{image_size}x{image_size} input: "
            f"{str(exc).splitlines()[0]}. Choose a larger data.image_size or another backbone"
        ) from None
    if pretrained:
        path = Path(pretrained) if isinstance(pretrained, str) else weights_cache() / f"{name}.safetensors"
        try:
            model.load_state_dict(load_weights_file(path))
        except RuntimeError as exc:
            raise TransferlabError(f"{path} does not fit backbone '{name}': {state_dict_mismatch(exc)}") from None
    return model
