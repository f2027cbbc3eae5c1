"""Grad-CAM: where in an image a convolutional classifier finds the evidence for a class.

Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017, eqs. 1-2. For the feature maps A (K×h×w) of a
convolutional layer and the score y_c of class c (the logit, before the softmax):

    α_k = (1 / hw) Σ_ij ∂y_c / ∂A_k[i, j],        L_c = ReLU(Σ_k α_k A_k),

then L_c is upsampled bilinearly to the input's size and divided by its maximum, per image, so it
lies in [0, 1] (a map with no positive evidence stays all zero).

Written here with one forward hook instead of the ``grad-cam`` package (a new dependency for a few
lines): the hook takes the layer's output A, hands the rest of the network a copy of a detached leaf
of it, and ``torch.autograd.grad`` gives ∂y_c/∂A. So it works with frozen parameters and under
``torch.no_grad``, never writes a parameter's ``.grad``, and runs no backward pass through the layers
below A. The model is evaluated in eval mode (dropout off, batch norm on running statistics, so the
images of a batch do not interact) and every module's mode is restored afterwards; the hook is
removed even when an error is raised.

* :func:`last_conv_layer`: the default layer, the last ``nn.Conv2d`` registered in the model.
* :func:`grad_cam`: the maps of a batch, for the predicted or chosen classes.
* :func:`overlay`, :func:`write_sheet`: maps drawn over their images, and a PNG sheet of them.
* :func:`pick_images`, :func:`choose_images`: which test images to draw (random by seed, or given).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ..errors import ConfigError, DataError

#: Pixels of white space around and between the cells of a sheet, and between an image and its overlay.
PAD = 4
#: Height in pixels of the title strip above each cell (only when titles are given).
TITLE_HEIGHT = 14


def last_conv_layer(model: nn.Module, example: torch.Tensor | None = None, min_side: int = 2) -> str:
    """The qualified name (as in ``model.named_modules()``) of the last ``nn.Conv2d`` in registration order,
    e.g. ``"layer4.1.conv2"`` for a torchvision ResNet-18 and ``"conv.3"`` for :class:`~transferlab.models.
    backbones.LeNet`. Registration order is the forward order for the usual ``Sequential``-style backbones;
    pass ``target_layer`` to :func:`grad_cam` where it is not.

    With an ``example`` input, the last convolution whose output is at least ``min_side`` x ``min_side`` (else the
    one with the largest output): on small images a deep network's last maps are 1x1 (ResNet-18 at 28 px), and a
    Grad-CAM map upsampled from one cell is a constant that shows nothing."""
    convs = [(qualified, module) for qualified, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d layer, so Grad-CAM has no feature maps to use; "
                          "it needs a convolutional backbone (or pass target_layer naming a layer with (B, C, H, W) "
                          "outputs)")
    if example is None:
        return convs[-1][0]
    sides: dict[str, int] = {}
    hooks = [module.register_forward_hook(lambda m, i, o, q=qualified: sides.__setitem__(q, min(o.shape[-2:])))
             for qualified, module in convs]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    large = [q for q, _ in convs if sides.get(q, 0) >= min_side]
    return large[-1] if large else max(sides, key=lambda q: sides[q])


def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        hint = f"; its convolutions include {', '.join(convs[-5:])}" if convs else ""
        raise ConfigError(f"{type(model).__name__} has no layer '{name}'{hint}") from None


def _class_indices(class_index: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    batch, classes = logits.shape
    if class_index is None:
        return logits.argmax(dim=1)
    index = torch.as_tensor(class_index, device=logits.device)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ConfigError(f"class_index must hold integers; got dtype {index.dtype}")
    index = index.long()
    if index.dim() == 0:
        index = index.expand(batch)
    if index.shape != (batch,):
        raise ConfigError(f"class_index must be one int or one per image ({batch}); got shape {tuple(index.shape)}")
    if bool(((index < 0) | (index >= classes)).any()):
        raise ConfigError(f"class_index must lie in [0, {classes}) for a model with {classes} classes; "
                          f"got {index.tolist()}")
    return index


def grad_cam(model: nn.Module, inputs: torch.Tensor, *, target_layer: str | None = None,
             class_index: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) in [0, 1], float32 on the inputs' device, of the images ``inputs`` (B, C, H, W).

    ``model(inputs)`` must return class logits (B, K). ``target_layer`` names the layer whose output maps are
    weighted (default :func:`last_conv_layer`); it must run once per forward and return (B, K', h, w).
    ``class_index`` is the class to explain: one int for every image, one per image (tensor or sequence), or
    None for each image's predicted class.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DataError(f"grad_cam needs a batch of images (B, C, H, W); got {shape}")
    if len(inputs) == 0:
        raise DataError("grad_cam got an empty batch; pass at least one image")
    name = last_conv_layer(model) if target_layer is None else target_layer
    layer = _layer(model, name)
    captured: list[torch.Tensor] = []
    problems: list[str] = []

    def hook(_module: nn.Module, _args: object, output: object) -> object:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            problems.append(f"layer '{name}' returned {shape}, not feature maps (B, C, h, w); pick a convolutional "
                            "layer as target_layer")
            return None
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()  # a non-leaf copy: in-place ops downstream (ReLU(inplace=True)) leave ``leaf`` intact

    modes = {module: module.training for module in model.modules()}
    x = inputs.clone() if inputs.is_inference() else inputs
    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(x)
            if problems:
                raise ConfigError(problems[0])
            if not captured:
                raise ConfigError(f"layer '{name}' did not run in the model's forward pass; pick a layer the "
                                  "forward uses as target_layer")
            if len(captured) > 1:
                raise ConfigError(f"layer '{name}' ran {len(captured)} times in one forward pass, so its feature "
                                  "maps are ambiguous; pick a layer that runs once as target_layer")
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(inputs):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ConfigError(f"grad_cam needs a model that returns class logits ({len(inputs)}, K); got "
                                  f"{shape}. Wrap the backbone with its classifier head")
            index = _class_indices(class_index, logits)
            # Per-image scores summed: in eval mode images do not interact, so each gets its own gradient.
            score = logits.gather(1, index[:, None]).sum()
            activations = captured[0]
            (gradients,) = torch.autograd.grad(score, activations, allow_unused=True)
    finally:
        handle.remove()
        for module, training in modes.items():
            module.train(training)
    if gradients is None:
        raise ConfigError(f"the class scores do not depend on layer '{name}'; pick a layer on the path to the logits")
    a, g = activations.detach().float(), gradients.float()
    weights = g.mean(dim=(2, 3), keepdim=True)  # α_k, eq. 1
    cam = torch.relu((weights * a).sum(dim=1, keepdim=True))  # eq. 2
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


def _image_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) with C in {1, 3}, uint8 or floats in [0, 1] -> (H, W, 3) float64 in [0, 1]."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise DataError(f"an image must be (C, H, W) with 1 (grey) or 3 (RGB) channels; got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float64) / 255.0
    else:
        array = array.astype(np.float64)
        if array.size and (not np.isfinite(array).all() or array.min() < -1e-3 or array.max() > 1 + 1e-3):
            raise DataError(f"image values lie in [{array.min():.3g}, {array.max():.3g}]; pass images in [0, 1] "
                            "(undo the normalisation the model's inputs had) or as uint8")
        array = array.clip(0.0, 1.0)
    array = np.moveaxis(array, 0, -1)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def overlay(image: torch.Tensor | np.ndarray, cam: torch.Tensor | np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (C, H, W; C = 1 or 3; floats in [0, 1] or uint8) with ``cam`` (H, W, values in [0, 1]) drawn
    over it in matplotlib's ``jet`` colours (blue = no evidence, red = most): ``(1 - alpha) · image + alpha ·
    jet(cam)``, as (H, W, 3) uint8. Grey images are drawn as RGB."""
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha must lie in [0, 1]; got {alpha}")
    rgb = _image_array(image)
    heat = cam.detach().float().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam, dtype=np.float64)
    if heat.shape != rgb.shape[:2]:
        raise DataError(f"the map is {heat.shape} but the image is {rgb.shape[:2]}; a Grad-CAM map has its "
                        "image's height and width")
    colours = colormaps["jet"](np.nan_to_num(heat, nan=0.0).clip(0.0, 1.0))[..., :3]
    blend = (1.0 - alpha) * rgb + alpha * colours
    return np.round(blend * 255.0).clip(0, 255).astype(np.uint8)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text``, cut and ended with '…' when it is wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def write_sheet(images: torch.Tensor | Sequence[torch.Tensor], cams: torch.Tensor | Sequence[torch.Tensor],
                path: str | os.PathLike[str], *, titles: Sequence[str] | None = None, columns: int = 4,
                scale: int = 1, alpha: float = 0.45) -> Path:
    """Write one PNG sheet: for each image, the image itself and, right of it, its map drawn over it
    (:func:`overlay`), with its title above when ``titles`` are given; ``columns`` such pairs per row.

    ``images`` are (C, H, W) images as :func:`overlay` takes them (a (N, C, H, W) tensor or a sequence), ``cams``
    their (H, W) maps; all images share one size. ``scale`` enlarges each pixel to scale×scale (small digits).
    The sheet is ``c·(2·W·s + PAD) + (c + 1)·PAD`` wide and ``r·(H·s + T) + (r + 1)·PAD`` high for c =
    min(columns, N) columns, r = ⌈N / c⌉ rows and T = TITLE_HEIGHT with titles, 0 without. The parent folders
    are created, and the file is written to a temporary name in the same folder and then renamed, so ``path``
    never holds a partial PNG. Returns ``path``.
    """
    if len(images) != len(cams):
        raise DataError(f"write_sheet got {len(images)} images but {len(cams)} maps; pass one map per image")
    if len(images) == 0:
        raise DataError("write_sheet got no images; pass at least one image and its map")
    if titles is not None and len(titles) != len(images):
        raise DataError(f"write_sheet got {len(titles)} titles for {len(images)} images; pass one title per image")
    if not isinstance(columns, int) or columns < 1:
        raise ConfigError(f"columns must be a positive integer; got {columns!r}")
    if not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer; got {scale!r}")
    pairs, size = [], None
    for i, (image, cam) in enumerate(zip(images, cams)):
        original = np.round(_image_array(image) * 255.0).astype(np.uint8)
        pair = [original, overlay(image, cam, alpha=alpha)]
        size = size or original.shape[:2]
        if original.shape[:2] != size:
            raise DataError(f"image {i} is {original.shape[:2]} but image 0 is {size}; the images of one sheet "
                            "must share one size")
        pairs.append([np.kron(p, np.ones((scale, scale, 1), dtype=np.uint8)) for p in pair])
    height, width = pairs[0][0].shape[:2]
    title_height = TITLE_HEIGHT if titles is not None else 0
    cols = min(columns, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    cell_w, cell_h = 2 * width + PAD, height + title_height
    sheet = Image.new("RGB", (cols * cell_w + (cols + 1) * PAD, rows * cell_h + (rows + 1) * PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (original, overlaid) in enumerate(pairs):
        left = PAD + (i % cols) * (cell_w + PAD)
        top = PAD + (i // cols) * (cell_h + PAD)
        if titles is not None:
            draw.text((left, top), _fit(draw, str(titles[i]), font, cell_w), fill="black", font=font)
        sheet.paste(Image.fromarray(original), (left, top + title_height))
        sheet.paste(Image.fromarray(overlaid), (left + width + PAD, top + title_height))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            sheet.save(handle, format="PNG")
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600: give the sheet the mode any new file gets
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def pick_images(n_total: int, n: int, seed: int = 0) -> list[int]:
    """``min(n, n_total)`` distinct indices of ``range(n_total)``, drawn by ``seed`` and sorted: the same seed
    gives the same images (and the same indices as :func:`~transferlab.analysis.features.sample`)."""
    if n_total < 0:
        raise DataError(f"cannot pick images from {n_total} images")
    if n < 0:
        raise ConfigError(f"the number of images to draw must be >= 0; got {n}")
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]
    return sorted(int(i) for i in order)


def choose_images(n_total: int, *, indices: Sequence[int] | None = None, n: int = 8, seed: int = 0) -> list[int]:
    """The images to draw: the given ``indices`` (checked, in the order given), else :func:`pick_images`."""
    if indices is None:
        return pick_images(n_total, n, seed)
    chosen = [int(i) for i in indices]
    bad = [i for i in chosen if not 0 <= i < n_total]
    if bad:
        raise DataError(f"image indices {bad[:5]} are outside the {n_total} test images; pass indices in "
                        f"[0, {n_total})")
    repeated = sorted({i for i in chosen if chosen.count(i) > 1})
    if repeated:
        raise DataError(f"image indices {repeated[:5]} are given more than once; pass each image once")
    return chosen
