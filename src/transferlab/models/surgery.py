"""Model surgery by *stage*: the named blocks of any backbone (a ResNet's ``conv1``, ``layer1`` … ``layer4``; a ViT's
``blocks.0`` …; LeNet's ``conv``, ``fc``), plus the encoder's ``bottleneck``.

What transfer-learning recipes do to a pretrained network, as plain functions on an
:class:`~transferlab.models.heads.Encoder`:

* :func:`stages` lists them (``transferlab model stages CONFIG`` prints them);
* :func:`stage_state` keeps the checkpoint entries of chosen stages (copy the first k, re-initialise the rest);
* :func:`freeze_stages` stops their gradients; the method then holds them in eval mode, so BatchNorm statistics
  do not move either (:meth:`~transferlab.methods.base.Method.hold_eval`), and
  :meth:`~transferlab.methods.base.Method.unfreeze_at` releases them at a given step (gradual unfreezing, ULMFiT);
* :func:`stage_lr_scales` gives per-stage learning-rate multipliers;
* :func:`adapt_input_channels` turns a first convolution's weights between 1 and 3 input channels.

A stage is a top-level child with parameters of the backbone's network (normalisation layers join the stage before
them, so ResNet's ``bn1`` belongs to ``conv1``). Containers named ``stages``, ``blocks``, ``features`` or ``layers``
(timm's ConvNeXt and ViT, torchvision's DenseNet and VGG) are opened one level: ``stages.0``, ``stages.1`` ….
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .layers import _NORMS

_OPENED = ("stages", "blocks", "features", "layers")


def _core(encoder: nn.Module) -> tuple[str, nn.Module]:
    """The backbone's network and its qualified name inside ``encoder`` (torchvision backbones are wrapped)."""
    backbone = encoder.backbone
    if type(backbone).__name__ == "_Headless":
        return "backbone.model", backbone.model
    return "backbone", backbone


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def stages(encoder: nn.Module) -> dict[str, list[str]]:
    """``{stage name: [qualified module names inside encoder]}``, input to output."""
    prefix, core = _core(encoder)
    children: list[tuple[str, nn.Module]] = []
    for name, child in core.named_children():
        if not _has_params(child):
            continue
        if name in _OPENED and isinstance(child, (nn.Sequential, nn.ModuleList)):
            children += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()
                         if _has_params(grandchild)]
        else:
            children.append((name, child))
    out: dict[str, list[str]] = {}
    for name, child in children:
        if isinstance(child, _NORMS) and out:
            out[list(out)[-1]].append(f"{prefix}.{name}")
        else:
            out[name] = [f"{prefix}.{name}"]
    if not out:  # a backbone without named children (unlikely): one stage
        out["backbone"] = [prefix]
    adapters = getattr(encoder, "adapters", None)
    if _has_params(encoder.bottleneck):
        out["bottleneck"] = ["bottleneck"]
    if adapters is not None:
        out["adapters"] = ["adapters"]
    return out


def resolve(encoder: nn.Module, spec: int | list[str] | None, key: str) -> list[str]:
    """Stage names from a config value: a list of names, or ``n`` for the first n stages; ``None``: none."""
    if spec is None:
        return []
    names = list(stages(encoder))
    valid = f"The encoder's stages, input to output: {', '.join(names)}"
    if isinstance(spec, int):
        if spec > len(names):
            raise ConfigError(f"{key}={spec}, but the encoder has {len(names)} stages. {valid}")
        return names[:spec]
    unknown = [s for s in spec if s not in names]
    if unknown:
        from ..validation import closest

        hint = closest(unknown[0], names)
        raise ConfigError(f"{key}: no stage named {', '.join(map(repr, unknown))}.{hint} {valid}")
    return list(dict.fromkeys(spec))


def stage_modules(encoder: nn.Module, names: list[str]) -> list[nn.Module]:
    table = stages(encoder)
    return [encoder.get_submodule(qualified) for name in names for qualified in table[name]]


def stage_state(encoder: nn.Module, state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The entries of ``state`` (an encoder state dict) that belong to the stages ``names``."""
    table = stages(encoder)
    prefixes = tuple(f"{qualified}." for name in names for qualified in table[name])
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def freeze_stages(encoder: nn.Module, names: list[str]) -> list[nn.Module]:
    """Stop gradients to the stages ``names``; returns their modules, for the method to hold in eval mode."""
    modules = stage_modules(encoder, names)
    for module in modules:
        module.requires_grad_(False)
    return modules


def stage_lr_scales(encoder: nn.Module, scales: dict[str, float]) -> dict[int, float]:
    """Learning-rate multipliers by ``id(parameter)`` for the stages named in ``scales``."""
    resolve(encoder, list(scales), "model.stage_lr")
    return {id(p): scale for name, scale in scales.items() for module in stage_modules(encoder, [name])
            for p in module.parameters()}


def adapt_conv_weight(weight: torch.Tensor, in_channels: int, mode: str = "sum") -> torch.Tensor:
    """A convolution weight ``(out, c, kh, kw)`` for ``in_channels`` inputs, with ``c`` and ``in_channels`` in {1, 3}.

    ``sum`` (the rule of timm's ``adapt_input_conv``): 3 -> 1 sums the three filters, 1 -> 3 repeats the filter
    divided by 3, so a grey image gives the same response as its 3-channel copy gave before. ``mean``: 3 -> 1
    averages the filters, 1 -> 3 repeats them unscaled."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if {have, in_channels} != {1, 3}:
        raise ConfigError(f"cannot adapt a convolution with {have} input channels to {in_channels}; only 1 <-> 3")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True) if mode == "sum" else weight.mean(dim=1, keepdim=True)
    repeated = weight.repeat(1, 3, 1, 1)
    return repeated / 3.0 if mode == "sum" else repeated


def adapt_input_channels(module: nn.Module, state: dict[str, torch.Tensor], mode: str = "sum") -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` with every 4-d weight whose shape differs from ``module``'s only in its input channels (1 vs 3)
    adapted by :func:`adapt_conv_weight`; also returns the adapted keys."""
    own = module.state_dict()
    out, adapted = dict(state), []
    for key, value in state.items():
        mine = own.get(key)
        if mine is None or value.dim() != 4 or mine.shape == value.shape:
            continue
        if mine.shape[0] == value.shape[0] and mine.shape[2:] == value.shape[2:] and {mine.shape[1], value.shape[1]} == {1, 3}:
            out[key] = adapt_conv_weight(value, mine.shape[1], mode)
            adapted.append(key)
    return out, adapted


def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``Conv2d`` of ``module`` in registration order, with its qualified name."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            return name, child
    return None


def set_input_channels(module: nn.Module, in_channels: int, mode: str = "sum") -> None:
    """Replace ``module``'s first convolution by one taking ``in_channels`` inputs, its weights adapted
    (:func:`adapt_conv_weight`): how a network built for RGB takes grey images, or the reverse."""
    found = first_conv(module)
    if found is None:
        raise ConfigError(f"{type(module).__name__} has no convolution whose input channels could be adapted")
    name, conv = found
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(conv.weight, in_channels, mode))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, new)
