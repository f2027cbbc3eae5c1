"""Run configuration: YAML files validated by pydantic, with ``--set a.b=c`` overrides.

A config file may name a ``base:`` file (relative to itself) whose values it extends, so the digits
configs share one file per task and add only their method section. Every validation problem
becomes a single :class:`~transferlab.errors.ConfigError` that names the key, says what is wrong,
suggests the closest valid key for a typo, and lists the valid choices.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, model_validator

from .errors import ConfigError
from .validation import closest, format_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranslateConfig(_Strict):
    """Machine-translate a text set when it is loaded (translate-test: the target test set into the source language;
    translate-train: the source training set into the target language). Translations are cached on disk
    (``$TRANSFERLAB_CACHE/translations.sqlite``), keyed by back-end and text, so a rerun never re-translates."""

    backend: str
    """``apertium`` (the Apertium rule-based engine; Debian packages apertium-eng-spa, -eng-cat, -eu-en),
    ``dictionary:<lexicon file, or opener-apertium | opener-bingliu | muse>`` (word by word) or ``hf:<seq2seq model
    name or folder>`` (Marian-style)."""
    target: str = "en"
    """Language to translate into (ISO 639-1 code)."""
    source: str | None = None
    """Language of the set; default: its language column, else the prefix of its part (``es_test`` -> ``es``)."""


class AudioAugmentStep(_Strict):
    """One audio augmentation step (``transferlab.data.audio_augment``): with probability ``p`` per utterance, a
    parameter drawn uniformly from ``range``."""

    name: Literal["pitch_shift", "speed", "tempo", "noise", "vtlp"]
    """``pitch_shift`` (semitones), ``speed`` (factor: tempo and pitch), ``tempo`` (factor, pitch kept), ``noise``
    (SNR in dB, white), ``vtlp`` (vocal-tract-length warp factor alpha; > 1 moves formants up, adult -> child)."""
    p: float = Field(1.0, ge=0.0, le=1.0)
    range: tuple[float, float]

    @model_validator(mode="after")
    def _check_range(self) -> "AudioAugmentStep":
        import math

        low, high = self.range
        what = f"{self.name} range {list(self.range)}"
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{what} must hold finite numbers")
        if low > high:
            raise ValueError(f"{what}: the first value is the low end and must not exceed the second")
        if self.name in ("speed", "tempo", "vtlp") and not (0.25 <= low and high <= 4.0):
            raise ValueError(f"{what}: factors must lie in [0.25, 4] (1 = unchanged)")
        if self.name == "pitch_shift" and max(abs(low), abs(high)) > 24:
            raise ValueError(f"{what}: shift by at most 24 semitones")
        return self


class FoldConfig(_Strict):
    """One fold of a k-fold cross-validation of the set (``transferlab.data.splits``): stratified by label, grouped so
    equal values of ``group`` (a speaker; by default the ``duplicate_group`` of identical images) share a fold."""

    k: int = Field(5, ge=2)
    index: NonNegativeInt
    role: Literal["train", "val", "test"]
    """``test``: the rows of fold ``index``; ``train``: the rows of the other k-1 folds (k-2 with ``validation``);
    ``val``: the rows of fold ``(index + 1) % k`` (needs ``validation``)."""
    validation: bool = False
    """Hold fold ``(index + 1) % k`` out of training as a validation fold (``role: val``), e.g. to fit a temperature
    on it; the test fold is never used for fitting anything."""
    seed: NonNegativeInt = 0
    """Which partition: cross-validation repeated over seeds uses a different one per seed."""
    group: str | None = None


class DomainConfig(_Strict):
    name: str
    """A registered dataset (``transferlab datasets list``)."""
    part: str = "train"
    """A split (train/test) or a domain (amazon, webcam, ...)."""
    classes: list[NonNegativeInt | list[NonNegativeInt]] | None = None
    """Keep only these labels, relabelled 0..len-1 in this order (e.g. [5, 6, 7, 8, 9]); a list entry merges labels
    into one class (``[[0, 1], [2, 3]]``: OpeNER's binary view, negative vs positive)."""
    labels_per_class: PositiveInt | None = None
    """Keep only this many samples of each class, drawn by the run's seed (few-label transfer)."""
    translate: TranslateConfig | None = None
    """Text sets: machine-translate the sentences when loading (translate-test / translate-train)."""
    label: str | None = None
    """The name this set's metrics are reported under (``data.eval``); default: its part (``es_test``), with
    ``@<back-end>`` when translated."""
    where: dict[str, list[str | int]] | None = None
    """Keep only rows whose per-sample column has one of these values (``{speaker: [george, jackson]}``: a
    speaker-disjoint split; ``{group: [child]}``). Columns are the set's extras (``transferlab datasets info``)."""
    exclude: dict[str, list[str | int]] | None = None
    """Drop rows whose column has one of these values (``{speaker: [theo]}``: every speaker but one)."""
    fold: FoldConfig | None = None
    """Cross-validation: keep one fold (``role: test``) or the other k-1 (``role: train``) of this set."""
    perturb: list[AudioAugmentStep] | None = None
    """Audio sets: transform every utterance once, when loaded (each step with its probability, parameters drawn by
    the run's seed): an evaluation condition such as adult speech shifted toward child pitch and formants
    (``[{name: pitch_shift, range: [4, 4]}, {name: vtlp, range: [1.15, 1.15]}]``)."""


class TextConfig(_Strict):
    """How text is tokenised (datasets of kind ``text``)."""

    tokenizer: str | None = None
    """A Hugging Face tokenizer: hub name or local folder. ``null``: the ``hf:`` backbone's own tokenizer."""
    max_length: PositiveInt = 128
    """Longer sentences are truncated to this many tokens."""
    cache: bool = True
    """Keep the token ids of each dataset on disk (``$TRANSFERLAB_CACHE/tokens``), keyed by tokenizer and data."""


class AudioConfig(_Strict):
    """How audio is prepared (datasets of kind ``audio``)."""

    sample_rate: PositiveInt = 16_000
    """The model's rate; every utterance is resampled to it once, when the data is loaded."""
    normalize: bool = True
    """Zero mean, unit variance per utterance (what wav2vec2's feature extractor does)."""
    max_seconds: PositiveFloat | None = None
    """Cut longer utterances to this length."""
    augment: list[AudioAugmentStep] | Literal["child"] | None = None
    """On-the-fly augmentation of training batches (never of evaluation sets), each step with its probability, drawn
    per utterance from the run's seeded generator (``transferlab.data.audio_augment``); ``child``: the adult->child
    preset (pitch up, formant (VTLP) warp, tempo, noise)."""


class FeaturesConfig(_Strict):
    """How feature vectors (dense or sparse) are prepared."""

    normalize: Literal["none", "l1", "zscore"] = "none"
    """``l1``: each vector divided by its absolute sum; ``zscore``: each feature standardised with its own domain's
    mean and std (per domain: source, target and test each use their own statistics)."""


class IntensityConfig(_Strict):
    """Map stored intensities to [0, 1] per image before normalisation (medical images), by a fixed window or by
    each image's own percentiles; values outside are clipped."""

    window: tuple[float, float] | None = None
    """``[level, width]`` in stored units (0..255 for uint8 images, Hounsfield units for CT): ``level - width/2``
    maps to 0 and ``level + width/2`` to 1."""
    percentile: tuple[float, float] | None = None
    """``[low, high]`` percentiles (e.g. ``[1, 99]``) of each image map to 0 and 1 (robust to outlier pixels and to
    scanner-dependent intensity scales, the usual MRI normalisation)."""

    @model_validator(mode="after")
    def _one_mapping(self) -> "IntensityConfig":
        if (self.window is None) == (self.percentile is None):
            raise ValueError("data.intensity takes exactly one of window: [level, width] or percentile: [low, high]")
        if self.window is not None and not self.window[1] > 0:
            raise ValueError(f"data.intensity.window {list(self.window)}: the width (second value) must be positive")
        if self.percentile is not None and not 0 <= self.percentile[0] < self.percentile[1] <= 100:
            raise ValueError(f"data.intensity.percentile {list(self.percentile)}: need 0 <= low < high <= 100")
        return self


class DataConfig(_Strict):
    root: str | None = None
    """Data root; default: ``$TRANSFERLAB_DATA`` or ``~/.cache/transferlab/data``."""
    source: DomainConfig
    """The labelled source (domain adaptation, supervised training) or the unlabelled pretraining data."""
    target: DomainConfig | None = None
    """The unlabelled target domain (domain adaptation methods only)."""
    test: DomainConfig | None = None
    """Labelled data the final model is evaluated on; default: the target's ``test`` part (none without a target).
    Without its own ``classes`` it takes the source's."""
    eval: list[DomainConfig] = Field(default_factory=list)
    """More labelled sets evaluated next to ``test`` (e.g. every target language of a zero-shot run); their metrics
    are logged as ``<label>/acc`` and ``<label>/macro_f1``; a set without ``classes`` takes the source's. Never used
    for training or model selection."""
    image_size: PositiveInt | None = None
    """Resize images to this square size; ``null`` keeps the stored size."""
    channels: Literal[1, 3] = 1
    intensity: IntensityConfig | None = None
    """Images: window/level or per-image percentile mapping of the stored values to [0, 1], at the stored size and
    channels (then resize, channel adaptation and ``mean``/``std``); replaces the default uint8 / 255."""
    mean: list[float] | Literal["train"] = Field(default_factory=lambda: [0.5])
    """Per-channel (or one) normalisation mean; ``train``: computed from the source training set (of the input
    transform's output before normalisation: after ``intensity``, resize and channels), never from evaluation sets;
    the run's saved config records the numbers."""
    std: list[PositiveFloat] | Literal["train"] = Field(default_factory=lambda: [0.5])
    """Per-channel (or one) normalisation standard deviation; ``train``: the source training set's (population)
    standard deviation, as for ``mean``."""
    augment: Literal["natural", "digits", "medical", "medical_flip"] | None = None
    """Images: random augmentation of training batches (never of evaluation sets), on the device, per sample, drawn
    from the run's seed (``transferlab.data.augment`` presets; ``medical``: crops, small rotations, intensity
    jitter, no flips (chest X-rays: laterality matters); ``medical_flip``: the same plus horizontal flips (axial brain
    MRI, where left and right are interchangeable for the label))."""
    text: TextConfig = Field(default_factory=TextConfig)
    """Tokenisation (text datasets only)."""
    audio: AudioConfig = Field(default_factory=AudioConfig)
    """Sample rate, normalisation and length limit (audio datasets only)."""
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    """Normalisation of feature vectors (feature datasets only)."""
    bucket_by_length: bool = True
    """Text and audio: draw batches of similar length (less padding); every sample still comes once per epoch."""
    batch_size: PositiveInt = 128
    """Per domain and per process: each step sees batch_size source + batch_size target samples."""
    eval_batch_size: PositiveInt = 1024


class MLPConfig(_Strict):
    """The ``mlp`` backbone (feature-vector input)."""

    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256])
    """Widths of the hidden layers, in order (``[]``: no hidden layer; the features pass through)."""
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu"] = "relu"
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    """Dropout between hidden layers (not after the last)."""


