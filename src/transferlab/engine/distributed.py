"""What the engine does across processes: gradient averaging, broadcasts from rank 0, sums and an
all-gather that carries gradients.

Under ``torchrun``/``accelerate launch``, Accelerate's :class:`~accelerate.PartialState` (made by the
trainer) sets up the process group and device. Each process draws its own source/target batches; after
each ``backward`` the gradients of the parameters about to be stepped are averaged across processes in
one flat all-reduce (DDP's arithmetic, :func:`average_gradients`). We do this explicitly rather than wrap
the method in ``DistributedDataParallel`` because multi-step methods (MCD's three steps, ADDA's
alternating discriminator/encoder updates) run several backward passes over different parameter subsets
per iteration, which DDP's forward-triggered reducer does not support. BatchNorm buffers are broadcast
from rank 0 before every evaluation and checkpoint (:func:`broadcast_from_rank0`), so all ranks hold
identical models.

Every function here assumes a process group with more than one process; the trainer skips them when
it runs alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def average_gradients(params: Iterable[nn.Parameter], world: int) -> None:
    """Replace the gradient of every parameter in ``params`` that has one by its mean over the ``world``
    processes, in one flat all-reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= world
        for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)


def broadcast_from_rank0(module: nn.Module, parameters: bool = False) -> None:
    """Rank 0's buffers (BatchNorm statistics) — and, with ``parameters``, its parameters — to every rank."""
    tensors = list(module.buffers()) + (list(module.parameters()) if parameters else [])
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def sum_over_ranks(*tensors: torch.Tensor) -> None:
    """Sum each tensor over every process, in place."""
    for tensor in tensors:
        dist.all_reduce(tensor)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each process the gradient of its own slice, summed
    over every process's loss (an all-reduce then a slice: works on gloo and NCCL alike). With the
    engine's gradient averaging this gives exactly the gradient of the mean of the per-process losses."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order, with gradients (:class:`_GatherWithGrad`)."""
    return _GatherWithGrad.apply(tensor)


def gather_rows(rows: torch.Tensor, world: int) -> torch.Tensor:
    """Every process's ``rows`` (R_i, C) concatenated in rank order, on every process. The processes' evaluation
    shards differ in length by up to one sample, so the rows are padded to the longest before the all-gather
    (which needs one shape) and cut back after it. Evaluation only: no gradients."""
    n = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(size) for size in sizes]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)])
