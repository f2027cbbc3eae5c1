"""What a checkpoint holds of a training run, and how a run is put back from one.

:mod:`.checkpoint` writes and verifies the files; this module decides their contents. A run's state is
the model's ``state_dict`` (``model.safetensors``), every named optimizer's state (tensors in
``optimizers.safetensors``, hyper-parameters in ``state.json``), the RNG (``rng.safetensors``) and each
data stream's position, plus the step, the world size and the seconds trained so far. Restoring it on
one process makes the resumed run's parameters and metrics equal an uninterrupted run's exactly (on CPU
with ``train.deterministic``): the optimizer state gets its parameters' memory layout back, and how the
optimizer steps (fused, foreach, capturable) stays this machine's choice, not the file's. Ranks other than
0 re-seed their dropout generator from the step instead of restoring an RNG state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import flatten_optimizer, load_tensors, unflatten_optimizer
from .optim import _match_param_layout


def seed_process(seed: int, rank: int, step: int = 0) -> None:
    """Seed this process's torch generator for ``rank``: at a fresh start (``step=0``), or when a rank other
    than 0 resumes at ``step``."""
    value = seed * 7919 + rank * 104729 + step
    torch.manual_seed(value)
    np.random.seed(value % 2**32)  # NumPy's global generator: Hugging Face's wav2vec2 draws SpecAugment masks from it


def pack_training_state(method: nn.Module, optimizers: dict[str, torch.optim.Optimizer], streams: dict[str, Any],
                        device: torch.device, *, total_steps: int, world: int,
                        train_seconds: float | None) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """The tensor files and the JSON state of a checkpoint (the arguments of :meth:`.CheckpointManager.save`
    after the step)."""
    optim_tensors, optim_meta = {}, {}
    for name, optimizer in optimizers.items():
        tensors, meta = flatten_optimizer(name, optimizer)
        optim_tensors.update(tensors)
        optim_meta[name] = meta
    rng = {"cpu": torch.get_rng_state()}
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    rng["numpy"] = torch.from_numpy(keys.astype(np.int64))
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    files = {"model.safetensors": method.state_dict(), "optimizers.safetensors": optim_tensors,
             "rng.safetensors": rng}
    state = {"total_steps": total_steps, "optimizers": optim_meta, "world_size": world,
             "train_seconds": train_seconds, "numpy_rng": [kind, int(position), int(has_gauss), float(gauss)],
             "streams": {name: stream.state_dict() for name, stream in streams.items()}}
    return files, state


def restore_training_state(path: Path, state: dict[str, Any], method: nn.Module,
                           optimizers: dict[str, torch.optim.Optimizer], streams: dict[str, Any],
                           device: torch.device, *, rank: int, seed: int) -> None:
    """Load the checkpoint folder ``path`` (with its verified ``state.json`` contents ``state``) into the
    run's model, optimizers, streams and RNG."""
    method.load_state_dict(load_tensors(path / "model.safetensors"))
    optim_tensors = load_tensors(path / "optimizers.safetensors")
    for name, optimizer in optimizers.items():
        saved = unflatten_optimizer(name, optim_tensors, state["optimizers"][name])
        for group, current in zip(saved["param_groups"], optimizer.param_groups):
            for key in ("fused", "foreach", "capturable"):  # how to step is this machine's choice, not the file's
                if key in current:
                    group[key] = current[key]
        optimizer.load_state_dict(saved)
        _match_param_layout(optimizer)
    for name, stream in streams.items():
        stream.load_state_dict(state["streams"][name])
    rng = load_tensors(path / "rng.safetensors")
    if rank == 0:
        torch.set_rng_state(rng["cpu"])
        if "numpy" in rng and "numpy_rng" in state:  # checkpoints before 2026-12-03 did not keep it
            kind, position, has_gauss, gauss = state["numpy_rng"]
            np.random.set_state((kind, rng["numpy"].numpy().astype(np.uint32), position, has_gauss, gauss))
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
    else:  # per-rank dropout streams are re-seeded deterministically from the step
        seed_process(seed, rank, state["step"])