class HFConfig(_Strict):
    """The ``hf:`` backbones (Hugging Face text and audio encoders)."""

    pooling: Literal["cls", "mean"] = "mean"
    """``cls``: the first position's state; ``mean``: the mean over the attention mask."""
    from_config: bool = False
    """Random weights with the checkpoint's architecture (``AutoModel.from_config``) instead of its weights."""
    freeze_embeddings: bool = False
    freeze_feature_encoder: bool = False
    """wav2vec2-style audio models: keep the convolutional waveform encoder fixed."""
    freeze_layers: NonNegativeInt = 0
    """Keep the first k transformer layers fixed."""


class AdapterConfig(_Strict):
    """Residual adapters (Houlsby et al. 2019; Rebuffi et al. 2017): ``h + up(act(down(LayerNorm(h))))`` with ``up``
    zero-initialised."""

    bottleneck: PositiveInt = 64
    layers: list[int] | None = None
    """``hf:`` encoders: the transformer layers (0-based; negative counts from the end) followed by an adapter;
    ``null``: every layer. Other backbones: one adapter on the backbone's features (this must be null)."""
    train: Literal["adapters", "adapters+heads", "all"] = "adapters+heads"
    """What trains: only the adapters (everything else frozen, BatchNorm statistics included), the adapters and the
    method's heads (the encoder frozen), or everything."""


