"""The method contract.

A method is an ``nn.Module`` that owns its networks and says, in its paper's vocabulary, what one
training step is (DomainBed's ``update``/``predict``), with named optimizers for multi-optimizer
methods (Dassl's ``backward_and_update``). Everything else (devices, precision, distribution,
learning-rate annealing, checkpoints, logging) belongs to the engine, which hands each ``update``
a :class:`StepContext`.

Hyper-parameters are declared once, as the fields of the method's nested ``Config`` (a pydantic
model): the same declaration validates Python keyword arguments, YAML configs and ``--set``
overrides, and supplies the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from ..data.batch import batch_size_of, concat_inputs
from ..data.modality import InputSpec  # noqa: F401  (re-exported: methods take an input_spec)
from ..errors import ConfigError, TransferlabError
from ..registry import Registry
from ..schedules import Schedule
from ..validation import format_validation_error


class MethodConfig(BaseModel):
    """Hyper-parameters every method has."""

    model_config = ConfigDict(extra="forbid")
    name: str
    bn_mode: Literal["joint", "separate"] = "joint"
    """How BatchNorm sees the two domains: ``joint`` forwards source and target as one batch (one set of
    batch statistics, TLlib's default); ``separate`` forwards them one after the other, so each batch
    is normalised with its own domain's statistics (AdaBN-like during training)."""


@dataclass
class OptimizerRequest:
    """The parameters one named optimizer updates: ``(params, lr_scale)`` groups, and optional changes to
    the run's optimizer settings for this optimizer only (e.g. ADDA's Adam for the adversarial stage)."""

    groups: list[tuple[Iterable[nn.Parameter], float]]
    overrides: dict[str, Any] = field(default_factory=dict)


class StepContext(Protocol):
    """What the engine offers a method inside ``update``."""

    step: int
    total_steps: int
    progress: float

    def backward_and_step(self, loss: torch.Tensor, *optimizers: str) -> None:
        """Back-propagate ``loss`` and step the named optimizers (all gradients are cleared first)."""

    def scalar(self, name: str, schedule: Schedule) -> float:
        """The schedule's value at the current progress; the engine logs it as ``name``."""

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` from every process, concatenated along dim 0 (rank order), with gradients flowing
        back to each process's own part; the tensor itself when training on one process. For losses
        that compare a sample with the whole global batch (SimCLR's negatives)."""


class Method(nn.Module):
    """Base class: subclasses set ``Config`` and implement ``update`` and ``predict``."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    inputs: ClassVar[dict[str, bool]] = {"source": True, "target": False}
    """The batches ``update`` takes, in order, and whether each comes with labels. Domain adaptation
    methods take a labelled source and an unlabelled target batch; supervised training and the
    transfer protocol take ``{"source": True}``; self-supervised pretraining takes ``{"source": False}``
    (the unlabelled data of self-taught learning is its source)."""

    task: ClassVar[str] = "classification"
    """What the engine evaluates: ``classification`` (``predict`` gives class logits: accuracy, macro-F1) or ``ctc``
    (``transcribe`` gives transcripts: WER, CER)."""

    graph_capturable: ClassVar[bool] = True
    """Whether ``update`` can be recorded once as a CUDA graph and replayed (``train.cuda_graph``): it must
    not read tensor values on the host, and its Python path may change only between phases
    (:meth:`graph_phase`)."""
    graph_capturable_why: ClassVar[str] = ""

    def __init__(self, encoder: nn.Module, num_classes: int, *, input_spec: InputSpec | None = None,
                 **hparams: Any) -> None:
        super().__init__()
        self.hparams = make_config(self.Config, {"name": registered_name(type(self)), **hparams})
        self.encoder = encoder
        self.num_classes = num_classes
        self.input_spec = input_spec

    def hold_eval(self, module: nn.Module, *, except_: nn.Module | None = None) -> None:
        """Keep ``module`` (a frozen part: an encoder under adapters) in eval mode whenever the method trains, so its
        BatchNorm statistics and dropout do not change; ``except_`` (the adapters inside it) still trains."""
        held = self.__dict__.setdefault("_held_eval", [])  # not registered as submodules: no duplicate state
        held.append((module, except_))
        self.train(self.training)

    def unfreeze_at(self, module: nn.Module, step: int) -> None:
        """Gradual unfreezing: ``module`` (frozen, held in eval mode) starts training at iteration ``step``. Its
        parameters join the optimizer from the start (they get no gradient, so no update, until then)."""
        for p in module.parameters():
            p.unfreezes_at = step  # read by the optimizer builder: include although requires_grad is False now
        self.__dict__.setdefault("_unfreeze", []).append((module, step))

    def at_step(self, step: int) -> None:
        """Called by the engine before each iteration ``step`` (0-based), also right after a resume: release the
        modules whose unfreezing step has come (so a resumed run is in the state an uninterrupted one would be)."""
        pending = self.__dict__.get("_unfreeze", [])
        due = [(m, s) for m, s in pending if s <= step]
        if not due:
            return
        for module, _ in due:
            module.requires_grad_(True)
            held = self.__dict__.get("_held_eval", [])
            held[:] = [(m, e) for m, e in held if m is not module]
            module.train(self.training)
        pending[:] = [(m, s) for m, s in pending if s > step]

    def train(self, mode: bool = True):
        super().train(mode)
        for module, exception in self.__dict__.get("_held_eval", []):
            nn.Module.train(module, False)  # not a subclass's train(): the held module may be this method
            if exception is not None:
                exception.train(mode)
        return self

    # --- the contract -------------------------------------------------------------------------
    def update(self, *batches_then_ctx: Any) -> dict[str, torch.Tensor]:
        """One training step: ``update(<one Batch per entry of inputs>, ctx)`` — for domain adaptation
        ``update(source, target, ctx)`` with a labelled source and an unlabelled target batch.

        Calls ``ctx.backward_and_step`` for each optimisation step; returns detached scalars to log.
        """
        raise NotImplementedError

    def predict(self, x: Any) -> torch.Tensor:
        """Class logits for inputs ``x`` (the model used at test time). Pretraining methods have no
        classifier and do not override it."""
        raise TransferlabError(f"{self.hparams.name} learns a representation and has no classifier: transfer its "
                               f"encoder (transferlab probe|finetune RUN)")

    def encoder_for(self, domain: str) -> nn.Module:
        """The encoder that maps inputs from ``domain`` ("source" or "target"); methods with a separate
        target encoder (ADDA) override it. Used by the diagnostics (A-distance, t-SNE, CKA)."""
        return self.encoder

    def representation(self, x: Any, domain: str) -> torch.Tensor:
        """The features the classifier sees for inputs from ``domain``."""
        return self.encoder_for(domain)(x)

    def predict_on(self, x: Any, domain: str) -> torch.Tensor:
        """Class logits for inputs from ``domain``: ``predict`` except for methods with a per-domain
        encoder (ADDA classifies source data through the source encoder)."""
        return self.predict(x)

    @classmethod
    def classifies(cls) -> bool:
        """Whether the method has a classifier (``predict``) to evaluate."""
        return cls.predict is not Method.predict

    def graph_phase(self, ctx: StepContext) -> Any:
        """Under ``train.cuda_graph`` the engine captures ``update`` once per phase and replays it; a method whose
        ``update`` takes another Python path from some step on returns a different value from then on
        (ADDA: stage 1, stage 2). Default: one phase."""
        return None

    def optimizers(self) -> dict[str, OptimizerRequest]:
        """Named optimizers. Default: one optimizer ``main`` over every parameter."""
        return {"main": OptimizerRequest([(self.parameters(), 1.0)])}

    # --- shared pieces ------------------------------------------------------------------------
    def features(self, x_s: Any, x_t: Any, encoder: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode source and target, jointly or separately according to ``bn_mode``."""
        encoder = encoder or self.encoder
        if self.hparams.bn_mode == "joint":
            f = encoder(concat_inputs(x_s, x_t))  # dict inputs (text, audio) are padded to one length first
            n_s = batch_size_of(x_s)
            return f[:n_s], f[n_s:]
        return encoder(x_s), encoder(x_t)


METHODS: Registry[type[Method]] = Registry("method")


def registered_name(cls: type[Method]) -> str:
    for name in METHODS.names():
        if METHODS.get(name) is cls:
            return name
    return cls.__name__.lower()


def make_config(config_cls: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Validate ``values`` against ``config_cls``; errors become one readable ConfigError."""
    try:
        return config_cls(**values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, config_cls, prefix="method")) from None
