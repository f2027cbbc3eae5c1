"""The neural-tangent-kernel view of transfer: "pre-training finds a parameter point where the network's
tangent kernel is already useful for the target task".

For a network f(x; θ) the empirical neural tangent kernel (NTK) at θ is

    Θ(x, x') = ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩

(Jacot, Gabriel & Hongler, "Neural Tangent Kernel: Convergence and Generalization in Neural Networks",
NeurIPS 2018). Gradient flow on the squared loss of the *linearised* network f₀ + J(θ − θ₀) (the lazy
regime; Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent",
NeurIPS 2019) converges to kernel regression with Θ, so Θ at a pretrained point says how well fine-tuning
could do if the features did not move; how far Θ moves during real fine-tuning says whether it stayed lazy.

* :func:`jacobian_features`: per-sample parameter Jacobians Φ (optionally randomly projected), Θ = ΦΦᵀ.
* :func:`empirical_ntk`: Θ between two sets of inputs, batched.
* :func:`kernel_regression`: kernel ridge regression to one-hot targets, prediction = argmax.
* :func:`kernel_alignment`: centred kernel–target alignment with the label kernel YYᵀ (Cortes, Mohri &
  Rostamizadeh, JMLR 2012).
* :func:`kernel_distance`: relative Frobenius change and 1 − cosine similarity of two kernels (Fort et al.,
  NeurIPS 2020).

Pure functions: nothing here trains a network, loads a run or writes a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..errors import DataError, TransferlabError
from .scores import ArrayLike, _array, _labels

OUTPUTS = ("sum", "trace")
PROJECTIONS = ("sketch", "gaussian")
_GAUSSIAN_LIMIT = 64_000_000  # entries of a dense projection matrix (256 MB in float32)


def _view(output: str | int | torch.Tensor):
    """The scalar (or, for ``"trace"``, vector) function of the network's flattened output that is differentiated."""
    if isinstance(output, str):
        if output not in OUTPUTS:
            raise TransferlabError(f"unknown output view {output!r}; use 'sum', 'trace', a class index or a "
                                   f"projection vector")
        return (lambda out: out.sum()) if output == "sum" else (lambda out: out)
    if isinstance(output, torch.Tensor):
        v = output.detach().flatten()
        return lambda out: (out * v.to(out)).sum()
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        index = int(output)
        return lambda out: out[index]
    raise TransferlabError(f"output must be 'sum', 'trace', a class index or a tensor, got {type(output).__name__}")