class ModelConfig(_Strict):
    backbone: str = "lenet"
    """``lenet``, ``dtn``, ``mlp``, ``torchvision:<name>``, ``timm:<name>`` or ``hf:<hub name or local folder>``."""
    hf: HFConfig = Field(default_factory=HFConfig)
    """Pooling and freezing of an ``hf:`` backbone (ignored by the others)."""
    mlp: MLPConfig = Field(default_factory=MLPConfig)
    """Widths, activation and dropout of the ``mlp`` backbone (ignored by the others)."""
    pretrained: bool | str = False
    """``true`` (library weight cache) or a path to a safetensors/torch weights file."""
    bottleneck_dim: NonNegativeInt = 256
    backbone_lr_scale: PositiveFloat = 1.0
    """Learning-rate multiplier for the backbone (0.1 is usual for pretrained backbones)."""
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)
    """Layer-wise learning-rate decay: the backbone's last stage trains at ``backbone_lr_scale``, each stage before it
    at this factor less (0.8–0.95 is usual for fine-tuning transformers; stages: embeddings + one per transformer
    layer for ``hf:`` backbones, weight layers for the others). 1: one rate for the whole backbone."""
    init: str | None = None
    """A finished transferlab run folder (or its ``model.safetensors``) whose whole model (encoder and the method's
    heads) initialises this run: continue training a model, e.g. adapt a speech recogniser to a new speaker. The
    architecture must match; only adapters (``model.adapter``) may be new."""
    encoder_init: str | None = None
    """A transferlab run folder (or its ``model.safetensors``) whose encoder weights (backbone and
    bottleneck) initialise this run's encoder: how a pretrained run is transferred."""
    init_layers: NonNegativeInt | None = None
    """With ``encoder_init``: copy only the encoder's first n layers; the rest keep their random
    initialisation (Yosinski et al.'s AnB). ``null``: the whole encoder."""
    freeze_layers: NonNegativeInt = 0
    """Train with the encoder's first n layers frozen (no gradient; their BatchNorm statistics still follow the data,
    as in Yosinski et al.'s experiments). ``freeze`` freezes by stage and holds BatchNorm statistics too."""
    init_stages: NonNegativeInt | list[str] | None = None
    """With ``encoder_init``: copy only these stages of the encoder (names from ``transferlab model stages``, or the
    first n); the others keep their fresh initialisation. ``null``: the whole encoder."""
    freeze: NonNegativeInt | list[str] | None = None
    """Stages (names, or the first n) trained with no gradient and with their BatchNorm layers held in eval mode, so
    their statistics do not move either."""
    unfreeze: dict[str, NonNegativeInt] = Field(default_factory=dict)
    """Gradual unfreezing (ULMFiT): ``{stage: iteration}`` — a stage frozen by ``freeze`` starts training (and its
    BatchNorm statistics start following the data) at that iteration."""
    stage_lr: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Learning-rate multipliers by stage (``{layer1: 0.1, layer4: 1.0}``); they replace ``backbone_lr_scale`` and
    ``layer_lr_decay`` for the stages named."""
    input_conv: Literal["sum", "mean"] = "sum"
    """How copied weights of a first convolution are adapted when its input channels differ (a 3-channel checkpoint
    for grey images or the reverse): ``sum`` (timm's ``adapt_input_conv``: a grey image then gives the same output
    as its 3-channel copy did) or ``mean`` (3 -> 1 averages the filters; 1 -> 3 repeats them unscaled)."""
    adapter: AdapterConfig | None = None
    """Residual bottleneck adapters (``h + MLP(h)``, zero-initialised so the model starts unchanged): inside an
    ``hf:`` encoder after its transformer layers, on the features of any other backbone."""


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PositiveFloat = 0.01
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: NonNegativeFloat = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: Literal["inverse", "cosine", "linear", "constant"] = "inverse"
    """``inverse``: lr·(1 + lr_gamma·p)^−lr_power per iteration (Ganin & Lempitsky); ``cosine`` and ``linear`` decay
    to 0 at the last iteration."""
    warmup: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of the iterations over which the lr rises linearly from 0 (wav2vec2 fine-tuning: 0.1); the
    schedule then runs over the rest."""
    lr_gamma: NonNegativeFloat = 10.0
    lr_power: NonNegativeFloat = 0.75


