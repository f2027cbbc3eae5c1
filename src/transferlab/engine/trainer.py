"""The one training loop. It owns devices, precision, distribution, learning-rate annealing,
evaluation, checkpoints, logging and seeds; methods only say what a step is.

The pieces it calls live beside it: optimizers and learning-rate schedules in :mod:`.optim`, the
cross-process arithmetic (gradient averaging, broadcasts from rank 0, the all-gather with gradients) in
:mod:`.distributed`, what a checkpoint holds of the run and how it is restored in :mod:`.state` (the
files themselves in :mod:`.checkpoint`), whole-step CUDA graphs in :mod:`.graphs`. This module keeps the
loop: building the run, the step context a method's ``update`` gets, evaluation, when to log, evaluate
and checkpoint, and what a stopped run says.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import threading
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import OptimConfig, TrainConfig
from ..data.datasets import ArrayDataset
from ..data.streams import SampleStream, iterate_batches, make_stream
from ..errors import CheckpointError, TransferlabError, state_dict_mismatch
from ..methods.base import Method
from ..schedules import Schedule
from . import distributed, graphs
from .checkpoint import CheckpointManager, RunLock, atomic_write_json, prepare_run_dir, save_tensors
from .metrics import MetricsLog, classification_metrics, confusion_matrix, edit_counts, error_rates, make_trackers
from .optim import build_optimizer, lr_schedule, optimizer_config
from .state import pack_training_state, restore_training_state, seed_process


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


class _SigtermFlag:
    """While active (main thread only), SIGTERM (pre-emption) and a first SIGINT (Ctrl-C) set ``.set`` and
    ``.name`` instead of stopping the process at once: the loop finishes the step, writes a checkpoint and
    stops with a resume hint. A second Ctrl-C interrupts at once, as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.set = False
        self.name = ""
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.set and signum == signal.SIGINT:  # asked twice: stop now
            raise KeyboardInterrupt
        self.set, self.name = True, signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


@dataclass
class _Context:
    """The :class:`~transferlab.methods.base.StepContext` the engine gives ``Method.update``."""

    trainer: Trainer
    step: int
    total_steps: int
    progress: float
    scalars: dict[str, float] = field(default_factory=dict)
    micro: int = 0  # gradient accumulation: this update's index among the iteration's n_micro updates
    n_micro: int = 1
    steps: int = 0  # backward_and_step calls in this update

    def backward_and_step(self, loss: torch.Tensor, *optimizers: str) -> None:
        self.steps += 1
        if self.n_micro > 1 and self.steps > 1:
            raise TransferlabError(f"train.grad_accumulation sums the gradients of one backward pass per batch, but "
                                   f"{self.trainer.method.hparams.name} steps its optimizers several times per update; "
                                   f"set train.grad_accumulation: 1 (and raise data.batch_size instead)")
        self.trainer._backward_and_step(loss, optimizers, self.micro, self.n_micro)

    def scalar(self, name: str, schedule: Schedule) -> float | torch.Tensor:
        value = float(schedule(self.progress))
        self.scalars[name] = value
        if not self.trainer._tensor_scalars:
            return value
        return self.trainer._tensor_scalar(name, schedule, value)  # a device tensor, updated in place per step

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.trainer.world == 1 else distributed.gather_with_grad(tensor)