class _Projection:
    """A seeded random linear map R from the flattened parameters (P entries) to ``dim`` coordinates with
    E[R Rᵀ] = I, so ⟨J R, J' R⟩ is an unbiased estimate of ⟨J, J'⟩ (Johnson–Lindenstrauss).

    ``"sketch"``: CountSketch (Charikar, Chen & Farach-Colton 2002; as a sparse JL transform, Clarkson &
    Woodruff 2013): each parameter goes to one random coordinate with a random sign. O(P) memory and time,
    and for inner products its variance, (‖a‖²‖b‖² + ⟨a, b⟩² − 2Σ aᵢ²bᵢ²)/dim, never exceeds the dense
    Gaussian map's (‖a‖²‖b‖² + ⟨a, b⟩²)/dim.
    ``"gaussian"``: dense R with i.i.d. N(0, 1/dim) entries (P × dim floats in memory)."""

    def __init__(self, sizes: list[int], dim: int, kind: str, seed: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        if kind not in PROJECTIONS:
            raise TransferlabError(f"unknown projection {kind!r}; use one of {', '.join(PROJECTIONS)}")
        if dim < 1:
            raise TransferlabError(f"projection dimension must be >= 1, got {dim}")
        if kind == "gaussian" and sum(sizes) * dim > _GAUSSIAN_LIMIT:
            raise TransferlabError(f"a dense Gaussian projection of {sum(sizes)} parameters to {dim} dimensions needs "
                                   f"{sum(sizes) * dim * 4 / 2**30:.1f} GiB; use projection='sketch' (CountSketch, "
                                   f"O(parameters) memory) or fewer parameters")
        generator = torch.Generator().manual_seed(seed)
        self.dim, self.kind = dim, kind
        self.parts = []
        for size in sizes:  # drawn on the CPU in parameter order: the same map for the same seed on any device
            if kind == "sketch":
                bucket = torch.randint(0, dim, (size,), generator=generator)
                sign = torch.randint(0, 2, (size,), generator=generator).to(dtype) * 2 - 1
                self.parts.append((bucket.to(device), sign.to(device)))
            else:
                matrix = torch.randn(size, dim, generator=generator, dtype=torch.float64) / dim ** 0.5
                self.parts.append(matrix.to(device=device, dtype=dtype))

    def __call__(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """``blocks[i]``: (batch, outputs, size_i) Jacobian of parameter i; returns (batch, outputs, dim)."""
        b, c = blocks[0].shape[:2]
        out = torch.zeros(b, c, self.dim, dtype=blocks[0].dtype, device=blocks[0].device)
        for block, part in zip(blocks, self.parts):
            if self.kind == "sketch":
                bucket, sign = part
                out.index_add_(2, bucket, block * sign)
            else:
                out += block @ part
        return out


def _parameters(model: nn.Module, parameters: Iterable[str] | None) -> list[str]:
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if parameters is None else list(parameters)
    unknown = [n for n in names if n not in named]
    if unknown or not names:
        raise TransferlabError(f"unknown or no parameter names {unknown}; choose from {list(named)}")
    return names


def jacobian_features(model: nn.Module, inputs: torch.Tensor, *, parameters: Iterable[str] | None = None,
                      output: str | int | torch.Tensor = "sum", projection: int | None = None,
                      projection_kind: str = "sketch", seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Per-sample parameter Jacobians of a scalar view of ``model``, flattened: rows Φ(x) with
    Θ(x, x') = Φ(x)·Φ(x') the empirical NTK (Jacot et al., NeurIPS 2018).

    Computed exactly per sample with ``torch.func`` (``vmap`` of ``jacrev`` through ``functional_call``), in
    batches of ``batch_size``; the model runs in eval mode (BatchNorm statistics, no dropout: the function
    that is deployed) and its mode is restored.

    ``output``: which function of the network's output is differentiated, so that the kernel is n × n:

    * ``"sum"`` (default): f(x) = Σ_c f_c(x), the sum of the logits (the "pseudo-NTK" of Mohamadi, Bae &
      Sutherland, ICML 2023, up to the factor 1/C). For one output it is that output; for f(x) = wᵀx it
      gives Θ = XXᵀ. At infinite width the NTK of C outputs is Θ ⊗ I_C (Jacot et al.), one kernel shared by
      all classes, which this view estimates from one backward pass per sample;
    * an ``int`` c: f_c(x), one class's kernel; a tensor v (C entries): the projection vᵀf(x);
    * ``"trace"``: the trace of the C × C block of the full multi-output NTK, Σ_c ⟨∂f_c(x)/∂θ, ∂f_c(x')/∂θ⟩
      (C backward passes per sample; Φ has C·dim columns).

    ``parameters``: names as in ``named_parameters`` (default: all that require grad); the others are held
    fixed. ``projection``: None for the exact Jacobian (n × P floats: a LeNet has ~5·10⁵ parameters, so
    10³ samples need 2 GB), or a dimension m for a seeded random projection (``projection_kind``
    ``"sketch"``, CountSketch, or ``"gaussian"``; see :class:`_Projection`) with E[ΦΦᵀ] = Θ and a relative
    error of roughly √(2/m) per entry; the same ``seed``, parameters and model shape give the same map, so
    kernels of two checkpoints of one architecture are comparable. Returns (n, D) float64 on the CPU.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1 or len(inputs) == 0:
        raise DataError("inputs must be a non-empty tensor (samples first)")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise DataError("inputs contain NaN or Inf; drop or fix those samples")
    if batch_size < 1:
        raise TransferlabError(f"batch_size must be >= 1, got {batch_size}")
    names = _parameters(model, parameters)
    view = _view(output)
    named = dict(model.named_parameters())
    params = {n: named[n].detach() for n in names}
    # everything else enters detached: left to the module, each per-sample call would build an autograd graph
    fixed = {n: p.detach() for n, p in named.items() if n not in params}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**fixed, **p}, buffers), (x.unsqueeze(0),))
        return view(out.reshape(-1))

    per_sample = vmap(jacrev(f), in_dims=(None, 0))
    first = next(iter(params.values()))
    project = (_Projection([params[n].numel() for n in names], projection, projection_kind, seed, first.device,
                           first.dtype) if projection is not None else None)
    rows = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size].to(first.device)
            jac = per_sample(params, x)
            b = len(x)
            blocks = [jac[n].reshape(b, -1, params[n].numel()) for n in names]  # (batch, outputs, size)
            phi = project(blocks) if project is not None else torch.cat(blocks, dim=2)
            rows.append(phi.reshape(b, -1).detach().to("cpu", torch.float64))
    finally:
        model.train(was_training)
    features = torch.cat(rows)
    if not torch.isfinite(features).all():
        raise DataError("the Jacobian contains NaN or Inf (a diverged model or inputs outside its range)")
    return features


def empirical_ntk(model: nn.Module, inputs: torch.Tensor, inputs2: torch.Tensor | None = None,
                  **options: Any) -> torch.Tensor:
    """The empirical NTK Θ(X, X') = Φ(X) Φ(X')ᵀ (n × n', float64) of ``model`` on ``inputs`` and ``inputs2``
    (default: ``inputs`` itself, a symmetric positive semi-definite matrix). ``options`` are those of
    :func:`jacobian_features` (``parameters``, ``output``, ``projection``, ``projection_kind``, ``seed``,
    ``batch_size``); both sides use the same projection."""
    phi = jacobian_features(model, inputs, **options)
    phi2 = phi if inputs2 is None else jacobian_features(model, inputs2, **options)
    return phi @ phi2.T


