"""Gradient reversal (Ganin & Lempitsky, ICML 2015).

R_λ(x) = x in the forward pass; dR_λ/dx = −λ I in the backward pass. Placed between a feature
extractor and a domain classifier, a single minimisation then trains the classifier to tell the
domains apart while pushing the features to make them indistinguishable.
"""

from __future__ import annotations

import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float | torch.Tensor) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.coeff, None


class _ReverseGradByTensor(torch.autograd.Function):
    """The same with λ a 0-dim tensor (saved for backward, so torch.compile traces it as a graph input)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (coeff,) = ctx.saved_tensors
        return grad_output.neg() * coeff, None


def reverse_gradient(x: torch.Tensor, coeff: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the incoming gradient by ``-coeff`` backward. ``coeff`` is a number, or
    a 0-dim tensor on ``x``'s device: what the engine passes under torch.compile and CUDA graphs, where the
    value changes in place from step to step without a recompile or a new capture."""
    if isinstance(coeff, torch.Tensor):
        return _ReverseGradByTensor.apply(x, coeff.detach())
    return _ReverseGrad.apply(x, float(coeff))


class GradientReversal(nn.Module):
    """Module form of :func:`reverse_gradient`; the coefficient λ is passed at call time, taken from a
    :class:`~transferlab.schedules.Schedule` by the method, so there is no hidden step counter."""

    def forward(self, x: torch.Tensor, coeff: float | torch.Tensor = 1.0) -> torch.Tensor:
        return reverse_gradient(x, coeff)