class TrainConfig(_Strict):
    iterations: PositiveInt = 10_000
    eval_every: NonNegativeInt = 1000
    """Evaluate every N iterations (0: only at the end). Evaluation never selects the model."""
    checkpoint_every: NonNegativeInt = 1000
    """Write a resumable checkpoint every N iterations (0: only at the end)."""
    keep_checkpoints: PositiveInt = 2
    log_every: PositiveInt = 100
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    """Also send every logged record to these experiment trackers (Accelerate's integrations; the package must be
    installed). TensorBoard writes to ``<run>/tensorboard``: ``tensorboard --logdir runs/``."""
    grad_accumulation: PositiveInt = 1
    """Sum the gradients of this many batches before each optimizer step (an effective batch this many times
    data.batch_size); each iteration then draws this many batches per input. Methods that step once per update."""
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = False
    """Use deterministic algorithms (bit-exact resume on CPU; slower on GPU)."""
    cudnn_benchmark: bool = False
    """On CUDA, let cuDNN time its convolution algorithms for each new input shape and keep the fastest (what
    timm's and TLlib's scripts switch on). Off by default: the measured GPU figures were taken without it, and
    the one run with it (ResNet-50 on a freshly started H100) spent over 45 s in warm-up. Ignored when
    ``deterministic`` is set."""
    cuda_graph: bool = False
    """On CUDA, capture the whole training step (forward, backward, every optimizer step) as one CUDA graph
    after a few eager warm-up steps, and replay it each iteration: one launch per step instead of hundreds,
    for small models bound by per-step overhead. Needs batches of fixed shape, one process, and
    ``compile: none``. Ignored (with a warning) on CPU. See ``transferlab.engine.graphs``."""

    @model_validator(mode="after")
    def _graph_without_compile(self) -> "TrainConfig":
        if self.cuda_graph and self.compile != "none":
            raise ValueError(f"train.cuda_graph captures the eager step itself; it cannot be combined with "
                             f"train.compile: {self.compile}. Set train.compile: none (or train.cuda_graph: false)")
        return self


