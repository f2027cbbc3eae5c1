"""Whole-step CUDA graphs: record one training step (forward, backward and every optimizer step) once,
then replay it each iteration with one launch.

Small models are bound by per-step overhead, not by the card: LeNet at batch 128+128 is about
2 GFLOP per step, yet an eager step launches a few hundred kernels from Python. ``torch.compile``'s
``reduce-overhead`` graphs the forward and backward of each compiled module but leaves the optimizer
steps, the schedules and the glue in Python. Here the whole ``Method.update`` goes into one graph,
as in PyTorch's "whole network capture" recipe (CUDA semantics notes, "CUDA Graphs"):

* **static inputs**: each step's batches are copied into buffers the graph reads (shapes must not
  change from step to step);
* **per-step numbers are device tensors** updated in place before each replay: every optimizer's
  learning rate (fused optimizers take a tensor ``lr``; Adam runs with ``capturable=True``) and every
  ``ctx.scalar`` value (the GRL's λ);
* **warm-up**: the first :data:`WARMUP_STEPS` steps of each phase run eagerly on a side stream
  (optimizer state, cuDNN/cuBLAS handles are created there), then the next step is captured;
* **phases**: Python in ``update`` runs only when the step is captured. A method whose ``update``
  takes another Python path from some step on (ADDA's stage 2) says so with
  :meth:`~transferlab.methods.base.Method.graph_phase`; the engine keeps one graph per phase.
  Anything else ``update`` decides in Python from ``ctx.step``/``ctx.progress`` or from a tensor's value
  is frozen at capture, so methods that do so set ``graph_capturable = False``.

On a machine without CUDA the trainer runs eagerly. For tests, ``emulate=True`` stands in for the
graph on any device: the "capture" keeps the capture-time step context and every "replay" calls
``update`` again with it on the static buffers, so a method that depends on a Python value frozen at
capture gives different numbers from an eager run, as it would on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

from ..data.streams import Batch
from ..errors import TransferlabError

WARMUP_STEPS = 3
"""Eager steps at the start of each phase before its step is captured."""


def _tensors(x: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(x, dict):
        return [(f"x[{k!r}]", v) for k, v in x.items()]
    return [("x", x)]


def copy_into(static: Batch, batch: Batch) -> None:
    """Copy ``batch`` into the graph's input buffers ``static``; shapes and dtypes must match."""
    pairs = list(zip(_tensors(static.x), _tensors(batch.x)))
    if static.y is not None:
        pairs.append((("y", static.y), ("y", batch.y)))
    for (name, dst), (_, src) in pairs:
        if src is None or dst.shape != src.shape or dst.dtype != src.dtype:
            got = "nothing" if src is None else f"{tuple(src.shape)} {src.dtype}"
            raise TransferlabError(
                f"train.cuda_graph replays one captured step, so every batch must look the same: batch {name} "
                f"was captured as {tuple(dst.shape)} {dst.dtype} but this step gives {got}. Pad inputs to a "
                f"fixed length (text: a fixed max_length) or set train.cuda_graph: false"
            )
        dst.copy_(src, non_blocking=True)


def clone_batch(batch: Batch) -> Batch:
    x = {k: v.clone() for k, v in batch.x.items()} if isinstance(batch.x, dict) else batch.x.clone()
    return Batch(x, None if batch.y is None else batch.y.clone())


class CapturedStep:
    """One phase's training step, captured as a CUDA graph (or emulated, see the module docstring).

    ``run(batches)`` is the step (``Method.update`` with its context) and returns the dict of detached
    losses to log; ``scalars`` are the ``ctx.scalar`` names it used, which the engine logs per replay.
    """

    def __init__(self, run: Callable[[list[Batch]], dict[str, torch.Tensor]], batches: list[Batch],
                 scalars: list[str], *, emulate: bool) -> None:
        self.static = [clone_batch(b) for b in batches]
        self.scalars = scalars
        self.emulate = emulate
        self._run = run
        self.graph = None
        self.outputs: dict[str, torch.Tensor] = {}
        if not emulate:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = run(self.static)

    def replay(self, batches: list[Batch]) -> dict[str, torch.Tensor]:
        for static, batch in zip(self.static, batches):
            copy_into(static, batch)
        if self.emulate:  # like a graph: the same output tensors every time, overwritten in place
            fresh = self._run(self.static)
            if not self.outputs:
                self.outputs = {k: v.clone() for k, v in fresh.items()}
            for key, value in fresh.items():
                self.outputs[key].copy_(value)
            return self.outputs
        self.graph.replay()
        return self.outputs


class StepGraphs:
    """The trainer's steps under ``train.cuda_graph``: per phase, :data:`WARMUP_STEPS` eager steps on a side
    stream, then one capture, then replays. ``run_update(batches, ctx)`` runs ``Method.update`` the way the
    trainer does (precision, autocast without a weight cache)."""

    def __init__(self, method, device: torch.device, run_update: Callable, *, emulate: bool = False) -> None:
        self.method, self.device, self.run_update, self.emulate = method, device, run_update, emulate
        self.captured: dict[Any, CapturedStep] = {}
        self.warm: dict[Any, int] = {}
        self.scalar_names: dict[Any, list[str]] = {}  # the ctx.scalar names each phase's update asks for
        self.side = torch.cuda.Stream(device) if device.type == "cuda" and not emulate else None

    def reset(self) -> None:
        """Forget the captured steps (after a checkpoint load replaced the optimizer state they point at)."""
        self.captured.clear()
        self.warm.clear()
        self.scalar_names.clear()

    def step(self, batches: list[Batch], ctx, scalars: dict[str, tuple[Any, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Run this step: eagerly while its phase warms up, else by replaying the phase's captured step.
        ``scalars`` are the run's ``ctx.scalar`` tensors (schedule, tensor), already filled for this step."""
        phase = self.method.graph_phase(ctx)
        captured = self.captured.get(phase)
        if captured is None and self.warm.get(phase, 0) < WARMUP_STEPS:
            self.warm[phase] = self.warm.get(phase, 0) + 1
            with side_stream(self.side):
                losses = self.run_update(batches, ctx)
            self.scalar_names[phase] = list(ctx.scalars)
            return losses
        if captured is None:
            try:
                captured = CapturedStep(lambda static: self.run_update(static, ctx), batches,
                                        self.scalar_names.get(phase, []), emulate=self.emulate)
            except TransferlabError:
                raise
            except RuntimeError as exc:
                raise TransferlabError(
                    f"capturing {self.method.hparams.name}'s step {ctx.step} as a CUDA graph failed: "
                    f"{str(exc).splitlines()[0]}. Its update must not read tensor values on the host (.item(), "
                    f"printing, data-dependent shapes); set train.cuda_graph: false"
                ) from None
            self.captured[phase] = captured
        ctx.scalars.update({name: float(scalars[name][0](ctx.progress)) for name in captured.scalars})
        return captured.replay(batches)


@contextmanager
def side_stream(stream: torch.cuda.Stream | None):
    """Run eager warm-up steps on ``stream`` (CUDA) ordered after, and before, the current stream's work."""
    if stream is None:
        yield
        return
    current = torch.cuda.current_stream(stream.device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


def capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()
