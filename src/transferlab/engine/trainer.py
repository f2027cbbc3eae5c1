"""The one training loop. It owns devices, precision, distribution, learning-rate annealing,
evaluation, checkpoints, logging and seeds; methods only say what a step is.

Distribution: under ``torchrun``/``accelerate launch``, Accelerate's :class:`~accelerate.PartialState`
sets up the process group and device. Each process draws its own source/target batches; after each
``backward`` the gradients of the parameters about to be stepped are averaged across processes in
one flat all-reduce (DDP's arithmetic). We do this explicitly rather than wrap the method in
``DistributedDataParallel`` because multi-step methods (MCD's three steps, ADDA's alternating
discriminator/encoder updates) run several backward passes over different parameter subsets per
iteration, which DDP's forward-triggered reducer does not support. BatchNorm buffers are broadcast
from rank 0 before every evaluation and checkpoint, so all ranks hold identical models.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import threading
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..config import OptimConfig, TrainConfig
from ..data.datasets import ArrayDataset
from ..data.streams import iterate_batches, make_stream
from ..errors import TransferlabError
from ..methods.base import Method, OptimizerRequest
from ..schedules import Constant, CosineDecay, InverseDecay, Schedule
from . import graphs
from .checkpoint import CheckpointManager, atomic_write_json, prepare_run_dir, flatten_optimizer, save_tensors, unflatten_optimizer
from .metrics import MetricsLog


class TrainingDiverged(TransferlabError):
    """A loss became NaN or infinite."""


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def optimizer_config(base: OptimConfig, overrides: dict[str, Any]) -> OptimConfig:
    """The run's optimizer settings with a method's per-optimizer overrides, validated."""
    from pydantic import ValidationError

    from ..config import format_validation_error
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
            if p.requires_grad:
                by_scale.setdefault(scale * lr_scale_for(p), []).append(p)
        groups += [{"params": ps, "lr": cfg.lr * s, "initial_lr": cfg.lr * s} for s, ps in by_scale.items()]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, **extra)
    optimizer_cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return optimizer_cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)


def lr_schedule(cfg: OptimConfig) -> Schedule:
    if cfg.lr_schedule == "inverse":
        return InverseDecay(cfg.lr_gamma, cfg.lr_power)
    return CosineDecay() if cfg.lr_schedule == "cosine" else Constant(1.0)


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state (momentum, Adam moments) its parameter's memory layout. A checkpoint stores
    tensors contiguous, but a convnet's weights are channels_last; the fused kernels walk parameter, gradient
    and state as flat memory, so a state tensor laid out differently would be updated element-for-wrong-element."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


class _SigtermFlag:
    """While active (main thread only), SIGTERM sets ``.set`` instead of killing the process at once."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None

    def __enter__(self) -> _SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.set = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class _Context:
    """The :class:`~transferlab.methods.base.StepContext` the engine gives ``Method.update``."""

    trainer: Trainer
    step: int
    total_steps: int
    progress: float
    scalars: dict[str, float] = field(default_factory=dict)

    def backward_and_step(self, loss: torch.Tensor, *optimizers: str) -> None:
        self.trainer._backward_and_step(loss, optimizers)

    def scalar(self, name: str, schedule: Schedule) -> float | torch.Tensor:
        value = float(schedule(self.progress))
        self.scalars[name] = value
        if not self.trainer._tensor_scalars:
            return value
        return self.trainer._tensor_scalar(name, schedule, value)  # a device tensor, updated in place per step

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.trainer.world == 1 else _GatherWithGrad.apply(tensor)


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


