"""Optimizers and learning-rate schedules: what a method's :class:`~transferlab.methods.base.OptimizerRequest`
becomes on this machine.

A request names parameter groups (with lr scales) and per-optimizer overrides of the run's ``optim``
settings. The engine builds each as SGD/Adam/AdamW with one group per distinct lr scale, every group
remembering its ``initial_lr`` for annealing. On CUDA the fused single-kernel implementations are used
where available; under whole-step CUDA graphs they are required (Adam/AdamW ``capturable``) and the
engine then gives each group a tensor learning rate. How an optimizer steps belongs to the machine, not
to a checkpoint, so loaded optimizer state is brought back to its parameters' memory layout here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import TransferlabError
from ..methods.base import OptimizerRequest
from ..schedules import Constant, CosineDecay, InverseDecay, LinearDecay, Schedule, Warmup


def optimizer_config(base: OptimConfig, overrides: dict[str, Any]) -> OptimConfig:
    """The run's optimizer settings with a method's per-optimizer overrides, validated."""
    from pydantic import ValidationError

    from ..validation import format_validation_error
    from ..errors import ConfigError

    try:
        return OptimConfig(**{**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, OptimConfig, prefix="optimizer override")) from None


def build_optimizer(request: OptimizerRequest, base: OptimConfig, lr_scale_for: Callable[[nn.Parameter], float],
                    fused: bool = False, graph: bool = False) -> torch.optim.Optimizer:
    """The optimizer a method asked for. ``fused=True`` (the trainer passes it on CUDA) takes PyTorch's fused
    single-kernel implementation, falling back to the multi-tensor (foreach) one where it is unavailable.

    ``graph=True`` (whole-step CUDA graphs) needs the fused implementation, with Adam/AdamW ``capturable``
    (its step counts stay on the device); the engine then gives each group a tensor learning rate."""
    if graph:
        extra = {"fused": True} if (optimizer_config(base, request.overrides).name == "sgd") else \
            {"fused": True, "capturable": True}
        try:
            return _build_optimizer(request, base, lr_scale_for, extra)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise TransferlabError(f"train.cuda_graph needs PyTorch's fused optimizers, which refused here ({exc}); "
                                   f"set train.cuda_graph: false") from None
    if fused:
        try:
            return _build_optimizer(request, base, lr_scale_for, {"fused": True})
        except (RuntimeError, ValueError, TypeError):
            pass
    return _build_optimizer(request, base, lr_scale_for, {})


def _build_optimizer(request: OptimizerRequest, base: OptimConfig, lr_scale_for: Callable[[nn.Parameter], float],
                     extra: dict[str, Any]) -> torch.optim.Optimizer:
    cfg = optimizer_config(base, request.overrides)
    groups = []
    for params, scale in request.groups:
        by_scale: dict[float, list[nn.Parameter]] = {}
        for p in params:
            if p.requires_grad or hasattr(p, "unfreezes_at"):  # gradual unfreezing: trains later
                by_scale.setdefault(scale * lr_scale_for(p), []).append(p)
        groups += [{"params": ps, "lr": cfg.lr * s, "initial_lr": cfg.lr * s} for s, ps in by_scale.items()]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, **extra)
    optimizer_cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return optimizer_cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)


def lr_schedule(cfg: OptimConfig) -> Schedule:
    if cfg.lr_schedule == "inverse":
        schedule: Schedule = InverseDecay(cfg.lr_gamma, cfg.lr_power)
    elif cfg.lr_schedule == "cosine":
        schedule = CosineDecay()
    elif cfg.lr_schedule == "linear":
        schedule = LinearDecay()
    else:
        schedule = Constant(1.0)
    return Warmup(schedule, cfg.warmup) if cfg.warmup > 0 else schedule


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state (momentum, Adam moments) its parameter's memory layout. A checkpoint stores
    tensors contiguous, but a convnet's weights are channels_last; the fused kernels walk parameter, gradient
    and state as flat memory, so a state tensor laid out differently would be updated element-for-wrong-element."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
