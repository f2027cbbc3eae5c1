"""From a validated :class:`~transferlab.config.Config` to a trained, evaluated run.

This is the only place that wires datasets, transforms, backbone, method and engine together;
the CLI, the demo and benchmarks all go through it, so there is one way to run an experiment.
It is also where a config meets the method registry: the config layer below knows no methods, so
:func:`method_config` validates the ``method`` section against its method's own ``Config``, and
:func:`load_config` (the loader of configs that are to be run) reports a bad method section when the
config is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import config as schema
from . import data as tl_data
from .config import Config, DomainConfig, TranslateConfig
from .data import ArrayDataset
from .data.modality import feature_dim
from .data.datasets import labels_per_class, select_classes, select_rows
from .engine import Trainer
from .engine.checkpoint import atomic_write_json, load_tensors, read_json
from .errors import CheckpointError, ConfigError, DataError, TransferlabError, state_dict_mismatch
from .methods import METHODS, Method, MethodConfig
from .methods.base import make_config
from .models import Encoder, create_backbone
from .models import surgery
from .models.layers import freeze_layers, layer_state


@dataclass
class Experiment:
    config: Config
    method: Method
    source: ArrayDataset | None  # None in an experiment loaded for evaluation only (load_for_eval)
    target: ArrayDataset | None
    test: ArrayDataset | None
    transform: Any
    modality: Any = None
    extra_tests: dict[str, ArrayDataset] = dataclasses.field(default_factory=dict)
    """``data.eval``: more labelled sets, by label, evaluated next to ``test``."""
    augment: Any = None
    """Training-only augmentation of input batches (``data.audio.augment``), or ``None``."""

    def trainer(self, out_dir: str | Path | None = None, *, progress: bool = True, resume: bool = False,
                **engine_options: Any) -> Trainer:
        c = self.config
        labelled = self.source if self.method.inputs.get("source") else None
        batch_size = min(c.data.batch_size, len(labelled)) if labelled is not None else c.data.batch_size
        return Trainer(
            self.method, self.source, self.target if "target" in self.method.inputs else None,
            eval_sets=({"target_test": self.test} if self.test is not None else {}) | self.extra_tests
            if self.method.classifies() else {},
            transform=self.transform,
            train=c.train, optim=c.optim, batch_size=batch_size, eval_batch_size=c.data.eval_batch_size,
            seed=c.seed, out_dir=out_dir, backbone_lr_scale=c.model.backbone_lr_scale,
            layer_lr_decay=c.model.layer_lr_decay, progress=progress, resume=resume,
            bucket=c.data.bucket_by_length, augment=self.augment, **engine_options,
        )


def method_config(config: Config) -> MethodConfig:
    """The config's method section validated against its method's own ``Config`` (defaults filled in).
    A missing or unknown name, or a bad hyper-parameter, is a :class:`ConfigError` that names the key."""
    if "name" not in config.method:
        raise ConfigError(f"method.name is missing. Valid methods: {', '.join(METHODS.names())}")
    try:
        cls = METHODS.get(str(config.method["name"]))
    except TransferlabError as exc:
        raise ConfigError(f"method.name: {exc}") from None
    return make_config(cls.Config, config.method)


def resolved_config(config: Config) -> dict[str, Any]:
    """The fully resolved config, as a run saves it: every default filled in, the method's included. A run saves its
    experiment's config, where :func:`build` has replaced ``data.mean``/``data.std: train`` by the numbers
    (:func:`with_train_statistics`), so a saved run reproduces its input transform without its training data."""
    return {**config.model_dump(mode="json"), "method": method_config(config).model_dump(mode="json")}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None) -> Config:
    """:func:`transferlab.config.load_config` for configs that are to be run: the method section is
    validated too, so a bad one is reported now rather than when the experiment is built.

    When ``--set method.name=OTHER`` switches the method, the keys of the file's method section that the
    other method does not take (DANN's ``trade_off`` when switching to ``source_only``) are dropped, with a
    one-line notice on standard error naming them; keys given with ``--set`` are kept (and validated)."""
    overrides = list(overrides or [])
    data = schema.read_yaml(path) if path is not None else copy.deepcopy(raw or {})
    data = _drop_foreign_method_keys(data, overrides)
    config = schema.validate(schema.apply_overrides(data, overrides))
    method_config(config)
    return config


def _drop_foreign_method_keys(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` without the method keys the method chosen by a ``--set method.name=...`` does not take."""
    parsed = [schema.parse_override(text) for text in overrides]
    names = [value for parts, value in parsed if parts == ["method", "name"]]
    section = data.get("method")
    if not names or not isinstance(section, dict) or not isinstance(names[-1], str) or names[-1] not in METHODS:
        return data
    new = names[-1]
    if section.get("name") == new:
        return data
    explicit = {parts[1] for parts, _ in parsed if len(parts) >= 2 and parts[0] == "method"}
    fields = METHODS.get(new).Config.model_fields
    foreign = [key for key in section if key not in fields and key not in explicit]
    if not foreign:
        return data
    print(f"note: method.name={new}: dropped {section.get('name', 'the file')}'s method "
          f"key{'s' if len(foreign) > 1 else ''} {', '.join(foreign)} from the config ({new} does not take "
          f"{'them' if len(foreign) > 1 else 'it'})", file=sys.stderr)
    return {**data, "method": {k: v for k, v in section.items() if k not in foreign}}


def _resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved config.json as this version resolves it (options added since then at their defaults)."""
    try:
        return resolved_config(schema.validate(raw))
    except ConfigError:
        return raw


def load_domain(domain: DomainConfig, root: str | Path | None, seed: int) -> ArrayDataset:
    """One configured set: a registered dataset's part, optionally restricted to some classes and to
    ``labels_per_class`` samples of each (drawn by ``seed``)."""
    dataset = tl_data.load(domain.name, domain.part, root)
    if domain.where or domain.exclude:
        dataset = select_rows(dataset, domain.where, domain.exclude)
    if domain.fold is not None:
        from .data.splits import select_fold

        f = domain.fold
        dataset = select_fold(dataset, f.k, f.index, f.role, f.seed, f.group, f.validation)
    if domain.translate is not None:
        dataset = translate_set(dataset, domain.translate, root)
    if domain.perturb:
        dataset = perturb_set(dataset, domain.perturb, seed)
    if domain.classes is not None:
        dataset = select_classes(dataset, domain.classes)
    if domain.labels_per_class is not None:
        dataset = labels_per_class(dataset, domain.labels_per_class, seed)
    return dataset


def perturb_set(dataset, steps: list, seed: int):
    """Every utterance of an audio set transformed once (``data.<set>.perturb``), parameters drawn by ``seed``."""
    from .data.samples import Ragged, SequenceDataset

    AudioAugment = _audio_augment()
    if not isinstance(dataset, SequenceDataset) or dataset.kind != "audio":
        raise ConfigError(f"perturb: {dataset.name}/{dataset.part} is not an audio set")
    augment = AudioAugment(list(steps), int(dataset.sample_rate))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        rows = []
        for i in range(len(dataset)):
            row = dataset.data.row(i).float().unsqueeze(0)
            out = augment({"input_values": row, "attention_mask": torch.ones_like(row, dtype=torch.long)})
            rows.append(out["input_values"][0, : int(out["attention_mask"][0].sum())].numpy())
    finally:
        torch.random.set_rng_state(state)
    label = "+".join(f"{s.name}{s.range[0]:g}" + (f"-{s.range[1]:g}" if s.range[1] != s.range[0] else "") for s in steps)
    return dataclasses.replace(dataset, data=Ragged.from_rows(rows, torch.float32), part=f"{dataset.part}@{label}")


def translate_set(dataset, cfg: TranslateConfig, root: str | Path | None = None):
    """The text set with every sentence machine-translated (cached on disk), tagged with the target language."""
    from .data.samples import TextDataset
    from .data.translate import cached, make_translator

    if not isinstance(dataset, TextDataset):
        raise ConfigError(f"translate: {dataset.name}/{dataset.part} holds {dataset.kind} data; only text sets can "
                          f"be translated")
    source = cfg.source
    if source is None and dataset.languages and len(set(dataset.languages)) == 1:
        source = dataset.languages[0]
    if source is None and "_" in dataset.part:
        source = dataset.part.split("_", 1)[0]
    if source is None:
        raise ConfigError(f"translate: the language of {dataset.name}/{dataset.part} is unknown; set "
                          f"translate.source (e.g. es)")
    if source == cfg.target:
        return dataset
    translator = cached(make_translator(cfg.backend, source, cfg.target, data_root=tl_data.data_root(root)))
    texts = translator.translate(list(dataset.texts))
    return dataclasses.replace(dataset, texts=texts, languages=[cfg.target] * len(texts),
                               part=f"{dataset.part}@{cfg.backend.split(':', 1)[0]}")


def eval_label(domain: DomainConfig) -> str:
    """The key an evaluation set's metrics are logged under."""
    if domain.label:
        return domain.label
    return domain.part + (f"@{domain.translate.backend.split(':', 1)[0]}" if domain.translate else "")


def default_test(target: DomainConfig, root: str | Path | None = None) -> DomainConfig:
    """Where a run without ``data.test`` is evaluated: the target dataset's ``test`` split when it has one; for parts
    named ``<domain>_train`` (Amazon reviews, OpeNER languages), that domain's ``<domain>_test``; otherwise, for sets
    whose parts are domains (Office-Caltech), the target domain itself, the transductive protocol of the DANN and
    TLlib benchmarks (its labels are used for evaluation only)."""
    parts = tl_data.lookup(target.name, root).parts
    if target.part.endswith("_train") and target.part.removesuffix("_train") + "_test" in parts:
        part = target.part.removesuffix("_train") + "_test"
    else:
        part = "test" if "test" in parts or target.part not in parts else target.part
    return DomainConfig(name=target.name, part=part, classes=target.classes)


def load_encoder_weights(encoder: torch.nn.Module, source: str | Path, layers: int | None = None, *,
                         stages: list[str] | None = None, input_conv: str = "sum") -> list[str]:
    """Initialise ``encoder`` from a run folder's (or a ``model.safetensors`` file's) ``encoder.*`` weights: all of
    them, those of its first ``layers`` layers, or those of the named ``stages`` (:mod:`transferlab.models.surgery`).
    A convolution whose weights were made for 3 input channels and now takes 1 (or the reverse) is adapted
    (``input_conv``); returns the adapted keys."""
    from .models.surgery import adapt_input_channels, stage_state

    path = Path(source)
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"model.encoder_init: {source} is neither a finished transferlab run folder nor a "
                              f"safetensors file (a run folder holds model.safetensors once training finished)")
    state = {k.removeprefix("encoder."): v for k, v in load_tensors(path).items() if k.startswith("encoder.")}
    if not state:
        raise CheckpointError(f"{path} holds no encoder.* weights; is it a transferlab run's model?")
    state, adapted = adapt_input_channels(encoder, state, input_conv)
    original = {k: v.clone() for k, v in encoder.state_dict().items()}
    try:
        encoder.load_state_dict(state)  # strict: the architectures must match, even when copying a few layers
        if layers is not None:
            encoder.load_state_dict({**original, **layer_state(encoder, state, layers)})
        elif stages is not None:
            encoder.load_state_dict({**original, **stage_state(encoder, state, stages)})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its encoder does not match this config's model ({state_dict_mismatch(exc)}); "
                              f"use the pretraining run's model.backbone and model.bottleneck_dim") from None
    return adapted


