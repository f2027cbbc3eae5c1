"""The embedded default: a digits domain shift built only from data that ships with scikit-learn.

* ``digits``: half of scikit-learn's 1,797 bundled 8x8 handwritten digits, grey, as uint8 0..255.
* ``digits_m``: the *other* half, made the way Ganin & Lempitsky (2015) made MNIST-M: each digit,
  upsampled to 32x32, is blended with a random 32x32 patch of a colour photo,
  ``out = |PHOTO_SCALE * patch - digit|`` per channel. The photos are scikit-learn's two sample images
  (``load_sample_images``: china.jpg and flower.jpg). Unlike MNIST-M (scale 1) the photo is dimmed to
  half its brightness, so a stroke (>= 127.5) is always brighter than its background (<= 127.5): with
  scale 1, a bright patch turns the stroke darker than the background (38% of the digits), which no
  adaptation method recovers from ~670 unlabelled images (DANN classified 1% of those digits right), and
  the demo's gain stayed thin. See benchmarks/demo/results.md for the measurements.

Both are generated deterministically (fixed seeds), split 75/25 into train/test, and need no
download and no data root, so ``transferlab demo`` runs on a fresh machine.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

_SEED = 20150707  # Ganin & Lempitsky, ICML 2015
_TEST_FRACTION = 0.25
PHOTO_SCALE = 0.5
"""``digits_m`` blends each digit with its photo patch times this (see the module's docstring)."""


@functools.cache
def _halves() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(_SEED).permutation(len(labels))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    return (images[a], labels[a]), (images[b], labels[b])


def _split(x: np.ndarray, y: np.ndarray, part: str) -> dict[str, np.ndarray]:
    n_test = int(round(len(y) * _TEST_FRACTION))
    if part == "test":
        return {"x": x[:n_test], "y": y[:n_test]}
    return {"x": x[n_test:], "y": y[n_test:]}


@functools.cache
def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]


def blend_with_photos(digits: np.ndarray, size: int = 32, seed: int = _SEED, photo_scale: float = 1.0) -> np.ndarray:
    """MNIST-M construction: |photo_scale * photo patch - digit| per channel, for uint8 grey digits (N,h,w);
    ``photo_scale=1`` is Ganin & Lempitsky's recipe."""
    up = F.interpolate(torch.from_numpy(digits).float()[:, None], size=(size, size), mode="bilinear",
                       align_corners=False)[:, 0].clamp(0, 255).numpy()
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = np.empty((len(digits), size, size, 3), dtype=np.uint8)
    for i, digit in enumerate(up):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size)
        left = rng.integers(photo.shape[1] - size)
        patch = photo[top : top + size, left : left + size].astype(np.float32) * np.float32(photo_scale)
        out[i] = np.abs(patch - digit[:, :, None]).round().astype(np.uint8)
    return out


def embedded_digits(part: str) -> dict[str, np.ndarray]:
    (x, y), _ = _halves()
    return _split(x, y, part)


@functools.cache
def _digits_m() -> tuple[np.ndarray, np.ndarray]:
    _, (x, y) = _halves()
    return blend_with_photos(x, photo_scale=PHOTO_SCALE), y


def embedded_digits_m(part: str) -> dict[str, np.ndarray]:
    x, y = _digits_m()
    return _split(x, y, part)
