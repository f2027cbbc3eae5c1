"""Random views for contrastive pretraining, made on the device for a whole batch at once with
per-sample parameters (Kornia's augmentation modules), so device-resident data never goes through PIL.

Inputs and outputs are normalised model input; :class:`Views` undoes the normalisation, augments
in [0, 1] pixel space, clamps and normalises again. Presets (the SimCLR pipeline adapted per modality):

``natural`` (SimCLR, Chen et al. 2020, appendix A): random resized crop (scale 0.08–1), horizontal
    flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, greyscale p=0.2, Gaussian blur p=0.5.
``digits``: crops keep most of the digit (scale 0.4–1), a small rotation/translation (±15°, 10%), no
    flip (a mirrored digit is another glyph or none); brightness/contrast jitter, plus saturation/hue
    jitter and greyscale only for RGB digits (MNIST-M); light blur.
``medical_flip``: ``medical`` plus a horizontal flip, for images whose left and right are interchangeable for the
    label (axial brain MRI: a tumour on either side is a tumour), unlike chest X-rays.
``medical`` (X-ray, MRI): crops of scale 0.5–1, ±10° rotation, brightness/contrast jitter (0.3), light
    blur; no flip (laterality matters: the heart is on the left) and no hue/saturation (grey modalities).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Preset = Literal["natural", "digits", "medical", "medical_flip"]


def view_pipeline(preset: Preset, channels: int, size: int, crop_scale: tuple[float, float] | None = None) -> nn.Module:
    """The augmentation pipeline of ``preset`` for ``channels``-channel images of ``size`` pixels, on [0, 1] input."""
    import kornia.augmentation as K

    rgb = channels == 3
    blur_kernel = max(3, (size // 10) | 1)  # ~10% of the side, odd (SimCLR's choice)
    if preset == "natural":
        steps = [K.RandomResizedCrop((size, size), scale=crop_scale or (0.08, 1.0)), K.RandomHorizontalFlip()]
        steps.append(K.ColorJitter(0.4, 0.4, 0.4 if rgb else 0.0, 0.1 if rgb else 0.0, p=0.8))
        steps += [K.RandomGrayscale(p=0.2)] if rgb else []
        steps.append(K.RandomGaussianBlur((blur_kernel, blur_kernel), (0.1, 2.0), p=0.5))
    elif preset == "digits":
        steps = [K.RandomResizedCrop((size, size), scale=crop_scale or (0.4, 1.0), ratio=(0.8, 1.25)),
                 K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), p=0.5),
                 K.ColorJitter(0.4, 0.4, 0.4 if rgb else 0.0, 0.1 if rgb else 0.0, p=0.8)]
        steps += [K.RandomGrayscale(p=0.2)] if rgb else []
        steps.append(K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.5))
    elif preset in ("medical", "medical_flip"):
        steps = [K.RandomResizedCrop((size, size), scale=crop_scale or (0.5, 1.0)),
                 *([K.RandomHorizontalFlip()] if preset == "medical_flip" else []),
                 K.RandomAffine(degrees=10.0, p=0.5), K.ColorJitter(0.3, 0.3, p=0.8),
                 K.RandomGaussianBlur((blur_kernel, blur_kernel), (0.1, 1.0), p=0.5)]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; use natural, digits, medical or medical_flip")
    return nn.Sequential(*steps)


class Views(nn.Module):
    """Random views of a batch of normalised images ``(B, C, H, W)``; a new draw on every call.

    Randomness comes from torch's global generator, which the engine seeds and checkpoints, so a
    resumed run draws the same views as an uninterrupted one. It also serves as the training-only
    augmentation of image batches (``data.augment``): outside a model it moves itself to the device of
    the first batch it sees (its parameters are then drawn by that device's generator).
    """

    def __init__(self, preset: Preset, shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
                 crop_scale: tuple[float, float] | None = None) -> None:
        super().__init__()
        channels, height, width = shape
        if height != width:
            raise ValueError(f"views need square images; got {height}x{width}")
        self.pipeline = view_pipeline(preset, channels, height, crop_scale)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:
            self.to(x.device)  # once: the mean/std buffers and Kornia's samplers follow the batches
        memory_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        with torch.autocast(x.device.type, enabled=False):  # augment in float32 even under bf16 autocast
            pixels = (x.float() * self.std + self.mean).clamp_(0.0, 1.0).contiguous()
            view = self.pipeline(pixels).clamp_(0.0, 1.0)
        return ((view - self.mean) / self.std).to(x.dtype).contiguous(memory_format=memory_format)