def _then(first: Callable | None, second: Callable) -> Callable:
    """``second(first(x))``: the modality's transform, then the training-only augmentation."""
    if first is None:
        return second
    return lambda x: second(first(x))


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
                 backbone_lr_scale: float = 1.0, layer_lr_decay: float = 1.0, progress: bool = True,
                 resume: bool = False,
                 echo: bool = False, max_device_bytes: int = 2 << 30, bucket: bool = True,
                 result_extra: dict[str, Any] | None = None, augment: Callable | None = None,
                 _emulate_graphs: bool = False) -> None:
        from accelerate import PartialState

        self.cfg = train or TrainConfig()
        self.optim_cfg = optim or OptimConfig()
        self.echo = echo  # one line per logged record on standard error (the CLI's --no-progress)
        self.result_extra = dict(result_extra or {})  # fields the result (and result.json) begins with: task, method
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
        train_transform = transform if augment is None else _then(transform, augment)  # training batches only
        self.streams = {
            name: make_stream(sets[name], batch_size, seed=seed * 2 + (name == "target") + 1000 * self.rank,
                              device=self.device, transform=train_transform, labelled=labelled,
                              max_device_bytes=max_device_bytes, bucket=bucket)
            for name, labelled in method.inputs.items()
        }
        # Learning-rate multipliers come from the modules that know their backbone (Encoder.lr_scales), not from names.
        lr_scales: dict[int, float] = {}
        for m in method.modules():
            if callable(getattr(m, "lr_scales", None)):
                lr_scales.update(m.lr_scales(backbone_lr_scale, layer_lr_decay))
        requests = method.optimizers()
        graph = self.cfg.cuda_graph and (self.device.type == "cuda" or _emulate_graphs)
        self.optimizers = {
            name: build_optimizer(req, self.optim_cfg, lambda p: lr_scales.get(id(p), 1.0),
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
        self._log_window: dict[str, Any] | None = None  # the open logging window a SIGTERM checkpoint carried
        self._lock: RunLock | None = None  # held from prepare_run until fit() ends
        self._log: MetricsLog | None = None  # this fit()'s metrics log and trackers
        self._fit_started: float | None = None
        self._broadcast(parameters=True)

    # --- pieces used by the step -------------------------------------------------------------------
    def _backward_and_step(self, loss: torch.Tensor, names: tuple[str, ...], micro: int = 0, n_micro: int = 1) -> None:
        """Back-propagate and step. With gradient accumulation (``n_micro`` > 1) the gradients of the iteration's
        ``n_micro`` losses, each divided by ``n_micro``, are summed, and the optimizers step after the last."""
        unknown = [n for n in names if n not in self.optimizers]
        if unknown or not names:
            raise ValueError(f"backward_and_step needs optimizer names from {sorted(self.optimizers)}; got {names}")
        if micro == 0:
            self.method.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            (loss / n_micro if n_micro > 1 else loss).backward()
        if micro < n_micro - 1:
            return
        if self.world > 1:
            distributed.average_gradients((p for n in names for p in self._params_of[n]), self.world)
        for name in names:
            self.optimizers[name].step()

    def _broadcast(self, parameters: bool = False) -> None:
        """Rank 0's buffers (BatchNorm statistics) — and, at start, parameters — to every rank."""
        if self.world == 1:
            return
        distributed.broadcast_from_rank0(self.method, parameters)

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
        variable = [n for n, stream in self.streams.items() if isinstance(stream, SampleStream)]
        if variable:
            raise TransferlabError(f"train.cuda_graph replays one recorded step, which needs batches of one fixed shape; "
                                   f"the {' and '.join(variable)} data is sparse, text or audio, whose batches change "
                                   f"shape. Set train.cuda_graph: false")
        if not self.method.graph_capturable:
            raise TransferlabError(f"{self.method.hparams.name}'s update cannot be captured as one CUDA graph "
                                   f"({self.method.graph_capturable_why or 'it decides on the host per step'}); "
                                   f"set train.cuda_graph: false")
        if self.cfg.grad_accumulation > 1:
            raise TransferlabError("train.cuda_graph replays one recorded step; it cannot accumulate gradients over "
                                   "several batches. Set train.grad_accumulation: 1 or train.cuda_graph: false")
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
            self._lock = RunLock.acquire(self.out_dir)  # before anything in the folder is read or replaced
            try:
                resume_run = prepare_run_dir(self.out_dir, config, resume=resume, overwrite=overwrite,
                                             normalize=normalize)
            except BaseException:
                self.release_run(discard=True)
                raise
        self.state.wait_for_everyone()
        if not self.is_main:  # rank 0 decided; a missing checkpoint simply means a fresh start
            resume_run = resume
        self.resume = resume_run
        return resume_run

    def release_run(self, discard: bool = False) -> None:
        """Let another process write the run folder (the OS also does this when this process ends); ``discard``:
        the run was refused, so a folder made only to hold the lock is removed."""
        if self._lock is not None:
            self._lock.release(discard=discard)
            self._lock = None

    def parameter_counts(self) -> dict[str, int]:
        """The method's parameters: ``total``, and ``trainable`` (those some optimizer updates)."""
        trainable = {id(p): p.numel() for params in self._params_of.values() for p in params if p.requires_grad}
        return {"total": int(sum(p.numel() for p in self.method.parameters())), "trainable": int(sum(trainable.values()))}

    # --- evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The task's metrics on each evaluation set, from sums reduced over processes; never used to pick a model.
        Classification: accuracy and macro-F1 (%) of ``method.predict`` from a confusion matrix, NLL, ECE and (two
        classes) AUC from per-sample statistics. CTC: WER and CER (%)
        of ``method.transcribe`` from edit counts, also per speaker group, and the group classifier's accuracy."""
        self._broadcast()
        was_training = self.method.training
        self.method.eval()
        results = {}
        for name, dataset in self.eval_sets.items():
            batches = iterate_batches(dataset, self.eval_batch_size, device=self.device, transform=self.transform,
                                      shard=(self.rank, self.world), sort_by_length=True)
            metrics = self._evaluate_ctc(batches) if self.method.task == "ctc" else self._evaluate_classes(batches)
            results.update({f"{name}/{metric}": value for metric, value in metrics.items()})
        self.method.train(was_training)
        return results

    def _evaluate_classes(self, batches) -> dict[str, float]:
        """Accuracy and macro-F1 (%) from the confusion matrix summed over processes; ``nll``, ``ece`` (15 equal-width
        bins, a fraction) and, for two classes, ``auc`` from five numbers per sample gathered from every process
        (:func:`~transferlab.engine.metrics.calibration_metrics`)."""
        from .metrics import PREDICTION_STATS, calibration_metrics, prediction_stats

        k = self.method.num_classes
        confusion = torch.zeros(k, k, dtype=torch.long, device=self.device)
        stats = []
        for batch in batches:
            with self._autocast():
                logits = self.method.predict(batch.x)
            predicted = logits.argmax(dim=1)
            confusion += confusion_matrix(batch.y, predicted, k)
            stats.append(prediction_stats(logits, batch.y, predicted))
        rows = torch.cat(stats) if stats else torch.zeros(0, len(PREDICTION_STATS), dtype=torch.float64,
                                                          device=self.device)
        if self.world > 1:
            distributed.sum_over_ranks(confusion)
            rows = distributed.gather_rows(rows, self.world)
        return {**classification_metrics(confusion.cpu()), **calibration_metrics(rows, k)}

    def _evaluate_ctc(self, batches) -> dict[str, float]:
        groups = list(getattr(self.method, "groups", []))
        vocab = self.method.vocab
        # rows: every utterance, then one per group; columns: edit_counts' [word_errors, words, char_errors, ...]
        counts = torch.zeros(1 + len(groups), 5, dtype=torch.float64)
        routed = torch.zeros(2, dtype=torch.float64)  # group classifier: correct, utterances
        for batch in batches:
            group = batch.targets.get("group")
            with self._autocast():
                hypotheses, predicted = self.method.transcribe(batch.x, group)
            labels, lengths = batch.targets["labels"].cpu(), batch.targets["labels_lengths"].cpu()
            references = [vocab.decode(labels[i, : int(n)].tolist()) for i, n in enumerate(lengths)]
            counts[0] += edit_counts(references, hypotheses)
            if group is not None:
                group = group.cpu()
                for g in range(len(groups)):
                    rows = torch.nonzero(group == g).squeeze(1).tolist()
                    if rows:
                        counts[1 + g] += edit_counts([references[i] for i in rows], [hypotheses[i] for i in rows])
                if predicted is not None:
                    routed += torch.tensor([float((predicted.cpu() == group).sum()), float(len(group))],
                                           dtype=torch.float64)
        if self.world > 1:
            counts, routed = counts.to(self.device), routed.to(self.device)
            distributed.sum_over_ranks(counts)
            distributed.sum_over_ranks(routed)
            counts, routed = counts.cpu(), routed.cpu()
        metrics = error_rates(counts[0])
        for g, group_name in enumerate(groups):
            if counts[1 + g, 4] > 0:
                metrics.update({f"{key}_{group_name}": value for key, value in error_rates(counts[1 + g]).items()})
        if routed[1] > 0:
            metrics["group_acc"] = 100.0 * float(routed[0] / routed[1])
        metrics["utterances"] = int(counts[0, 4])
        return metrics

    # --- checkpoints ---------------------------------------------------------------------------------
    def _checkpoints(self) -> CheckpointManager | None:
        return CheckpointManager(self.out_dir / "checkpoints", self.cfg.keep_checkpoints) if self.out_dir else None

    def save_checkpoint(self, window: dict[str, Any] | None = None) -> None:
        """Write a checkpoint of the current step. ``window``: the loss sums of a logging window still open (a
        SIGTERM between two log steps), so the resumed run logs that window as an uninterrupted run would."""
        manager = self._checkpoints()
        if manager is None:
            return
        self._broadcast()
        if self.is_main:
            files, state = pack_training_state(
                self.method, self.optimizers, self.streams, self.device, total_steps=self.cfg.iterations,
                world=self.world, train_seconds=self._train_seconds())
            manager.save(self.step, files, {**state, **({"log_window": window} if window else {})})
        self.state.wait_for_everyone()

    def _notice(self, message: str) -> None:
        """A line for the person running the job (rank 0, standard error)."""
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def load_checkpoint(self) -> bool:
        """Restore the newest intact checkpoint and say which; False when the run has none yet. Damaged
        checkpoints skipped on the way are named; when every checkpoint is damaged the run refuses to start
        over (that would delete its metrics) and says how to."""
        manager = self._checkpoints()
        if manager is None:
            return False
        if self.is_main:
            manager.remove_stale_temp()
        valid, damaged = manager.scan()
        if not valid:
            if damaged:
                problems = "; ".join(f"{p.name}: {why}" for p, why in damaged)
                raise CheckpointError(
                    f"cannot resume {self.out_dir}: every checkpoint is damaged ({problems}). Nothing was changed. "
                    f"Start the run over with --overwrite instead of --resume")
            return False
        path, state = valid[0]
        for skipped, why in damaged:
            if skipped.name > path.name:
                self._notice(f"skipping damaged checkpoint {skipped.name} ({why})")
        try:
            restore_training_state(path, state, self.method, self.optimizers, self.streams, self.device,
                                   rank=self.rank, seed=self.seed)
        except RuntimeError as exc:  # e.g. a missing key or another shape, with its sha256 recomputed
            raise CheckpointError(f"{path} does not match this run's model ({state_dict_mismatch(exc)}); it cannot "
                                  f"be resumed. Start over with --overwrite") from None
        except (ValueError, KeyError, IndexError) as exc:  # optimizer or stream state of another shape
            raise CheckpointError(f"{path} holds training state this run cannot take ({type(exc).__name__}: "
                                  f"{exc}). Start over with --overwrite") from None
        self._notice(f"resuming from {path.name} (step {int(state['step'])})")
        if self._graphs is not None:  # new optimizer state tensors: capture again after a warm-up
            self._tensor_lrs()
            self._graphs.reset()
        self.step = int(state["step"])
        self._seconds_before = state.get("train_seconds")
        self._log_window = state.get("log_window")
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
        The run folder's lock (:meth:`prepare_run`) is released when it returns or raises.
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
            finally:
                if self._log is not None:
                    self._log.close()  # flush and close the trackers' files
                self._log = None
                self.release_run()

    def _check_finite(self, running: dict[str, torch.Tensor], n_running: int) -> dict[str, float]:
        """The window's mean losses (one host sync per window); stop when a loss, or a floating-point buffer such
        as a BatchNorm statistic, is NaN/Inf (a checkpoint written now would resume into the same divergence)."""
        means = dict(zip(running, (torch.stack(list(running.values())) / n_running).tolist()))
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        buffers = [(n, b) for n, b in self.method.named_buffers() if b.is_floating_point() and b.numel()]
        if buffers and not bool(torch.stack([torch.isfinite(b).all() for _, b in buffers]).all()):
            bad += [f"buffer {n}" for n, b in buffers if not bool(torch.isfinite(b).all())]  # BatchNorm statistics
        if bad:
            raise TrainingDiverged(
                f"{', '.join(bad)} became NaN/Inf between steps {self.step - n_running + 1} and {self.step}; "
                f"the last good checkpoint is kept. Try a lower optim.lr, train.precision: fp32, or a smaller "
                f"method trade_off."
            )
        return means

    def _flush(self, log: MetricsLog, running: dict[str, torch.Tensor], n_running: int,
               scalars: dict[str, float], bar) -> None:
        """Check the window (:meth:`_check_finite`) and write its mean losses as one record."""
        means = self._check_finite(running, n_running)
        # wall_s: seconds since this process's fit() began (throughput diagnosis; differs between a resumed
        # and an uninterrupted run, unlike everything else in the record)
        log.write({"step": self.step, "kind": "train", **means, **scalars,
                   "wall_s": round(time.perf_counter() - self._fit_started, 3)})
        bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:3]})
        if self.echo:
            self._notice(f"step {self.step}/{self.cfg.iterations}  " + "  ".join(f"{k} {v:.4g}" for k, v in means.items()))

    def _fit(self, stop_at: int | None, sigterm: _SigtermFlag) -> dict[str, Any]:
        total = self.cfg.iterations
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume and self.load_checkpoint()
        if not resumed:
            seed_process(self.seed, self.rank)
        trackers = make_trackers(list(self.cfg.trackers), self.out_dir) if self.cfg.trackers and self.out_dir \
            and self.is_main else []
        log = MetricsLog(self.out_dir / "metrics.jsonl" if self.out_dir and self.is_main else None,
                         resume_step=self.step if resumed else None, trackers=trackers)
        self._log = log
        self.method.train()
        running: dict[str, torch.Tensor] = {}
        scalars: dict[str, float] = {}
        n_running = 0
        if resumed and self._log_window:  # a SIGTERM stopped the run inside a logging window: go on summing it
            running = {k: torch.tensor(v, dtype=torch.float32, device=self.device)
                       for k, v in self._log_window["sums"].items()}
            n_running = int(self._log_window["n"])
        final_metrics: dict[str, float] | None = None  # evaluation at the last step, reused for the result
        started, start_step = time.perf_counter(), self.step
        self._fit_started = started
        bar = tqdm(total=total, initial=self.step, disable=not (self.progress and self.is_main), desc="train",
                   dynamic_ncols=True, leave=False)
        while self.step < min(total, stop_at or total):
            progress = self.step / total
            self.method.at_step(self.step)  # gradual unfreezing (a no-op for most runs)
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
            if self._graphs is not None:
                batches = [next(stream) for stream in self.streams.values()]
                for schedule, tensor in self._scalar_tensors.values():  # outside any graph: this step's values
                    tensor.fill_(float(schedule(progress)))
                losses = self._graphs.step(batches, ctx, self._scalar_tensors)
            else:
                losses = {}
                ctx.n_micro = self.cfg.grad_accumulation
                for micro in range(ctx.n_micro):  # one update per batch; the optimizers step after the last
                    ctx.micro, ctx.steps = micro, 0
                    batches = [next(stream) for stream in self.streams.values()]
                    for key, value in self._run_update(batches, ctx).items():
                        value = value.detach().float() / ctx.n_micro  # logged: the mean over the micro-batches
                        losses[key] = losses[key] + value if key in losses else value
            for key, value in losses.items():  # stays on the device: no host sync inside the step
                value = value.detach().float()  # (a replayed graph's outputs are overwritten by the next replay)
                running[key] = running[key] + value if key in running else value.clone()
            scalars = {**ctx.scalars, **lrs}
            n_running += 1
            self.step += 1
            bar.update(1)
            last = self.step == total
            scheduled = bool(self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0) or last
            checkpoint_due = scheduled or sigterm.set
            open_window = None
            if self.step % self.cfg.log_every == 0 or scheduled:
                self._flush(log, running, n_running, scalars, bar)  # never checkpoint a diverged model
                running, n_running = {}, 0
            elif checkpoint_due:  # SIGTERM between two log steps: the open window goes into the checkpoint, not the
                self._check_finite(running, n_running)  # log, so the resumed metrics.jsonl equals an uninterrupted run's
                open_window = {"n": n_running, "sums": dict(zip(running, torch.stack(list(running.values())).tolist()))}
            if (self.cfg.eval_every and self.step % self.cfg.eval_every == 0) or last:
                if self.eval_sets:
                    final_metrics = self.evaluate()
                    log.write({"step": self.step, "kind": "eval", **final_metrics})
            if checkpoint_due:
                self.save_checkpoint(open_window)
            if sigterm.set and not last:
                bar.close()
                raise TransferlabError(
                    f"stopped by {sigterm.name} at step {self.step}; a checkpoint was written. Continue with the same "
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
            **self.result_extra,
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
            "parameters": self.parameter_counts(),
        }
        if self.out_dir is not None and self.is_main:
            save_tensors(self.out_dir / "model.safetensors", self.method.state_dict())
            atomic_write_json(self.out_dir / "result.json", result)
        self.state.wait_for_everyone()
        return result