def _check_images(sets: list[ArrayDataset], config: Config) -> int:
    """The input size the backbone sees; refuses mismatched sizes when no resize is configured."""
    if config.data.image_size is not None:
        return config.data.image_size
    sizes = {d.name: tuple(d.x.shape[1:3]) for d in sets}
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"the images differ in size ({sizes}); set data.image_size to resize them all"
        )
    height, width = next(iter(sizes.values()))
    if height != width:
        raise DataError(f"images are {height}x{width}; set data.image_size to a square size")
    return height


def _check_input(encoder, source, transform, config: Config) -> None:
    """Forward two samples once, so a backbone/input mismatch is reported before training starts."""
    x = source.batch(torch.arange(min(2, len(source))))
    x = transform(x) if transform is not None else x
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            encoder(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        shape = {k: tuple(v.shape[1:]) for k, v in x.items()} if isinstance(x, dict) else tuple(x.shape[1:])
        raise DataError(
            f"backbone '{config.model.backbone}' cannot take this data's input {shape} "
            f"({_input_settings(config, source)}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    finally:
        encoder.train(was_training)


def _input_settings(config: Config, source) -> str:
    kind = getattr(source, "kind", "image" if isinstance(source, ArrayDataset) and source.x.dim() >= 3 else "features")
    if kind == "text":
        return f"text tokenised by {config.data.text.tokenizer or config.model.backbone}"
    if kind == "audio":
        return f"audio at {config.data.audio.sample_rate} Hz"
    if kind == "features":
        return "feature vectors"
    return f"data.channels={config.data.channels}, data.image_size={config.data.image_size}"


def make_modality(config: Config, kind: str, sets: list) -> tl_data.Modality:
    """The data section's settings for ``kind`` as a :class:`~transferlab.data.modality.Modality`. Image statistics
    given as ``train`` must have been computed first (:func:`with_train_statistics`, which :func:`build` calls)."""
    c = config
    if kind != "image" and (c.data.intensity is not None or _wants_train_statistics(c)):
        option = "data.intensity" if c.data.intensity is not None else "data.mean/data.std: train"
        raise ConfigError(f"{option} is for images; this run's data is {kind}")
    if kind == "features":
        dims = {f"{d.name}/{d.part}": feature_dim(d) for d in sets}
        if len(set(dims.values())) > 1:
            raise DataError(f"feature dimensions differ: {dims}")
        return tl_data.Features(c.data.features.normalize)
    if kind == "text":
        name = c.data.text.tokenizer
        if name is None:
            if not c.model.backbone.startswith("hf:"):
                raise ConfigError(f"text data needs a tokenizer: set data.text.tokenizer, or use an hf: backbone "
                                  f"(model.backbone: hf:<name or folder>) whose tokenizer is used; model.backbone is "
                                  f"'{c.model.backbone}'")
            name = c.model.backbone.split(":", 1)[1]
        return tl_data.Text(tl_data.load_tokenizer(name), c.data.text.max_length, c.data.text.cache)
    if kind == "audio":
        return tl_data.Audio(c.data.audio.sample_rate, c.data.audio.normalize, c.data.audio.max_seconds)
    if _wants_train_statistics(c):
        raise ConfigError("data.mean/data.std: train are computed from the source training set when a run is built; "
                          "here no training set is loaded, so give the numbers (a finished run's config.json holds "
                          "them)")
    size = _check_images(sets, c)
    channels = c.data.channels
    for key in ("mean", "std"):
        values = getattr(c.data, key)
        if len(values) not in (1, channels):
            raise ConfigError(f"data.{key} has {len(values)} values; give 1 or data.channels={channels}")
    intensity = c.data.intensity
    window = tuple(intensity.window) if intensity is not None and intensity.window is not None else None
    percentile = tuple(intensity.percentile) if intensity is not None and intensity.percentile is not None else None
    expand = lambda v: tuple(v) * (channels if len(v) == 1 else 1)  # noqa: E731
    return tl_data.Image(channels, size, expand(c.data.mean), expand(c.data.std), window, percentile)


def with_train_statistics(config: Config, train_set, sets: list) -> Config:
    """``config`` with ``data.mean``/``data.std: train`` replaced by the per-channel statistics of ``train_set`` (the
    source training set) as the image transform delivers it (intensity mapping, resize, channels; not normalised):
    the config a run is trained, saved and evaluated with. Evaluation sets are never read."""
    if not _wants_train_statistics(config):
        return config
    unscaled = config.model_copy(update={"data": config.data.model_copy(update={"mean": [0.0], "std": [1.0]})})
    modality = make_modality(unscaled, "image", sets)
    mean, std = train_statistics(train_set, modality.transform, eval_device(config))
    data = config.data.model_copy(update={"mean": mean if config.data.mean == "train" else config.data.mean,
                                          "std": std if config.data.std == "train" else config.data.std})
    return config.model_copy(update={"data": data})


def same_config(saved: dict[str, Any], config: Config) -> bool:
    """Whether a run folder's saved ``config.json`` (``saved``) is ``config``'s run: equal once resolved, where numbers
    saved for ``data.mean``/``data.std`` match ``train`` (they are what ``train`` computed from the same data, and
    knowing them would mean loading the training set)."""
    try:
        previous = _resolved(saved)
    except (TransferlabError, ValueError):  # unreadable, or a config this version no longer takes
        return False
    current = resolved_config(config)
    for key in ("mean", "std"):
        if current["data"].get(key) == "train" and isinstance(previous.get("data", {}).get(key), list):
            previous["data"][key] = "train"
    return previous == current

def _wants_train_statistics(config: Config) -> bool:
    return config.data.mean == "train" or config.data.std == "train"


def train_statistics(dataset, transform, device: torch.device | str = "cpu", chunk_elements: int = 1 << 22,
                     ) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation of ``transform``'s output over every image of
    ``dataset``, streamed through ``device`` in chunks of about ``chunk_elements`` output values and combined in
    float64 (Chan et al.'s pairwise update), rounded to 6 significant digits: the numbers a run records and uses."""
    n = len(dataset)
    if n == 0:
        raise DataError(f"{dataset.name}/{dataset.part} is empty: no statistics for data.mean/data.std: train")
    per_image = transform(dataset.x[:1].to(device))[0].numel()
    step = max(1, chunk_elements // per_image)
    count, mean, m2 = 0, None, None
    with torch.no_grad():
        for start in range(0, n, step):
            y = transform(dataset.x[start:start + step].to(device)).double()
            k = y.numel() // y.shape[1]
            chunk_mean = y.mean(dim=(0, 2, 3))
            chunk_m2 = (y - chunk_mean.view(1, -1, 1, 1)).square_().sum(dim=(0, 2, 3))
            if mean is None:
                count, mean, m2 = k, chunk_mean, chunk_m2
            else:
                delta, total = chunk_mean - mean, count + k
                mean = mean + delta * (k / total)
                m2 = m2 + chunk_m2 + delta.square() * (count * k / total)
                count = total
    means = [float(f"{v:.6g}") for v in mean.tolist()]
    stds = [float(f"{v:.6g}") for v in (m2 / count).sqrt().tolist()]
    if min(stds) <= 0:
        raise DataError(f"data.std: train: the images of {dataset.name}/{dataset.part} are constant after the input "
                        f"transform (standard deviation {stds}); give data.std as numbers")
    return means, stds


def build(config: Config, data_root: str | Path | None = None) -> Experiment:
    """Load the datasets, prepare them for their kind (:func:`make_modality`) and build the encoder and method."""
    c = config
    root = data_root or c.data.root
    method_cfg = method_config(c)
    method_cls = METHODS.get(method_cfg.name)
    source = load_domain(c.data.source, root, c.seed)
    target = load_domain(c.data.target, root, c.seed) if c.data.target is not None else None
    if "target" in method_cls.inputs and target is None:
        raise ConfigError(f"method {method_cfg.name} adapts to a target domain: set data.target")
    if (target is not None and not method_cls.inputs.get("target") and c.data.source.classes is not None
            and c.data.target.classes is None and target.num_classes != source.num_classes):
        # a label view of the source (classes: [[0, 1], [2, 3]]) is not applied to the unlabelled target, which keeps
        # all its samples (selecting them would read its labels): its labels are dropped, never used
        target = target.with_labels(None, source.num_classes, source.classes)
    test_cfg = c.data.test or (default_test(c.data.target, root) if c.data.target is not None else None)
    if test_cfg is not None and test_cfg.classes is None:
        test_cfg = test_cfg.model_copy(update={"classes": c.data.source.classes})  # the source's label space
    test = load_domain(test_cfg, root, c.seed) if test_cfg is not None else None
    # data.eval sets without their own classes take the source's (one label space)
    extra = {eval_label(d): load_domain(d if d.classes is not None else d.model_copy(update={"classes": c.data.source.classes}),
                                        root, c.seed) for d in c.data.eval}
    if len(extra) != len(c.data.eval) or "target_test" in extra:
        raise ConfigError("data.eval: two sets have the same label (or 'target_test'); give each a distinct label")
    for role, dataset in (("target", target), ("test", test), *(("data.eval", d) for d in extra.values())):
        if dataset is not None and len(dataset) == 0:
            raise DataError(f"{role} data is empty ({dataset.name}/{dataset.part}): nothing to adapt to or evaluate on")
    labelled = [d for d in (source if method_cls.inputs.get("source") else None, target, test, *extra.values())
                if d is not None and d.y is not None]
    if (c.task.name == "ctc") != (method_cls.task == "ctc"):
        raise ConfigError(f"task.name is {c.task.name}, but method {method_cfg.name} is a {method_cls.task} method; "
                          f"use method.name: ctc with task.name: ctc (speech recognition), or another method without")
    if c.task.name == "ctc":
        labelled = []  # transcripts, not class labels, are what must agree (one vocabulary)
    if len({d.num_classes for d in labelled}) > 1:
        raise DataError(
            "label spaces differ: " + ", ".join(f"{d.name}/{d.part} has {d.num_classes} classes" for d in labelled)
            + "; training and evaluation need one label space"
        )
    num_classes = labelled[0].num_classes if labelled else source.num_classes
    kinds = {f"{d.name}/{d.part}": tl_data.lookup(d.name, root).kind
             for d in (source, target, test, *extra.values()) if d is not None}
    if len(set(kinds.values())) > 1:
        raise DataError(f"the sets are of different kinds ({kinds}); one model takes one kind of input")
    kind = next(iter(kinds.values()))
    sets = [d for d in (source, target, test, *extra.values()) if d is not None]
    if kind == "image":
        c = with_train_statistics(c, source, sets)  # the numbers, in the config the run saves
    modality = make_modality(c, kind, sets)
    source, target, test = (modality.prepare(d) if d is not None else None for d in (source, target, test))
    extra = {label: modality.prepare(d) for label, d in extra.items()}
    task = None
    if c.task.name == "ctc":
        task = ctc_task(c, [source, *(d for d in (target, test, *extra.values()) if d is not None)])
        source, target, test = (with_ctc_targets(d, c, task) if d is not None else None for d in (source, target, test))
        extra = {label: with_ctc_targets(d, c, task) for label, d in extra.items()}
        num_classes = len(task.vocab)
    method = _make_method(c, method_cfg, kind, modality, source, num_classes, task=task)
    return Experiment(c, method, source, target, test, modality.transform, modality, extra,
                      augment=make_augment(c, kind, modality))


def ctc_task(config: Config, sets: list) -> Any:
    """The CTC vocabulary (``task.vocab``, or the characters of the first set's normalised transcripts: the training
    set) and the speaker-group names (``task.group``: the values of that column in any set, sorted)."""
    from .data.transcripts import CTCVocabulary, normalize_transcript, transcripts_of
    from .methods import CTCTask

    t = config.task
    for dataset in sets:
        if getattr(dataset, "kind", None) != "audio":
            raise ConfigError(f"task.name: ctc transcribes speech; {dataset.name}/{dataset.part} holds "
                              f"{getattr(dataset, 'kind', 'image')} data")
    if t.vocab is not None:
        vocab = CTCVocabulary.load(t.vocab)
    else:
        norm = t.normalize.model_dump()
        vocab = CTCVocabulary.build(normalize_transcript(text, **norm) for text in transcripts_of(sets[0], t.text))
    groups: list[str] = []
    if t.group is not None:
        values: set[str] = set()
        for dataset in sets:
            column = dataset.extras.get(t.group)
            if column is None or len(column) != len(dataset):
                raise DataError(f"task.group: {dataset.name}/{dataset.part} has no per-utterance column '{t.group}'")
            values |= {str(v) for v in column.tolist()}
        groups = sorted(values)
    return CTCTask(vocab, groups)


def with_ctc_targets(dataset, config: Config, task: Any):
    """``dataset`` with CTC targets: ``labels`` (the normalised transcript's character ids) and, with ``task.group``,
    ``group`` (the index of each utterance's group in ``task.groups``)."""
    from .data.samples import Ragged
    from .data.transcripts import normalize_transcript, transcripts_of

    t = config.task
    norm = t.normalize.model_dump()
    ids = [task.vocab.encode(normalize_transcript(text, **norm)) for text in transcripts_of(dataset, t.text)]
    targets = {"labels": Ragged.from_rows([torch.tensor(row, dtype=torch.long) for row in ids], torch.long)}
    column = dataset.extras.get(t.group) if t.group is not None else None
    if column is not None and {str(v) for v in column.tolist()} <= set(task.groups):
        index = {name: i for i, name in enumerate(task.groups)}
        targets["group"] = torch.tensor([index[str(v)] for v in column.tolist()], dtype=torch.long)
    # (a set evaluated later whose groups the run never saw gets no group target: its utterances are routed by the
    # predicted group, and WER is reported for the set as a whole)
    return dataclasses.replace(dataset, targets=targets)


def _audio_augment():
    try:
        from .data.audio_augment import AudioAugment
    except ImportError as exc:
        raise ConfigError(f"audio augmentation needs torchaudio ({exc}): pip install 'transferlab[speech]'") from None
    return AudioAugment


def make_augment(config: Config, kind: str, modality: tl_data.Modality | None = None) -> Any:
    """The training-only augmentation the data section asks for (``data.augment`` for images: Kornia views of
    ``modality``'s normalised batches; ``data.audio.augment``), or ``None``."""
    preset = config.data.augment
    if preset is not None:
        if kind != "image":
            raise ConfigError(f"data.augment: {preset} augments images; this run's data is {kind}"
                              + (" (use data.audio.augment)" if kind == "audio" else ""))
        if modality is None:
            raise ValueError("make_augment needs the run's image modality for data.augment")
        try:
            from .data.augment import Views

            spec = modality.input_spec(None)
            return Views(preset, spec.shape, spec.mean, spec.std)
        except ImportError as exc:
            raise ConfigError(f"data.augment needs kornia ({exc}): pip install kornia") from None
    steps = config.data.audio.augment
    if kind != "audio" or not steps:
        return None
    AudioAugment = _audio_augment()
    rate = config.data.audio.sample_rate
    return AudioAugment.child_preset(rate) if steps == "child" else AudioAugment(list(steps), rate)


def _make_method(c: Config, method_cfg: MethodConfig, kind: str, modality: tl_data.Modality, probe,
                 num_classes: int, initialise: bool = True, task: Any = None) -> Method:
    """The encoder and method a config describes, for inputs like ``probe`` (forwarded once, so a backbone/input
    mismatch is reported now). ``initialise=False`` skips pretrained and ``encoder_init`` weights (a saved run's
    final weights replace them all)."""
    spec = modality.input_spec(probe)
    torch.manual_seed(c.seed)  # identical initial weights on every rank
    if kind in ("text", "audio") and not c.model.backbone.startswith("hf:"):
        raise ConfigError(f"{kind} data needs a sequence encoder: set model.backbone: hf:<hub name or local folder> "
                          f"(model.backbone is '{c.model.backbone}')")
    backbone = create_backbone(
        c.model.backbone, in_channels=c.data.channels, image_size=spec.shape[-1] if kind == "image" else 224,
        in_features=spec.shape[0] if kind == "features" else None,
        pretrained=c.model.pretrained if initialise else False,
        mlp=c.model.mlp.model_dump(), hf=c.model.hf.model_dump())
    encoder = Encoder(backbone, c.model.bottleneck_dim)
    if c.model.init_layers is not None and c.model.init_stages is not None:
        raise ConfigError("model.init_layers and model.init_stages both choose what to copy; set one")
    if initialise and c.model.encoder_init is not None:
        load_encoder_weights(encoder, c.model.encoder_init, c.model.init_layers, input_conv=c.model.input_conv,
                             stages=surgery.resolve(encoder, c.model.init_stages, "model.init_stages")
                             if c.model.init_stages is not None else None)
    elif initialise and (c.model.init_layers is not None or c.model.init_stages is not None):
        raise ConfigError("model.init_layers / init_stages copy parts of model.encoder_init; set that too")
    freeze_layers(encoder, c.model.freeze_layers)
    frozen = surgery.resolve(encoder, c.model.freeze, "model.freeze")
    surgery.freeze_stages(encoder, frozen)
    if c.model.stage_lr:
        encoder.stage_scales = surgery.stage_lr_scales(encoder, c.model.stage_lr)
    _check_input(encoder, probe, modality.transform, c)
    options = {"task": task} if task is not None else {}
    method = METHODS.get(method_cfg.name)(encoder, num_classes, input_spec=spec, **options,
                                          **method_cfg.model_dump(exclude={"name"}))
    if initialise and task is not None and c.model.backbone.startswith("hf:") and not c.model.hf.from_config:
        load_ctc_head(method, c.model.backbone.split(":", 1)[1])
    for name in frozen:  # BatchNorm statistics of frozen stages stay fixed; gradual unfreezing releases them
        for module in surgery.stage_modules(encoder, [name]):
            method.hold_eval(module)
            if name in c.model.unfreeze:
                method.unfreeze_at(module, c.model.unfreeze[name])
    late = sorted(set(c.model.unfreeze) - set(frozen))
    if late:
        raise ConfigError(f"model.unfreeze names {', '.join(late)}, which model.freeze does not freeze "
                          f"(frozen: {', '.join(frozen) or 'none'}); a stage must be frozen to be unfrozen later")
    if c.model.unfreeze and c.train.cuda_graph:
        raise ConfigError("model.unfreeze changes what trains during the run, which a captured CUDA graph cannot; "
                          "set train.cuda_graph: false")
    if c.model.adapter is not None:
        add_adapters(method, c.model.adapter)
    if initialise and c.model.init is not None:
        load_method_weights(method, c.model.init)
    return method


def load_ctc_head(method: Method, checkpoint: str) -> bool:
    """Start the CTC heads from a ``...ForCTC`` checkpoint's ``lm_head`` when the run uses that checkpoint's vocabulary
    (``task.vocab`` = the checkpoint): fine-tuning a CTC model then starts from the recogniser it is, not from a new
    head. Returns whether it did; a checkpoint without a CTC head (a pretrained-only wav2vec2) leaves the new heads."""
    from safetensors import safe_open

    try:
        from transformers.utils import cached_file

        path = cached_file(checkpoint, "model.safetensors", _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return False
    if not path:
        return False
    with safe_open(path, "pt") as weights:
        if "lm_head.weight" not in weights.keys():
            return False
        weight, bias = weights.get_tensor("lm_head.weight"), weights.get_tensor("lm_head.bias")
    from .data.transcripts import CTCVocabulary

    try:
        same = CTCVocabulary.load(checkpoint).tokens == method.vocab.tokens
    except ConfigError:  # no vocab.json with the checkpoint
        same = False
    if not same or tuple(weight.shape) != tuple(method.heads[0].weight.shape):
        return False  # another vocabulary (task.vocab is not the checkpoint's): the heads start new
    with torch.no_grad():
        for head in method.heads:
            head.weight.copy_(weight)
            head.bias.copy_(bias)
    return True


def load_method_weights(method: Method, source: str | Path) -> None:
    """Initialise the whole method (encoder and heads) from a finished run's ``model.safetensors`` (``model.init``);
    only adapter weights may be missing from it (new adapters keep their identity initialisation)."""
    path = Path(source)
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"model.init: {source} is neither a finished transferlab run folder nor a safetensors "
                              f"file (a run folder holds model.safetensors once training finished)")
    try:
        missing, unexpected = method.load_state_dict(load_tensors(path), strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"model.init: {path} does not match this config's model ({state_dict_mismatch(exc)}); "
                              f"use the same model.backbone, method and task vocabulary (task.vocab: the run folder)"
                              ) from None
    missing = [k for k in missing if ".adapters." not in f".{k}"]
    if missing or unexpected:
        raise CheckpointError(f"model.init: {path} does not match this config's model (missing {missing[:5]}, "
                              f"unexpected {list(unexpected)[:5]}); use the run's model.backbone and method")


def add_adapters(method: Method, cfg: schema.AdapterConfig) -> None:
    """Residual adapters in the method's encoder (``model.adapter``), and what trains: ``adapters`` freezes every
    other parameter and keeps the method's BatchNorm statistics fixed; ``adapters+heads`` freezes the encoder (its
    BatchNorm statistics too); ``all`` freezes nothing."""
    from .models import insert_adapters

    adapters = insert_adapters(method.encoder, cfg.bottleneck, cfg.layers)
    if cfg.train == "all":
        return
    frozen = method if cfg.train == "adapters" else method.encoder
    frozen.requires_grad_(False)
    adapters.requires_grad_(True)
    method.hold_eval(frozen, except_=adapters)



def train(config: Config, out_dir: str | Path | None, *, data_root: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, echo: bool = False, stop_at: int | None = None) -> dict[str, Any]:
    """Build and train; with ``out_dir`` the run is saved (config, metrics, checkpoints, final model, result).
    ``echo`` prints each logged record as a line on standard error (for logs without a progress bar); ``stop_at``
    ends training at that step with a resumable checkpoint (what a crash leaves; for tests)."""
    experiment = build(config, data_root)  # data and model problems surface before anything is written
    source, target = config.data.source, config.data.target
    if target is None:
        task = source.name
    elif target.name == source.name:  # domains of one dataset (OpeNER languages, Amazon categories, Office domains)
        task = f"{source.name}:{source.part}->{target.part}"
    else:
        task = f"{source.name}->{target.name}"
    extra = {"method": method_config(config).name, "task": task}  # in result.json too
    if experiment.test is not None:
        extra["test_set"] = f"{experiment.test.name}/{experiment.test.part}"
    trainer = experiment.trainer(out_dir, progress=progress, echo=echo, result_extra=extra)
    if out_dir is not None:
        trainer.prepare_run(resolved_config(experiment.config), resume=resume, overwrite=overwrite,
                            normalize=_resolved)
        vocab = getattr(experiment.method, "vocab", None)
        if vocab is not None and trainer.is_main:  # the CTC run's characters (a transformers tokenizer) and groups
            vocab.save(out_dir)
            atomic_write_json(Path(out_dir) / "task.json", {"task": "ctc", "groups": experiment.method.groups})
    result = trainer.fit(stop_at)
    return {**extra, **result}


def read_run_config(run_dir: str | Path, *, finished: bool = True) -> Config:
    """A run folder's config (validated); ``finished``: the run must also hold its final ``model.safetensors``."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a transferlab run (no config.json)")
    if finished and not (run_dir / "model.safetensors").is_file():
        raise CheckpointError(f"{run_dir} has no final model.safetensors: the run did not finish (resume it)")
    return load_config(raw=read_json(config_path, "; it is not a usable run folder"))


def _read_run(run_dir: str | Path) -> tuple[Config, Path]:
    """A finished run's config (validated) and final weights file."""
    return read_run_config(run_dir), Path(run_dir) / "model.safetensors"


def load_run(run_dir: str | Path, data_root: str | Path | None = None) -> Experiment:
    """Rebuild a saved run's experiment (every set it was trained and evaluated on) with its final weights loaded.
    To evaluate or predict, :func:`load_for_eval` loads only the set it needs."""
    config, weights = _read_run(run_dir)
    experiment = build(config, data_root)
    try:
        experiment.method.load_state_dict(load_tensors(weights))
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not match the run's model: {state_dict_mismatch(exc)}") from None
    return experiment


def _run_test_set(config: Config, root: str | Path | None) -> DomainConfig | None:
    """Where a run is evaluated (what :func:`build` loads as ``test``)."""
    c = config
    return c.data.test or (default_test(c.data.target, root) if c.data.target is not None else None)


def load_for_eval(run_dir: str | Path, data_root: str | Path | None = None, on: DomainConfig | None = None) -> Experiment:
    """A saved run's final model with only the one set it is evaluated on or predicts for: the run's test set, or
    ``on`` (a part of any registered or imported dataset of the kind the model takes), prepared as the run prepared
    its data, as the experiment's ``test``. The training data is never loaded (``source`` and ``target`` are
    ``None``), so a missing or damaged training split does not stop an evaluation. Pretrained and ``encoder_init``
    weights are not loaded either: the run's final weights replace them. ``transferlab eval|predict`` use it."""
    c, weights = _read_run(run_dir)
    root = data_root or c.data.root
    method_cfg = method_config(c)
    if not METHODS.get(method_cfg.name).classifies():
        raise TransferlabError(f"{run_dir} is a pretraining run ({method_cfg.name}) with nothing to classify; evaluate "
                               f"its transfer with `transferlab probe {run_dir} --labels-per-class K`")
    own = _run_test_set(c, root)
    reference = own or c.data.source  # the run's own data: its kind, label space and (stored) image size
    ref_info = tl_data.lookup(reference.name, root)
    kind = ref_info.kind
    wanted = on or own
    if wanted is None:
        raise TransferlabError(f"{run_dir} has no test set (its config sets neither data.test nor data.target); "
                               f"evaluate it on a labelled set with --on DATASET[:PART]")
    on_kind = tl_data.lookup(wanted.name, root).kind
    if on_kind != kind:
        raise DataError(f"{wanted.name} holds {on_kind} data, but the run's model takes {kind} input "
                        f"(it was trained on {reference.name}); choose a dataset of kind {kind}")
    dataset = load_domain(wanted, root, c.seed)
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}/{dataset.part} is empty: nothing to evaluate or predict")
    if on is None:
        num_classes = dataset.num_classes
    else:
        num_classes = len(reference.classes) if reference.classes else ref_info.num_classes
    sets = [dataset]
    if on is not None and kind == "image" and c.data.image_size is None:
        # the model's input size is the stored size of the run's own images: the set is resized to it
        sets = [load_domain(reference.model_copy(update={"labels_per_class": None}), root, c.seed)]
    modality = make_modality(c, kind, sets)
    dataset = modality.prepare(dataset)
    task = None
    if c.task.name == "ctc":  # the run's own characters (saved next to its weights) and speaker groups
        task = ctc_task(c.model_copy(update={"task": c.task.model_copy(update={"vocab": str(Path(run_dir)),
                                                                               "group": None})}), [dataset])
        task.groups = _run_groups(run_dir)
        if c.task.text == "label" or c.task.text in dataset.extras:  # transcripts to score against
            dataset = with_ctc_targets(dataset, c, task)
        num_classes = len(task.vocab)
    method = _make_method(c, method_cfg, kind, modality, dataset, num_classes, initialise=False, task=task)
    try:
        method.load_state_dict(load_tensors(weights))
    except RuntimeError as exc:
        if on is None:
            raise CheckpointError(f"{weights} does not match the run's model: {state_dict_mismatch(exc)}") from None
        raise DataError(f"{dataset.name}/{dataset.part} does not fit the run's model (its input differs from the "
                        f"data the run was trained on): {state_dict_mismatch(exc)}") from None
    return Experiment(c, method, None, None, dataset, modality.transform, modality)


def _run_groups(run_dir: str | Path) -> list[str]:
    """The speaker groups a CTC run was built with (its group heads and classifier index them), from its task.json."""
    path = Path(run_dir) / "task.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("groups", []))


def eval_device(config: Config) -> torch.device:
    cuda = config.train.device != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if cuda else "cpu")


@torch.no_grad()
def predict_logits(experiment: Experiment, dataset=None, device: torch.device | str | None = None) -> torch.Tensor:
    """Class logits ``(N, num_classes)`` (float32, on the CPU, in the set's order) of the experiment's model on
    ``dataset`` (default: its ``test`` set), which must be prepared by ``experiment.modality``. Temperature scaling and
    the NLL of confident predictions need logits: the log of float32 probabilities underflows."""
    dataset = experiment.test if dataset is None else dataset
    c, method = experiment.config, experiment.method
    device = torch.device(device) if device is not None else eval_device(c)
    method.to(device)
    if getattr(experiment.transform, "channels_last", False):
        method.to(memory_format=torch.channels_last)
    was_training = method.training
    method.eval()
    bf16 = c.train.precision == "bf16"
    out = []
    try:
        for batch in tl_data.iterate_batches(dataset, c.data.eval_batch_size, device=device,
                                             transform=experiment.transform):
            with torch.autocast(device.type, dtype=torch.bfloat16 if bf16 else torch.float32, enabled=bf16):
                logits = method.predict_on(batch.x, "target")
            out.append(logits.float().cpu())
    finally:
        method.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, method.num_classes)


@torch.no_grad()
def predict_proba(experiment: Experiment, dataset=None, device: torch.device | str | None = None) -> torch.Tensor:
    """Class probabilities ``(N, num_classes)`` (float32, on the CPU, in the set's order): the softmax of
    :func:`predict_logits`."""
    return torch.softmax(predict_logits(experiment, dataset, device), dim=1)


@torch.no_grad()
def transcribe_set(experiment, dataset=None, device: torch.device | str | None = None,
                   ) -> tuple[list[str], list[str] | None, list[str] | None]:
    """Greedy transcripts of a CTC run on ``dataset`` (default: its test set), in the set's order; the references
    (the normalised transcripts the run scores against; ``None`` without them) and the predicted group names
    (``None`` without a group classifier)."""
    dataset = experiment.test if dataset is None else dataset
    method, config = experiment.method, experiment.config
    if getattr(method, "task", None) != "ctc":
        raise TypeError(f"{method.hparams.name} does not transcribe speech (task.name is not ctc)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and config.train.device != "cpu" else "cpu"))
    method.to(device)
    was_training = method.training
    method.eval()
    hypotheses: list[str] = []
    references: list[str] = []
    groups: list[str] = []
    try:
        for batch in tl_data.iterate_batches(dataset, config.data.eval_batch_size, device=device,
                                     transform=experiment.transform):
            texts, predicted = method.transcribe(batch.x, batch.targets.get("group"))
            hypotheses += texts
            if "labels" in batch.targets:
                labels, lengths = batch.targets["labels"].cpu(), batch.targets["labels_lengths"].cpu()
                references += [method.vocab.decode(labels[i, : int(n)].tolist()) for i, n in enumerate(lengths)]
            if predicted is not None:
                groups += [method.groups[int(g)] for g in predicted.cpu()]
    finally:
        method.train(was_training)
    return hypotheses, references if references else None, groups if groups else None


def evaluate_on(experiment: Experiment, dataset=None) -> dict[str, Any]:
    """Accuracy and macro-F1 (%), NLL, ECE and (two classes) AUC of the experiment's model on a labelled, prepared
    ``dataset`` (default: its ``test`` set), as ``Trainer.evaluate`` reports them; WER and CER (%) for a CTC run."""
    dataset = experiment.test if dataset is None else dataset
    if experiment.method.task == "ctc":
        from .engine.metrics import edit_counts, error_rates

        hypotheses, references, _ = transcribe_set(experiment, dataset)
        if references is None:
            raise DataError(f"{dataset.name}/{dataset.part} has no transcripts to score against")
        return {**error_rates(edit_counts(references, hypotheses)), "samples": len(dataset)}
    if dataset.y is None:
        raise DataError(f"{dataset.name}/{dataset.part} has no labels to evaluate against; "
                        f"use `transferlab predict` for its class probabilities")
    if dataset.num_classes != experiment.method.num_classes:
        raise DataError(f"{dataset.name}/{dataset.part} has {dataset.num_classes} classes, but the run's model "
                        f"predicts {experiment.method.num_classes}; accuracy needs one label space "
                        f"(`transferlab predict` gives its probabilities all the same)")
    from .engine.metrics import calibration_metrics, classification_metrics, confusion_matrix, prediction_stats

    logits, k = predict_logits(experiment, dataset), experiment.method.num_classes
    predicted, labels = logits.argmax(dim=1), dataset.y.cpu()
    confusion = confusion_matrix(labels, predicted, k)
    return {**classification_metrics(confusion), **calibration_metrics(prediction_stats(logits, labels, predicted), k),
            "samples": len(dataset)}