def _kernel(k: ArrayLike, name: str, square: bool = True) -> np.ndarray:
    k = np.asarray(_array(k), dtype=np.float64)
    if k.ndim != 2 or (square and k.shape[0] != k.shape[1]):
        raise DataError(f"{name} must be a {'square ' if square else ''}matrix, got shape {tuple(k.shape)}")
    if k.size == 0:
        raise DataError(f"{name} is empty")
    if not np.isfinite(k).all():
        raise DataError(f"{name} contains NaN or Inf")
    return k


def kernel_regression(k_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike, ridge: float = 1e-6, *,
                      return_scores: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Kernel ridge regression to one-hot targets: scores = K_test,train (K_train + λI)⁻¹ Y, prediction =
    argmax over classes (the label values of ``y_train``, any integers).

    With Θ the NTK this is the limit of gradient flow on the squared loss of the linearised network from a
    zero output (Jacot et al. 2018; Lee et al. 2019; λ → 0 is the ridgeless interpolant). ``ridge`` λ is
    absolute (scale it to the kernel, e.g. λ = 10⁻³ · mean diag K_train). With the linear kernel XXᵀ it
    equals ridge regression on X without intercept (scikit-learn ``Ridge(alpha=λ, fit_intercept=False)``).
    Subtracting a constant from every target (centred one-hot) changes no argmax. Solved in float64 by a
    Cholesky factorisation. Returns the predicted labels, and with ``return_scores`` also the (n_test, C)
    scores.
    """
    from scipy import linalg

    k = _kernel(k_train, "k_train")
    kt = _kernel(k_test_train, "k_test_train", square=False)
    if kt.shape[1] != k.shape[0]:
        raise DataError(f"k_test_train has {kt.shape[1]} columns but k_train is {k.shape[0]} × {k.shape[0]}; "
                        "columns must be the training samples in the same order")
    if ridge < 0:
        raise TransferlabError(f"ridge must be >= 0, got {ridge}")
    y_raw = _array(y_train)
    codes = _labels(y_raw, len(k), "y_train", min_classes=1)
    classes = np.unique(y_raw)
    targets = np.eye(len(classes))[codes]
    try:
        alpha = linalg.solve(k + ridge * np.eye(len(k)), targets, assume_a="pos")
    except linalg.LinAlgError:
        raise DataError("k_train + ridge·I is not positive definite (a rank-deficient kernel needs ridge > 0); "
                        "increase ridge") from None
    scores = kt @ alpha
    predictions = classes[scores.argmax(axis=1)]
    return (predictions, scores) if return_scores else predictions


def _centre(k: np.ndarray) -> np.ndarray:
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def kernel_alignment(k: ArrayLike, labels: ArrayLike) -> float:
    """Centred kernel–target alignment (Cortes, Mohri & Rostamizadeh, "Algorithms for Learning Kernels Based
    on Centered Alignment", JMLR 2012, def. 3):

        ρ(K, L) = ⟨K_c, L_c⟩_F / (‖K_c‖_F ‖L_c‖_F),   K_c = HKH, H = I − 11ᵀ/n,

    with the label kernel L = YYᵀ (Y one-hot: L_ij = 1 when samples i and j share a class). In [−1, 1] for
    positive semi-definite K (in [0, 1]); 1 when K is a positive multiple of L (after centring). Higher =
    the kernel's similarity structure follows the classes, which bounds the error of a kernel-based
    classifier (Cortes et al., thm. 13). Unlike uncentred alignment it is not inflated by a large
    constant component of K.
    """
    k = _kernel(k, "k")
    codes = _labels(labels, len(k), "labels")
    y = np.eye(codes.max() + 1)[codes]
    kc, lc = _centre(k), _centre(y @ y.T)
    norm = np.linalg.norm(kc) * np.linalg.norm(lc)
    if norm == 0:
        raise DataError("the centred kernel is zero (K is constant over the samples), so alignment is undefined")
    return float(np.sum(kc * lc) / norm)


def kernel_distance(k0: ArrayLike, k1: ArrayLike) -> dict[str, float]:
    """How far a kernel moved from ``k0`` (e.g. the NTK before fine-tuning) to ``k1`` (after), on the same
    samples in the same order:

    * ``relative_change`` = ‖K₁ − K₀‖_F / ‖K₀‖_F (0: unchanged; sensitive to scale);
    * ``cosine_distance`` = 1 − ⟨K₀, K₁⟩_F / (‖K₀‖_F ‖K₁‖_F), the "kernel distance" of Fort et al., "Deep
      learning versus kernel learning: an empirical study of loss landscape geometry and the time evolution
      of the Neural Tangent Kernel", NeurIPS 2020 (0: same up to scale; invariant to rescaling either).

    In the lazy regime both stay near 0 while the loss falls; a large change means the features were
    learned, not reused.
    """
    a, b = _kernel(k0, "k0", square=False), _kernel(k1, "k1", square=False)
    if a.shape != b.shape:
        raise DataError(f"k0 has shape {a.shape} but k1 has {b.shape}; compute both on the same samples")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise DataError(f"{'k0' if na == 0 else 'k1'} is zero; the distance is undefined")
    return {"relative_change": float(np.linalg.norm(b - a) / na),
            "cosine_distance": float(1.0 - np.sum(a * b) / (na * nb))}