class TransferConfig(_Strict):
    """The downstream task of a pretraining run, used by ``transferlab probe|finetune|grid``: a labelled
    training set (subsampled to k labels per class), a labelled test set, and how to train on it.
    Image preprocessing (size, channels, normalisation) and the model come from the pretraining run."""

    train: DomainConfig
    test: DomainConfig
    iterations: PositiveInt = 500
    batch_size: PositiveInt = 64
    """Capped at the size of the labelled set (k=1 with 10 classes gives batches of 10)."""
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr_schedule="cosine"))
    probe_optim: OptimConfig | None = None
    """Optimizer for linear probing (default: ``optim``)."""
    labels_per_class: list[PositiveInt | Literal["all"]] = Field(default_factory=lambda: [1, 5, 10, 50, 100, "all"])
    """The grid's k values."""


class NormalizeConfig(_Strict):
    """How transcripts are normalised before training and before WER/CER (``data.transcripts.normalize_transcript``)."""

    lowercase: bool = True
    numbers: bool = True
    """Spell numbers out ("12" -> "twelve")."""
    punctuation: bool = True
    disfluencies: bool = False
    """Remove filled pauses (um, uh, er, ...)."""


class TaskConfig(_Strict):
    """What the model predicts. ``classification`` (the default): a class label per sample. ``ctc``: a character
    transcript per utterance (speech recognition), scored by WER and CER."""

    name: Literal["classification", "ctc"] = "classification"
    text: str = "text"
    """CTC: the per-utterance column that holds the transcript, or ``label`` (the class name or number, spelt
    out: FSDD's digits)."""
    vocab: str | None = None
    """CTC: a folder or hub name with a ``vocab.json`` (a wav2vec2 CTC checkpoint, or an earlier CTC run) to reuse its
    characters; ``null``: the characters of the normalised training transcripts."""
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    group: str | None = None
    """CTC: a per-utterance column naming each utterance's speaker group (``group``: adult / child). With
    ``method.group_heads`` it selects each utterance's head; WER/CER are also reported per group."""


