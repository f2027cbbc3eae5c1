"""Loss-landscape probes: is the fine-tuned solution in the same flat basin as the pre-trained one?

* Linear interpolation between two sets of weights: Goodfellow, Vinyals & Saxe, "Qualitatively
  characterizing neural network optimization problems", ICLR 2015 (used for transfer by Neyshabur,
  Sedghi & Zhang, "What is being transferred in transfer learning?", NeurIPS 2020).
* Filter-normalised random directions and 2-D slices: Li, Xu, Taylor, Studer & Goldstein,
  "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018.

Every function takes ``loss_fn(model) -> float | scalar tensor`` (evaluated under ``torch.no_grad``)
and restores the model's full state (parameters and buffers) before returning, also on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, TransferlabError

LossFn = Callable[[nn.Module], "float | torch.Tensor"]


def _evaluate(model: nn.Module, loss_fn: LossFn) -> float:
    with torch.no_grad():
        return float(loss_fn(model))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def interpolate(model: nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                loss_fn: LossFn, alphas: Iterable[float]) -> list[float]:
    """Loss along the straight line between two weight settings (Goodfellow et al., ICLR 2015):

        θ(α) = (1 − α) θ_a + α θ_b,   returns [loss_fn(model at θ(α)) for α in alphas].

    Parameters and floating-point buffers (e.g. BatchNorm running statistics) are interpolated;
    integer buffers (``num_batches_tracked``) are taken from the nearer endpoint. α = 0 and α = 1
    reproduce the endpoints exactly; α outside [0, 1] extrapolates. A bump in the middle means the
    two solutions are in different basins.
    """
    original = _snapshot(model)
    for name, state in (("state_a", state_a), ("state_b", state_b)):
        missing = [k for k in original if k not in state]
        wrong = [k for k in original if k in state and tuple(state[k].shape) != tuple(original[k].shape)]
        if missing or wrong:
            raise CheckpointError(f"{name} does not fit the model: missing {missing[:3]}, wrong shape {wrong[:3]}; "
                                  "pass state dicts of this architecture (model.state_dict())")
    losses = []
    try:
        for alpha in alphas:
            alpha = float(alpha)
            mixed = {}
            for k, ref in original.items():
                a = state_a[k].detach().to(ref.device, ref.dtype)
                b = state_b[k].detach().to(ref.device, ref.dtype)
                mixed[k] = (1.0 - alpha) * a + alpha * b if ref.is_floating_point() else (a if alpha < 0.5 else b)
            model.load_state_dict(mixed)
            losses.append(_evaluate(model, loss_fn))
    finally:
        model.load_state_dict(original)
    return losses


def filter_normalized_direction(model: nn.Module, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A random direction with filter-wise normalisation (Li et al., NeurIPS 2018, sec. 4):

        d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖,   d ~ N(0, I),

    for every filter j (slice along the first dimension: an output channel of a convolution, a
    row of a linear layer) of every parameter i with two or more dimensions. One-dimensional
    parameters (biases, BatchNorm scale and shift) get a zero direction (the paper's
    ``ignore='biasbn'``). Returns ``{name: tensor shaped like the parameter}``.
    """
    directions = {}
    for name, p in model.named_parameters():
        if p.ndim <= 1:
            directions[name] = torch.zeros_like(p, requires_grad=False)
            continue
        device = generator.device if generator is not None else p.device
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=device).to(p.device)
        view = (-1,) + (1,) * (p.ndim - 1)
        scale = p.detach().flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(torch.finfo(p.dtype).tiny)
        directions[name] = d * scale.reshape(view)
    return directions


def _set(model: nn.Module, base: dict[str, torch.Tensor], steps: list[tuple[float, dict[str, torch.Tensor]]]) -> None:
    """Parameters ← base + Σ c · d for (c, d) in ``steps``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            value = base[name].clone()
            for coeff, direction in steps:
                value += coeff * direction[name]
            p.copy_(value)


def slice_2d(model: nn.Module, loss_fn: LossFn, steps: int = 21, span: float = 1.0, seed: int = 0) -> dict:
    """Loss on a 2-D random slice through the current weights (Li et al., NeurIPS 2018, sec. 4):

        f(α, β) = L(θ + α δ + β η),   α, β ∈ linspace(−span, span, steps),

    with δ, η two :func:`filter_normalized_direction` draws (in that order) from a
    ``torch.Generator`` seeded with ``seed``. Returns ``alphas``, ``betas`` (arrays of ``steps``),
    ``losses`` (array [i, j] at (alphas[i], betas[j])) and ``directions`` (δ, η).
    """
    if steps < 2 or span <= 0:
        raise TransferlabError(f"need steps >= 2 and span > 0, got steps={steps}, span={span}")
    generator = torch.Generator().manual_seed(seed)
    delta = filter_normalized_direction(model, generator)
    eta = filter_normalized_direction(model, generator)
    grid = np.linspace(-span, span, steps)
    original = _snapshot(model)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = np.empty((steps, steps))
    try:
        for i, alpha in enumerate(grid):
            for j, beta in enumerate(grid):
                _set(model, base, [(float(alpha), delta), (float(beta), eta)])
                losses[i, j] = _evaluate(model, loss_fn)
    finally:
        model.load_state_dict(original)
    return {"alphas": grid, "betas": grid.copy(), "losses": losses, "directions": (delta, eta)}


def sharpness(model: nn.Module, loss_fn: LossFn, radius: float = 0.1, n_directions: int = 8, seed: int = 0,
              reduction: str = "mean") -> float:
    """Sharpness as the loss increase at distance ``radius`` along random filter-normalised
    directions d (Li et al., NeurIPS 2018), symmetrised over ±d:

        s(d) = ½ [L(θ + r d) + L(θ − r d)] − L(θ)  ≈  ½ r² dᵀ H d,

    exactly so for a quadratic loss: the ± average cancels the first-order (gradient) term, so
    s measures curvature even away from a minimum. Because d has the norm of the weights filter
    by filter, ``radius`` is relative to the weight scale (0.1 = 10 % of each filter's norm), which
    makes the number comparable across networks with different weight scales. The directions are
    ``n_directions`` consecutive :func:`filter_normalized_direction` draws from a generator
    seeded with ``seed``. ``reduction``: ``"mean"`` (default) or ``"max"`` over directions.
    Larger = sharper minimum.
    """
    if reduction not in ("mean", "max"):
        raise TransferlabError(f"reduction must be 'mean' or 'max', got {reduction!r}")
    if n_directions < 1 or radius <= 0:
        raise TransferlabError(f"need n_directions >= 1 and radius > 0, got {n_directions}, {radius}")
    generator = torch.Generator().manual_seed(seed)
    original = _snapshot(model)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    increases = []
    try:
        center = _evaluate(model, loss_fn)
        for _ in range(n_directions):
            d = filter_normalized_direction(model, generator)
            _set(model, base, [(radius, d)])
            plus = _evaluate(model, loss_fn)
            _set(model, base, [(-radius, d)])
            minus = _evaluate(model, loss_fn)
            _set(model, base, [])
            increases.append(0.5 * (plus + minus) - center)
    finally:
        model.load_state_dict(original)
    return float(np.mean(increases) if reduction == "mean" else np.max(increases))