class Trainer:
    """Train a :class:`Method` on the sets its ``inputs`` name: a labelled source and an unlabelled target
    for domain adaptation, one labelled set for supervised training, one unlabelled set for pretraining.

    Minimal use::

        trainer = Trainer(method, source, target, eval_sets={"target_test": test}, transform=ImageTransform(...))
        result = trainer.fit()          # {"target_test/acc": ..., ...}
    """

    def __init__(self, method: Method, source: ArrayDataset, target: ArrayDataset | None = None, *,
                 eval_sets: dict[str, ArrayDataset] | None = None, transform: Callable | None = None,
                 train: TrainConfig | None = None, optim: OptimConfig | None = None, batch_size: int = 128,
                 eval_batch_size: int = 1024, seed: int = 0, out_dir: str | Path | None = None,
                 backbone_lr_scale: float = 1.0, progress: bool = True, resume: bool = False,
                 max_device_bytes: int = 2 << 30, _emulate_graphs: bool = False) -> None:
        from accelerate import PartialState

        self.cfg = train or TrainConfig()
        self.optim_cfg = optim or OptimConfig()
        cpu = self.cfg.device == "cpu" or (self.cfg.device == "auto" and not torch.cuda.is_available())
        if self.cfg.device == "cuda" and not torch.cuda.is_available():
            raise TransferlabError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        self.state = PartialState(cpu=cpu)
        self.device = self.state.device
        self.rank, self.world = self.state.process_index, self.state.num_processes
        self.is_main = self.state.is_main_process
        if self.cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cfg.cudnn_benchmark and not self.cfg.deterministic
        self.method = method.to(self.device)
        if getattr(transform, "channels_last", False):
            self.method.to(memory_format=torch.channels_last)
        self.transform = transform
        self.eval_sets = eval_sets or {}
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.resume = resume
        sets = {"source": source, "target": target}
        unknown = [name for name in method.inputs if name not in sets]
        if unknown:
            raise TransferlabError(f"{type(method).__name__}.inputs names {unknown}; the trainer offers {sorted(sets)}")
        if "target" in method.inputs and target is None:
            raise TransferlabError(f"method {method.hparams.name} adapts to a target domain: give a target set "
                                   f"(data.target in a config)")
        if "target" in method.inputs and source.num_classes != target.num_classes:
            raise TransferlabError(
                f"source {source.name} has {source.num_classes} classes but target {target.num_classes}: "
                f"closed-set adaptation needs the same label space"
            )
        # One independent infinite stream per input the method takes (seeded by its position, so the
        # source/target streams of domain adaptation are what they always were). Different ranks draw
        # different batches; everything else is identical across ranks. Small sets live on the device
        # (TensorStream); large ones go through DataLoader workers.
        self.streams = {
            name: make_stream(sets[name], batch_size, seed=seed * 2 + (name == "target") + 1000 * self.rank,
                              device=self.device, transform=transform, labelled=labelled,
                              max_device_bytes=max_device_bytes)
            for name, labelled in method.inputs.items()
        }
        backbone_params = {id(p) for name, m in method.named_modules() if name.split(".")[-1] == "backbone"
                           for p in m.parameters()}
        requests = method.optimizers()
        graph = self.cfg.cuda_graph and (self.device.type == "cuda" or _emulate_graphs)
        self.optimizers = {
            name: build_optimizer(req, self.optim_cfg, lambda p: backbone_lr_scale if id(p) in backbone_params else 1.0,
                                  fused=self.device.type == "cuda", graph=graph)
            for name, req in requests.items()
        }
        # Each optimizer anneals by its own schedule (a method may override it, e.g. ADDA's constant-lr Adam).
        self.lr_schedules = {name: lr_schedule(optimizer_config(self.optim_cfg, req.overrides))
                             for name, req in requests.items()}
        self._params_of = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in self.optimizers.items()}
        self.autocast_dtype = torch.bfloat16 if self.cfg.precision == "bf16" else None
        self._compile_cudagraphs = self.cfg.compile == "reduce-overhead" and self.device.type == "cuda"
        self._scalar_tensors: dict[str, tuple[Schedule, torch.Tensor]] = {}
        self._setup_graphs(_emulate_graphs)
        # Under torch.compile and CUDA graphs, ctx.scalar values (the GRL's λ) are device tensors updated in
        # place: a Python float would be a changing constant (a recompile) or a host input (no cudagraph).
        self._tensor_scalars = self._graphs is not None or self.cfg.compile != "none"
        if self.cfg.compile != "none":
            for child in self.method.children():
                child.compile(mode=None if self.cfg.compile == "default" else self.cfg.compile)
        self.step = 0
        # Training seconds before this process's fit(), carried by checkpoints (None: a checkpoint too old to say).
        self._seconds_before: float | None = 0.0
        self._fit_started: float | None = None
        self._broadcast(parameters=True)

    # --- pieces used by the step -------------------------------------------------------------------
    def _backward_and_step(self, loss: torch.Tensor, names: tuple[str, ...]) -> None:
        unknown = [n for n in names if n not in self.optimizers]
        if unknown or not names:
            raise ValueError(f"backward_and_step needs optimizer names from {sorted(self.optimizers)}; got {names}")
        self.method.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()
        if self.world > 1:
            grads = [p.grad for n in names for p in self._params_of[n] if p.grad is not None]
            if grads:
                flat = torch._utils._flatten_dense_tensors(grads)
                dist.all_reduce(flat)
                flat /= self.world
                for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                    grad.copy_(synced)
        for name in names:
            self.optimizers[name].step()

    def _broadcast(self, parameters: bool = False) -> None:
        """Rank 0's buffers (BatchNorm statistics) — and, at start, parameters — to every rank."""
        if self.world == 1:
            return
        tensors = list(self.method.buffers()) + (list(self.method.parameters()) if parameters else [])
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)

    def _autocast(self, cache: bool = True):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=cache)

    # --- whole-step CUDA graphs (engine/graphs.py) --------------------------------------------------
    def _setup_graphs(self, emulate: bool) -> None:
        """``self._graphs``: ``None`` (eager steps) or the :class:`~.graphs.StepGraphs` that runs them."""
        self._graphs: graphs.StepGraphs | None = None
        if not self.cfg.cuda_graph:
            return
        if self.device.type != "cuda" and not emulate:
            warnings.warn("train.cuda_graph is ignored on CPU: training runs eagerly", stacklevel=3)
            return
        if not self.method.graph_capturable:
            raise TransferlabError(f"{self.method.hparams.name}'s update cannot be captured as one CUDA graph "
                                   f"({self.method.graph_capturable_why or 'it decides on the host per step'}); "
                                   f"set train.cuda_graph: false")
        if self.world > 1:
            raise TransferlabError("train.cuda_graph runs on one process; under torchrun/accelerate launch set "
                                   "train.cuda_graph: false (or run one process per seed, e.g. benchmarks' --parallel)")
        self._graphs = graphs.StepGraphs(self.method, self.device, self._run_update, emulate=emulate)
        self._tensor_lrs()

    def _run_update(self, batches: list, ctx: _Context) -> dict[str, torch.Tensor]:
        """``method.update`` under the run's precision (no autocast weight cache when a graph records it)."""
        with self._autocast(cache=self._graphs is None):
            return self.method.update(*batches, ctx)

    def _tensor_lrs(self) -> None:
        """Give every optimizer group a device tensor learning rate, updated in place each step."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)

    def _tensor_scalar(self, name: str, schedule: Schedule, value: float) -> torch.Tensor:
        if name not in self._scalar_tensors:
            if graphs.capturing(self.device):
                raise TransferlabError(f"ctx.scalar({name!r}) was first asked for while the step was being captured; "
                                       f"a method must ask for the same scalars in every step of a phase")
            self._scalar_tensors[name] = (schedule, torch.full((), value, dtype=torch.float32, device=self.device))
        elif self._graphs is None:  # compile mode; in graph mode the engine fills it before the step runs
            self._scalar_tensors[name][1].fill_(value)
        return self._scalar_tensors[name][1]

    def prepare_run(self, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False,
                    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
        """Make ``out_dir`` ready (rank 0 only, then a barrier); True when an earlier run will be resumed."""
        resume_run = False
        if self.is_main:
            resume_run = prepare_run_dir(self.out_dir, config, resume=resume, overwrite=overwrite, normalize=normalize)
        self.state.wait_for_everyone()
        if not self.is_main:  # rank 0 decided; a missing checkpoint simply means a fresh start
            resume_run = resume
        self.resume = resume_run
        return resume_run

    # --- evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Accuracy (%) of ``method.predict`` on each evaluation set; never used to pick a model."""
        self._broadcast()
        was_training = self.method.training
        self.method.eval()
        results = {}
        for name, dataset in self.eval_sets.items():
            correct = torch.zeros((), dtype=torch.long, device=self.device)
            count = torch.zeros((), dtype=torch.long, device=self.device)
            for batch in iterate_batches(dataset, self.eval_batch_size, device=self.device, transform=self.transform,
                                         shard=(self.rank, self.world)):
                with self._autocast():
                    logits = self.method.predict(batch.x)
                correct += (logits.argmax(dim=1) == batch.y).sum()
                count += len(batch.y)
            if self.world > 1:
                dist.all_reduce(correct)
                dist.all_reduce(count)
            results[f"{name}/acc"] = 100.0 * correct.item() / max(count.item(), 1)
        self.method.train(was_training)
        return results

    # --- checkpoints ---------------------------------------------------------------------------------
    def _checkpoints(self) -> CheckpointManager | None:
        return CheckpointManager(self.out_dir / "checkpoints", self.cfg.keep_checkpoints) if self.out_dir else None

    def save_checkpoint(self) -> None:
        manager = self._checkpoints()
        if manager is None:
            return
        self._broadcast()
        if self.is_main:
            optim_tensors, optim_meta = {}, {}
            for name, optimizer in self.optimizers.items():
                tensors, meta = flatten_optimizer(name, optimizer)
                optim_tensors.update(tensors)
                optim_meta[name] = meta
            rng = {"cpu": torch.get_rng_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            manager.save(
                self.step,
                {"model.safetensors": self.method.state_dict(), "optimizers.safetensors": optim_tensors,
                 "rng.safetensors": rng},
                {"total_steps": self.cfg.iterations, "optimizers": optim_meta, "world_size": self.world,
                 "train_seconds": self._train_seconds(),
                 "streams": {name: stream.state_dict() for name, stream in self.streams.items()}},
            )
        self.state.wait_for_everyone()

    def load_checkpoint(self) -> bool:
        """Restore the newest intact checkpoint; False when there is none."""
        manager = self._checkpoints()
        found = manager.latest() if manager else None
        if found is None:
            return False
        path, state = found
        from .checkpoint import load_tensors

        self.method.load_state_dict(load_tensors(path / "model.safetensors"))
        optim_tensors = load_tensors(path / "optimizers.safetensors")
        for name, optimizer in self.optimizers.items():
            saved = unflatten_optimizer(name, optim_tensors, state["optimizers"][name])
            for group, current in zip(saved["param_groups"], optimizer.param_groups):
                for key in ("fused", "foreach", "capturable"):  # how to step is this machine's choice, not the file's
                    if key in current:
                        group[key] = current[key]
            optimizer.load_state_dict(saved)
            _match_param_layout(optimizer)
        if self._graphs is not None:  # new optimizer state tensors: capture again after a warm-up
            self._tensor_lrs()
            self._graphs.reset()
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])
        rng = load_tensors(path / "rng.safetensors")
        if self.rank == 0:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:  # per-rank dropout streams are re-seeded deterministically from the step
            torch.manual_seed(self.seed * 7919 + self.rank * 104729 + state["step"])
        self.step = int(state["step"])
        self._seconds_before = state.get("train_seconds")
        return True

    def _train_seconds(self, now: float | None = None) -> float | None:
        """Seconds of training up to ``now``, over every resumed segment (steps lost after a segment's last
        checkpoint are not counted: they were trained again). None when an old checkpoint did not record it."""
        if self._seconds_before is None:
            return None
        if self._fit_started is None:
            return self._seconds_before
        return self._seconds_before + ((now or time.perf_counter()) - self._fit_started)

    # --- the loop ------------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``train.iterations`` (or only up to step ``stop_at``, leaving a resumable run).

        A SIGTERM (cluster pre-emption) finishes the current step, writes a checkpoint and stops with
        a message saying how to resume. Running out of device memory or disk space stops with a
        message that says what to change; files already written stay valid (all writes are atomic).
        """
        with _SigtermFlag() as sigterm:
            try:
                return self._fit(stop_at, sigterm)
            except torch.OutOfMemoryError:
                raise TransferlabError(
                    f"out of memory on {device_description(self.device)} at step {self.step}. Lower data.batch_size, "
                    f"use train.precision: bf16, or a smaller backbone; the last good checkpoint is kept"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                    raise
                raise TransferlabError(
                    f"could not write to {self.out_dir} ({exc.strerror}) at step {self.step}. Free space or choose "
                    f"another --out; no partial file was left, and the last complete checkpoint is kept"
                ) from None

    def _flush(self, log: MetricsLog, running: dict[str, torch.Tensor], n_running: int,
               scalars: dict[str, float], bar) -> None:
        """Write the window's mean losses (one host sync per window) and stop on NaN/Inf."""
        means = dict(zip(running, (torch.stack(list(running.values())) / n_running).tolist()))
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"{', '.join(bad)} became NaN/Inf between steps {self.step - n_running + 1} and {self.step}; "
                f"the last good checkpoint is kept. Try a lower optim.lr, train.precision: fp32, or a smaller "
                f"method trade_off."
            )
        # wall_s: seconds since this process's fit() began (throughput diagnosis; differs between a resumed
        # and an uninterrupted run, unlike everything else in the record)
        log.write({"step": self.step, "kind": "train", **means, **scalars,
                   "wall_s": round(time.perf_counter() - self._fit_started, 3)})
        bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:3]})

    def _fit(self, stop_at: int | None, sigterm: _SigtermFlag) -> dict[str, Any]:
        total = self.cfg.iterations
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume and self.load_checkpoint()
        if not resumed:
            torch.manual_seed(self.seed * 7919 + self.rank * 104729)
        log = MetricsLog(self.out_dir / "metrics.jsonl" if self.out_dir and self.is_main else None,
                         resume_step=self.step if resumed else None)
        self.method.train()
        running: dict[str, torch.Tensor] = {}
        scalars: dict[str, float] = {}
        n_running = 0
        final_metrics: dict[str, float] | None = None  # evaluation at the last step, reused for the result
        started, start_step = time.perf_counter(), self.step
        self._fit_started = started
        bar = tqdm(total=total, initial=self.step, disable=not (self.progress and self.is_main), desc="train",
                   dynamic_ncols=True, leave=False)
        while self.step < min(total, stop_at or total):
            progress = self.step / total
            lrs = {}
            for name, optimizer in self.optimizers.items():
                factor = self.lr_schedules[name](progress)
                for group in optimizer.param_groups:
                    if isinstance(group["lr"], torch.Tensor):  # graph mode: updated in place, read by the graph
                        group["lr"].fill_(group["initial_lr"] * factor)
                    else:
                        group["lr"] = group["initial_lr"] * factor
                lrs[f"lr/{name}" if len(self.optimizers) > 1 else "lr"] = optimizer.param_groups[0]["initial_lr"] * factor
            ctx = _Context(self, self.step, total, progress)
            if self._compile_cudagraphs:  # a new step: CUDA-graph outputs of the last one may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            batches = [next(stream) for stream in self.streams.values()]
            if self._graphs is not None:
                for schedule, tensor in self._scalar_tensors.values():  # outside any graph: this step's values
                    tensor.fill_(float(schedule(progress)))
                losses = self._graphs.step(batches, ctx, self._scalar_tensors)
            else:
                losses = self._run_update(batches, ctx)
            for key, value in losses.items():  # stays on the device: no host sync inside the step
                value = value.detach().float()  # (a replayed graph's outputs are overwritten by the next replay)
                running[key] = running[key] + value if key in running else value.clone()
            scalars = {**ctx.scalars, **lrs}
            n_running += 1
            self.step += 1
            bar.update(1)
            last = self.step == total
            checkpoint_due = (self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0) or last or sigterm.set
            if self.step % self.cfg.log_every == 0 or checkpoint_due:  # never checkpoint a diverged model
                self._flush(log, running, n_running, scalars, bar)
                running, n_running = {}, 0
            if (self.cfg.eval_every and self.step % self.cfg.eval_every == 0) or last:
                if self.eval_sets:
                    final_metrics = self.evaluate()
                    log.write({"step": self.step, "kind": "eval", **final_metrics})
            if checkpoint_due:
                self.save_checkpoint()
            if sigterm.set and not last:
                bar.close()
                raise TransferlabError(
                    f"stopped by SIGTERM at step {self.step}; a checkpoint was written. Continue with the same "
                    f"command plus --resume"
                )
        bar.close()
        now = time.perf_counter()
        elapsed, total_seconds = now - started, self._train_seconds(now)
        self._seconds_before, self._fit_started = total_seconds, None  # a later fit() on this trainer goes on from here
        if self.step < total:  # stopped early on request: the checkpoints are the run's state
            self.state.wait_for_everyone()
            return {"step": self.step, "stopped_early": True}
        result = {
            "step": self.step,
            **(final_metrics if final_metrics is not None else self.evaluate()),  # the last step's eval, not a second pass
            # train_seconds covers every segment of a resumed run; steps_per_s is this process's segment
            "train_seconds": total_seconds if total_seconds is not None else elapsed,
            "train_seconds_from_step": 0 if total_seconds is not None else start_step,
            "resumed_from_step": start_step if resumed else None,
            "steps_per_s": (self.step - start_step) / elapsed if elapsed > 0 else None,
            "device": device_description(self.device),
            "world_size": self.world,
            "cuda_graph": self._graphs is not None,  # whether the steps ran as CUDA graphs (not only asked for)
        }
        if self.out_dir is not None and self.is_main:
            save_tensors(self.out_dir / "model.safetensors", self.method.state_dict())
            atomic_write_json(self.out_dir / "result.json", result)
        self.state.wait_for_everyone()
        return result