class Config(_Strict):
    seed: NonNegativeInt = 0
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "source_only"})
    """The method's name and hyper-parameters. This layer knows no methods: the section is validated against
    that method's own ``Config`` by :func:`transferlab.experiment.method_config`."""
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    transfer: TransferConfig | None = None
    """For pretraining runs: the downstream task that ``transferlab probe|finetune|grid`` transfer to."""


# --- loading ----------------------------------------------------------------------------------


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``base:`` references (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"config {path} includes itself through 'base:'")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file; a config must be YAML text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file path")
    return _merge(read_yaml(path.parent / base, _seen + (path.resolve(),)), raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> (["optim", "lr"], 0.1); the value is parsed as YAML (numbers, lists, null).
    ``"~method.trade_off"`` (Hydra's syntax) deletes a key: (["method", "trade_off"], DELETE), or, as
    ``"~KEY=VALUE"``, only when it holds VALUE (``DeleteIf(VALUE)``)."""
    delete = text.strip().startswith("~")
    body = text.strip()[1:] if delete else text
    if "=" not in body and not delete:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. method.trade_off=0.5), or ~KEY to delete a key; got {text!r}")
    key, value = body.split("=", 1) if "=" in body else (body, None)
    parts = key.strip().split(".")
    if not all(part and part.replace("_", "").replace("-", "").isalnum() for part in parts):
        raise ConfigError(f"--set: {key!r} is not a dotted key such as optim.lr")
    if value is None:
        return parts, DELETE
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return parts, DeleteIf(parsed) if delete else parsed


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
"""What :func:`parse_override` returns as the value of ``~KEY``: delete the key."""


class DeleteIf:
    """The value of ``~KEY=VALUE``: delete the key if it holds ``value`` (Hydra's conditional delete)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _delete(node: dict[str, Any], parts: list[str], value: Any, text: str, full: list[str] | None = None) -> None:
    """Remove ``parts[-1]`` from ``node`` (reached through ``parts[:-1]``). A key the config does not set (``full``:
    the key asked for, when a section on its way is missing) is a :class:`ConfigError` naming the keys set there;
    defaults are not keys of the config, so only what the config sets can be deleted."""
    key, where = parts[-1], ".".join(parts[:-1]) or "the top level"
    if not isinstance(node, dict) or key not in node:
        present = sorted(node) if isinstance(node, dict) else []
        raise ConfigError(f"--set {text}: the config does not set {'.'.join(full or parts)}, so there is nothing to "
                          f"delete.{closest(key, present)} Keys set at {where}: {', '.join(present) or '(none)'}")
    if isinstance(value, DeleteIf) and node[key] != value.value:
        raise ConfigError(f"--set {text}: {'.'.join(parts)} is {node[key]!r}, not {value.value!r}; nothing deleted")
    del node[key]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``raw`` with each ``--set`` applied in order: ``KEY=VALUE`` sets (creating sections as needed), ``~KEY``
    deletes (the key's default then applies; an unknown key is a :class:`ConfigError`)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        deleting = value is DELETE or isinstance(value, DeleteIf)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                if deleting:
                    _delete(node, parts[: i + 1], value, text, parts)  # raises: the section is not set
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        if deleting:
            _delete(node, parts, value, text)
        else:
            node[parts[-1]] = value
    return out


def validate(raw: dict[str, Any]) -> Config:
    """``raw`` as a :class:`Config`; every problem becomes one :class:`ConfigError`. The ``method`` section is
    only checked to be a mapping here (see :attr:`Config.method`)."""
    try:
        config = Config(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Config)) from None
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None) -> Config:
    """Read, override and validate a config (from a file, or from a ``raw`` dict). Configs that are to be run
    are loaded with :func:`transferlab.experiment.load_config`, which validates the method section too."""
    data = read_yaml(path) if path is not None else copy.deepcopy(raw or {})
    return validate(apply_overrides(data, overrides or []))
