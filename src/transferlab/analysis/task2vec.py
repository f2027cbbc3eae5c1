"""Task2Vec: embed a task as the diagonal Fisher information of a fixed probe network on its data.

Achille, Lam, Tewari, Ravichandran, Maji, Fowlkes, Soatto & Perona, "Task2Vec: Task Embedding for
Meta-Learning", ICCV 2019. Tasks whose embeddings are close tend to transfer well to each other.
This module computes the plain diagonal Fisher (sec. 2) by exact per-sample gradients; the paper's
final embedding uses a "robust" Fisher estimated by a variational perturbation, which is not done
here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import DataError, TransferlabError


def probe_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300) -> nn.Linear:
    """A linear classifier fitted on fixed ``features`` (full-batch Adam, seeded): the head that turns a
    feature extractor into the probe network of one task, whose Fisher embeds the task."""
    torch.manual_seed(0)
    head = nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(head(features), labels).backward()
        optimizer.step()
    return head


def fisher_diagonal(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None = None, *,
                    parameters: Iterable[str] | None = None, batch_size: int = 64, sampled: bool = True,
                    exact: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher information of ``model`` (which maps inputs to class logits) on
    ``inputs`` (Achille et al., ICCV 2019, eq. 1):

        F_w = E_x E_{y ~ p_w(y|x)} [ (∂ log p_w(y|x) / ∂w)² ],

    averaged over the n inputs, from exact per-sample gradients (``torch.func.vmap`` of ``grad``;
    squares are taken per sample, never of a batch-mean gradient). The expectation over y is:

    * ``exact=True``: computed exactly, Σ_y p_w(y|x) (∂ log p_w(y|x)/∂w)² (one pass per class);
    * ``sampled=True`` (default): one y per input drawn from p_w(y|x) with ``generator`` (the true
      Fisher, unbiased but noisy);
    * ``sampled=False``: the given ``labels`` (the "empirical Fisher", a different quantity).

    ``parameters``: names (as in ``named_parameters``) to include; default all that require
    grad. ``generator`` must live on the inputs' device. The model is evaluated in eval mode
    (BatchNorm statistics, no dropout) and its mode is restored. Returns ``{name: tensor shaped
    like the parameter}``.
    """
    if inputs.ndim < 1 or len(inputs) == 0:
        raise DataError("inputs is empty; pass at least one sample")
    if not torch.isfinite(inputs).all():
        raise DataError("inputs contain NaN or Inf; drop or fix those samples")
    if batch_size < 1:
        raise TransferlabError(f"batch_size must be >= 1, got {batch_size}")
    if not exact and not sampled:
        if labels is None:
            raise TransferlabError("sampled=False (empirical Fisher) needs labels; pass labels or use sampled=True")
        if labels.shape != (len(inputs),):
            raise DataError(f"labels has shape {tuple(labels.shape)} but there are {len(inputs)} inputs; "
                            "pass one class index per input")
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if parameters is None else list(parameters)
    unknown = [n for n in names if n not in named]
    if unknown or not names:
        raise TransferlabError(f"unknown or no parameter names {unknown}; choose from {list(named)}")
    params = {n: named[n].detach() for n in names}
    # The other parameters enter detached too: left to the module, they would require grad and each
    # per-sample call would build (and keep) an autograd graph through them (GBs for a LeNet).
    fixed = {n: p.detach() for n, p in named.items() if n not in params}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def log_prob(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, ({**fixed, **p}, buffers), (x.unsqueeze(0),))
        return F.log_softmax(logits, dim=1).gather(1, y.reshape(1, 1)).squeeze()

    per_sample = vmap(grad(log_prob), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size]
            with torch.no_grad():
                logits = model(x)
            if logits.ndim != 2:
                raise DataError(f"the model returned shape {tuple(logits.shape)}; it must return logits "
                                "(batch, classes)")
            probs = F.softmax(logits, dim=1)
            if exact:
                targets = [(torch.full((len(x),), k, dtype=torch.long, device=x.device), probs[:, k])
                           for k in range(probs.shape[1])]
            elif sampled:
                y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                targets = [(y, torch.ones(len(x), dtype=probs.dtype, device=x.device))]
            else:
                y = labels[start:start + batch_size].to(x.device).long()
                if y.min() < 0 or y.max() >= probs.shape[1]:
                    raise DataError(f"labels must be class indices in [0, {probs.shape[1]}), the model's "
                                    f"output size; got values {int(y.min())}..{int(y.max())}")
                targets = [(y, torch.ones(len(x), dtype=probs.dtype, device=x.device))]
            for y, weight in targets:
                grads = per_sample(params, x, y)
                for n, g in grads.items():
                    w = weight.reshape(-1, *([1] * (g.ndim - 1))).to(g.dtype)
                    total[n] += (w * g.square()).sum(dim=0)
    finally:
        model.train(was_training)
    return {n: t / len(inputs) for n, t in total.items()}


def task_embedding(fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """The task embedding: all Fisher diagonals flattened and concatenated, in sorted-name order (so
    dictionaries with the same keys always line up)."""
    if not fisher:
        raise TransferlabError("fisher is empty; pass the output of fisher_diagonal")
    return torch.cat([fisher[n].detach().flatten() for n in sorted(fisher)])


def task_distance(e1: torch.Tensor, e2: torch.Tensor) -> float:
    """Symmetric Task2Vec distance (Achille et al., ICCV 2019, sec. 3.1), a cosine distance after
    elementwise normalisation by the sum:

        d(F_a, F_b) = 1 − cos( F_a / (F_a + F_b), F_b / (F_a + F_b) ).

    Entries where F_a + F_b = 0 are left out. In [0, 1] for non-negative embeddings; 0 when one
    embedding is a positive multiple of the other.
    """
    a, b = torch.as_tensor(e1).detach().double().flatten(), torch.as_tensor(e2).detach().double().flatten()
    if a.shape != b.shape:
        raise DataError(f"embeddings have {a.numel()} and {b.numel()} entries; compute both with the same "
                        "probe network and parameters")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()) or (a < 0).any() or (b < 0).any():
        raise DataError("embeddings must be finite and non-negative (Fisher diagonals)")
    keep = (a + b) > 0
    if not keep.any():
        raise DataError("both embeddings are all zero; the distance is undefined")
    a, b = a[keep] / (a[keep] + b[keep]), b[keep] / (a[keep] + b[keep])
    return float(1.0 - F.cosine_similarity(a, b, dim=0))


def distance_matrix(embeddings: dict[str, torch.Tensor]) -> tuple[list[str], np.ndarray]:
    """Pairwise :func:`task_distance` between named embeddings: ``(names, D)`` with D[i, j] the
    distance between ``names[i]`` and ``names[j]`` (symmetric, zero diagonal)."""
    names = list(embeddings)
    d = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            d[i, j] = d[j, i] = task_distance(embeddings[names[i]], embeddings[names[j]])
    return names, d
