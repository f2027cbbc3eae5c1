"""Command line: ``transferlab demo | train | pretrain | chain | probe | finetune | grid | cv | analyze | eval |
predict | datasets | crosslingual | speech | model | methods``.

Thin by design: parse arguments, validate the config, call the library. Every
:class:`~transferlab.errors.TransferlabError` is printed as one ``error:`` message with exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

from .errors import TransferlabError
from .reports import ANALYZE
from .reports.common import parse_labels, table


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="prepared data folder (default: $TRANSFERLAB_DATA or ~/.cache/transferlab/data)")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import BASELINE, check_demo, demo_config, run_demo

    seeds = list(range(args.seed, args.seed + args.seeds))
    config = demo_config(None, args.iterations, args.seed, args.set)
    method = config.method["name"]
    check_demo(seeds, method)
    print(f"transferlab demo: digits (grey, 8x8) -> {config.data.target.name} (other digits on colour photos), "
          f"{config.model.backbone}, source-only vs {method}, {config.train.iterations} iterations, "
          f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}", flush=True)
    summary = run_demo(args.out, seeds=seeds, iterations=args.iterations, overrides=args.set,
                       tsne=not args.no_tsne, progress=not args.no_progress, report=lambda line: print(line, flush=True))
    rows = [[m, *(f"{a:.1f}" for a in summary["accuracy"][m]),
             f"{sum(summary['train_seconds'][m]) / len(seeds):.1f}"] for m in (BASELINE, method)]
    print()
    print(table(rows, ["method", *(f"seed {s} acc %" for s in seeds), "train s / run"]))
    gains = summary["gain"]
    print(f"\n{method} vs source-only on the target: {sum(gains) / len(gains):+.1f} points"
          f"{' (mean of ' + str(len(seeds)) + ' seeds)' if len(seeds) > 1 else ''} ({summary['device']}).")
    print(f"table: {Path(args.out) / 'results.md'}"
          + ("" if args.no_tsne else f"; t-SNE before/after adaptation: {Path(args.out) / 'tsne.png'}"))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .experiment import load_config, train

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = train(config, out, data_root=args.data_root, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, echo=args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(result, indent=2))
        print(f"run saved in {out}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .experiment import load_config, method_config
    from .methods import METHODS

    config = load_config(args.config, args.set)
    name = method_config(config).name
    if METHODS.get(name).inputs != {"source": False}:
        raise ConfigError(f"method {name} is not a pretraining method (it trains on labels); use `transferlab train`. "
                          f"Pretraining methods: {', '.join(n for n in METHODS if METHODS.get(n).inputs == {'source': False})}")
    return cmd_train(args)


def cmd_transfer(args: argparse.Namespace) -> int:
    from .protocol import run_transfer

    strategy = "scratch" if getattr(args, "from_scratch", False) else args.strategy
    out = Path(args.out) if args.out else None
    result = run_transfer(args.run, strategy, args.labels_per_class, args.seed, out_dir=out, overrides=args.set,
                          data_root=args.data_root, overwrite=args.overwrite, progress=not args.no_progress,
                          target=args.target)
    print(json.dumps(result, indent=2))
    if out is not None:
        print(f"run saved in {out}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    import shlex

    from .protocol import run_grid

    records = run_grid(args.runs, args.out, labels=args.labels_per_class, strategies=args.strategies, seeds=args.seeds,
                       jobs=args.jobs, overrides=args.set, data_root=args.data_root,
                       command=shlex.join(["transferlab"] + sys.argv[1:]), target=args.target)
    print()
    print((Path(args.out) / "results.md").read_text())
    print(f"{len(records)} results in {args.out}/results.json, plot in {args.out}/accuracy_vs_labels.png")
    return 0


# --- cv: cross-validation of small data (transferlab.crossval) ------------------------------------------------------


def cmd_cv(args: argparse.Namespace) -> int:
    """``transferlab cv CONFIG`` runs a cross-validation; ``transferlab cv compare DIR_A DIR_B`` compares two."""
    if args.config == "compare":
        return cmd_cv_compare(args)
    if args.dirs:
        raise TransferlabError(f"unexpected arguments {args.dirs}: `transferlab cv CONFIG` takes one config "
                               f"(`transferlab cv compare DIR_A DIR_B` compares two cross-validations)")
    from .crossval import cross_validate
    from .experiment import load_config

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-cv"
    cross_validate(config, out, k=args.folds, seeds=args.seeds, data_root=args.data_root,
                   validation=not args.no_validation, group=args.group, jobs=args.jobs,
                   progress=not args.no_progress and args.jobs == 1, log=lambda line: print(line, flush=True))
    print()
    print((out / "cv.md").read_text())
    print(f"cells in {out}/seed<s>/fold<i>; every cell's metrics in {out / 'cv.json'}")
    return 0


def cmd_cv_compare(args: argparse.Namespace) -> int:
    from .crossval import compare_runs, comparison_text

    if len(args.dirs) != 2:
        raise TransferlabError(f"`transferlab cv compare` takes two cross-validation folders (DIR_A DIR_B); got "
                               f"{len(args.dirs)}")
    print(comparison_text(compare_runs(args.dirs[0], args.dirs[1], args.metric)))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """An ``analyze`` sub-command: the handler its :class:`~transferlab.reports.Command` registered."""
    args.report(args)
    return 0


def dataset_arg(text: str, root: str | None = None):
    """``DATASET[:PART]`` as a :class:`~transferlab.config.DomainConfig`; without a part: ``test`` when the dataset has
    one, else its only part."""
    from .config import DomainConfig
    from .data import lookup

    name, _, part = text.partition(":")
    if not name:
        raise TransferlabError(f"{text!r} names no dataset; give DATASET or DATASET:PART (e.g. usps:test)")
    info = lookup(name, root)  # unknown names: a did-you-mean error listing the known ones
    if not part:
        if "test" not in info.parts and len(info.parts) != 1:
            raise TransferlabError(f"dataset {name} has no test part; name one: {', '.join(f'{name}:{p}' for p in info.parts)}")
        part = "test" if "test" in info.parts else info.parts[0]
    elif part not in info.parts:
        from .validation import closest

        raise TransferlabError(f"dataset {name} has no part '{part}'.{closest(part, list(info.parts))} "
                               f"Its parts: {', '.join(info.parts)}")
    return DomainConfig(name=name, part=part)


def cmd_eval(args: argparse.Namespace) -> int:
    from .experiment import evaluate_on, load_for_eval

    on = dataset_arg(args.on, args.data_root) if args.on else None
    experiment = load_for_eval(args.run, args.data_root, on=on)  # loads only the set it evaluates on
    result = evaluate_on(experiment)
    test = f"{experiment.test.name}/{experiment.test.part}"
    keys = ("wer", "cer") if "wer" in result else [k for k in ("acc", "nll", "ece", "auc") if k in result]
    accuracy = {(k if on is not None else f"target_test/{k}"): result[k] for k in keys}
    print(json.dumps({"run": str(args.run), "test": test, **accuracy, "samples": result["samples"]}, indent=2))
    return 0


def _where_arg(items: list[str] | None) -> dict[str, list[str]] | None:
    """``["speaker=theo,george", "group=child"]`` -> ``{"speaker": ["theo", "george"], "group": ["child"]}``."""
    if not items:
        return None
    out: dict[str, list[str]] = {}
    for item in items:
        column, _, values = item.partition("=")
        if not column or not values:
            raise TransferlabError(f"--where expects COLUMN=VALUE[,VALUE...] (e.g. speaker=theo); got {item!r}")
        out.setdefault(column.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return out


def cmd_speech_wer(args: argparse.Namespace) -> int:
    from .engine.checkpoint import atomic_write_json
    from .experiment import load_for_eval
    from .experiment import transcribe_set
    from .speech.evaluate import error_table, format_table

    on = dataset_arg(args.on, args.data_root) if args.on else None
    where = _where_arg(args.where)
    if where:
        if on is None:
            raise TransferlabError("--where selects rows of the set named by --on; give --on DATASET[:PART] too")
        on = on.model_copy(update={"where": where})
    experiment = load_for_eval(args.run, args.data_root, on=on)
    dataset = experiment.test
    hypotheses, references, groups = transcribe_set(experiment, dataset)
    if references is None:
        raise TransferlabError(f"{dataset.name}/{dataset.part} has no transcripts (column "
                               f"'{experiment.config.task.text}') to score against")
    missing = [c for c in args.by if c not in dataset.extras]
    if missing:
        raise TransferlabError(f"--by {missing}: {dataset.name}/{dataset.part} has no such column; it has "
                               f"{sorted(dataset.extras)}")
    columns = {c: [str(v) for v in dataset.extras[c].tolist()] for c in args.by}
    table = error_table(references, hypotheses, columns)
    print(f"{args.run} on {dataset.name}/{dataset.part} ({len(dataset)} utterances)")
    print(format_table(table))
    if args.out:
        utterances = [{"reference": r, "hypothesis": h, **({"predicted_group": groups[i]} if groups else {}),
                       **{c: v[i] for c, v in columns.items()}} for i, (r, h) in enumerate(zip(references, hypotheses))]
        atomic_write_json(Path(args.out), {"run": str(args.run), "set": f"{dataset.name}/{dataset.part}",
                                           "table": table, "utterances": utterances})
        print(f"wrote {args.out}")
    return 0


def cmd_speech_whisper(args: argparse.Namespace) -> int:
    import numpy as np

    from .data.transcripts import normalize_transcript, transcripts_of
    from .engine.checkpoint import atomic_write_json
    from .experiment import load_domain
    from .speech.evaluate import error_table, format_table, normalize_waves
    from .speech.whisper import WhisperRecognizer

    domain = dataset_arg(args.dataset, args.data_root)
    where = _where_arg(args.where)
    if where:
        domain = domain.model_copy(update={"where": where})
    dataset = load_domain(domain, args.data_root, 0)
    if getattr(dataset, "kind", None) != "audio":
        raise TransferlabError(f"{domain.name} is not a speech dataset")
    references = [normalize_transcript(t, disfluencies=True) for t in transcripts_of(dataset, args.text)]
    waves = [dataset.data.row(i).numpy() for i in range(len(dataset))]
    rate = int(dataset.sample_rate)
    done = None
    if args.normalize is not None:
        column, _, value = args.normalize.partition("=")
        if column not in dataset.extras or not value:
            raise TransferlabError(f"--normalize expects COLUMN=VALUE naming the utterances to warp (e.g. group=child); "
                                   f"{domain.name} has columns {sorted(dataset.extras)}")
        chosen = [str(v) == value for v in dataset.extras[column].tolist()]
        target = args.target_f0
        if target is None:  # the median f0 of the other utterances (e.g. the adults): no transcript is used
            import torch

            from .data.audio_augment import estimate_f0

            others = [estimate_f0(torch.from_numpy(w), rate) for w, c in zip(waves, chosen) if not c]
            others = [f for f in others if f == f]
            if not others:
                raise TransferlabError("--normalize: no other utterance has a measurable f0 to aim at; give --target-f0")
            target = float(np.median(others))
        speakers = [str(s) for s in dataset.extras["speaker"].tolist()] if args.per_speaker else None
        if args.per_speaker and "speaker" not in dataset.extras:
            raise TransferlabError(f"--per-speaker needs a speaker column; {domain.name} has {sorted(dataset.extras)}")
        waves, done = normalize_waves(waves, rate, target, speakers=speakers, select=chosen,
                                      formant_exponent=args.formant_exponent)
        print(f"normalised {sum(d is not None for d in done)} utterances toward f0 {target:.1f} Hz")
    recognizer = WhisperRecognizer(args.model, beam_size=args.beam_size)
    hypotheses = [normalize_transcript(h, disfluencies=True)
                  for h in recognizer.transcribe_many(waves, rate, progress=not args.no_progress)]
    missing = [c for c in args.by if c not in dataset.extras]
    if missing:
        raise TransferlabError(f"--by {missing}: {domain.name} has no such column; it has {sorted(dataset.extras)}")
    columns = {c: [str(v) for v in dataset.extras[c].tolist()] for c in args.by}
    table = error_table(references, hypotheses, columns)
    print(f"{recognizer!r} on {dataset.name}/{dataset.part} ({len(dataset)} utterances)")
    print(format_table(table))
    if args.out:
        utterances = [{"reference": r, "hypothesis": h, **{c: v[i] for c, v in columns.items()},
                       **({"normalised": done[i]} if done is not None else {})}
                      for i, (r, h) in enumerate(zip(references, hypotheses))]
        atomic_write_json(Path(args.out), {"set": f"{dataset.name}/{dataset.part}", "table": table,
                                           "utterances": utterances})
        print(f"wrote {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import io

    from .engine.checkpoint import atomic_write_text
    from .experiment import load_for_eval, predict_proba

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in (".csv", ".jsonl"):
        raise TransferlabError(f"--out {out}: the file name must end in .csv or .jsonl (the format it is written in)")
    experiment = load_for_eval(args.run, args.data_root, on=dataset_arg(args.dataset, args.data_root))
    dataset = experiment.test
    probabilities = predict_proba(experiment).tolist()
    n = experiment.method.num_classes
    named = bool(dataset.classes) and len(dataset.classes) == n  # the dataset's class names, if they fit the model
    names = [str(c) for c in dataset.classes] if named else [str(k) for k in range(n)]
    buffer = io.StringIO()
    if out is not None and out.suffix == ".jsonl":
        for index, row in enumerate(probabilities):
            best = max(range(n), key=row.__getitem__)
            buffer.write(json.dumps({"index": index, "predicted": names[best] if named else best,
                                     "probabilities": {name: float(f"{p:.6g}") for name, p in zip(names, row)}}) + "\n")
    else:
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "predicted"] + [f"p_{name}" for name in names])
        for index, row in enumerate(probabilities):
            writer.writerow([index, names[max(range(n), key=row.__getitem__)]] + [f"{p:.6g}" for p in row])
    if out is None:
        sys.stdout.write(buffer.getvalue())
    else:
        atomic_write_text(out, buffer.getvalue())  # temporary file + rename: never a half-written file
        print(f"wrote class probabilities of {len(probabilities)} samples of {dataset.name}/{dataset.part} "
              f"({n} classes) to {out}")
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from .data import DATASETS, data_root
    from .data.datasets import discover
    from .errors import DataError

    root = data_root(args.data_root)
    rows = []

    def shown(info, present: list[str]) -> str:  # "all" keeps the table narrow when nothing is missing
        return "all" if present and set(info.parts) <= set(present) else ",".join(present) or "-"

    for name in DATASETS:
        info = DATASETS.get(name)
        where = "embedded" if info.embedded else ("download" if info.downloadable else "data root")
        rows.append([name, info.kind, str(info.num_classes), ",".join(info.parts), shown(info, info.present_parts(root)),
                     where])
    try:
        imported, problem = discover(root), None
    except DataError as exc:  # one broken dataset.json must not hide the rest of the list
        imported, problem = [], exc
    for info in imported:
        rows.append([info.name, info.kind, str(info.num_classes), ",".join(info.parts), shown(info, info.present_parts(root)),
                     "imported"])
    print(f"data root: {root}\n")
    print(table(rows, ["name", "kind", "classes", "parts", "present", "source"]))
    if problem is not None:
        print(f"warning: the datasets imported under the data root could not be listed: {problem}", file=sys.stderr)
    return 0


def cmd_datasets_import(args: argparse.Namespace) -> int:
    import shlex

    from .data.importers import import_dataset

    options = {key: getattr(args, key) for key in ("image_size", "channels", "text_column", "label_column",
                                                   "language_column", "manifest", "sample_rate")
               if getattr(args, key, None) is not None}
    words = ["transferlab", "datasets", "import", args.kind, args.source, "--name", args.name, "--part", args.part]
    for key, value in options.items():
        words += [f"--{key.replace('_', '-')}", str(value)]
    words += ["--overwrite"] if args.overwrite else []
    words += ["--description", args.description] if args.description else []
    result = import_dataset(args.kind, args.source, args.name, root=args.data_root, part=args.part,
                            overwrite=args.overwrite, description=args.description, command=shlex.join(words),
                            **options)
    counts = [[("-" if name is None else str(result.classes.index(name))), name or "(unlabelled)", str(n)]
              for name, n in result.counts.items()]
    print(f"imported {result.rows} {result.kind} rows as {result.name}/{result.part} "
          f"({'new dataset' if result.new_dataset else 'added to the dataset'}) in {result.folder}")
    for note in result.notes:
        print(f"  {note}")
    print()
    print(table(counts, ["label", "class", "rows"]))
    print(f"\nname it in a config as data.source.name: {result.name} (part: {result.part}); provenance in "
          f"{result.folder / 'SOURCE.md'}")
    return 0


def cmd_datasets_download(args: argparse.Namespace) -> int:
    from .data import DATASETS, data_root
    from .data.download import DOWNLOADERS, download
    from .errors import DataError
    from .validation import closest

    if args.name not in DOWNLOADERS:
        known = args.name in DATASETS and DATASETS.get(args.name)
        why = ("it is embedded in the package and needs no download" if known and known.embedded else
               "it has no canonical source to download from; see `transferlab datasets list`" if known else
               f"no dataset has this name.{closest(args.name, sorted(DOWNLOADERS) + DATASETS.names())}")
        raise DataError(f"cannot download '{args.name}': {why}. Downloadable: {', '.join(sorted(DOWNLOADERS))}")
    folder = download(args.name, data_root(args.data_root))
    print(f"{args.name} ready in {folder}")
    return 0


def _type_text(annotation) -> str:
    """A hyper-parameter's type as a user reads it: ``float > 0``, ``ramp | constant``, ``list[int > 0]``."""
    import types
    import typing

    import annotated_types as at

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = {at.Gt: (">", "gt"), at.Ge: ("≥", "ge"), at.Lt: ("<", "lt"), at.Le: ("≤", "le")}
        marks = [f"{bounds[type(m)][0]} {getattr(m, bounds[type(m)][1])}" for m in args[1:] if type(m) in bounds]
        return " ".join([_type_text(args[0])] + ([", ".join(marks)] if marks else []))
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_text(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_text(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _field_text(info) -> str:
    """``type = default`` of a pydantic field, bounds included (``float ≥ 0 = 1.0``)."""
    import typing

    annotation = info.annotation
    if info.metadata:  # pydantic moves Annotated bounds (PositiveInt, NonNegativeFloat) into metadata
        annotation = typing.Annotated[(annotation, *info.metadata)]
    return f"{_type_text(annotation)} = {info.default!r}"


def _field_docs(config_cls) -> dict[str, str]:
    """The attribute docstrings of a pydantic model's fields (the string after ``name: type = default``), from the
    most derived class that documents each field. Pydantic keeps them only with ``use_attribute_docstrings``."""
    import ast
    import textwrap

    docs: dict[str, str] = {}
    for cls in config_cls.__mro__:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs.setdefault(stmt.target.id, inspect.cleandoc(after.value.value))
    return docs


def _method_doc(cls) -> str:
    """A method's docstring (its class's, else its module's: the paper and the loss)."""
    return inspect.cleandoc(cls.__doc__ or sys.modules[cls.__module__].__doc__ or "")


def cmd_xl_new_encoder(args: argparse.Namespace) -> int:
    from .crosslingual.pipeline import texts_of
    from .models.encoders import new_text_encoder

    texts = [t for spec in args.texts for t in texts_of(spec, args.data_root)]
    info = new_text_encoder(texts, args.out, vocab_size=args.vocab_size, layers=args.layers, hidden=args.hidden,
                            heads=args.heads, seed=args.seed)
    print(f"wrote {args.out}: BERT {info['layers']} layers x {info['hidden']}, {info['parameters']:,} parameters "
          f"(random), WordPiece vocabulary {info['vocab']:,} learnt from {info['sentences']:,} sentences")
    print(f"use it as model.backbone: hf:{args.out}")
    return 0


def cmd_xl_translate(args: argparse.Namespace) -> int:
    import csv
    import io

    from . import data as tl_data
    from .config import TranslateConfig
    from .engine.checkpoint import atomic_write_text
    from .experiment import translate_set

    name, _, part = args.dataset.partition(":")
    dataset = tl_data.load(name, part or "test", args.data_root)
    translated = translate_set(dataset, TranslateConfig(backend=args.backend, target=args.to, source=args.source),
                               args.data_root)
    rows = [(("" if dataset.y is None else int(dataset.y[i])), src, tgt)
            for i, (src, tgt) in enumerate(zip(dataset.texts, translated.texts))]
    if args.out:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writerow(["label", "text"])
        writer.writerows((label, tgt.replace("\t", " ")) for label, _, tgt in rows)
        atomic_write_text(Path(args.out), buffer.getvalue())
        print(f"translated {len(rows)} sentences of {name}/{part or 'test'} with {args.backend}; wrote {args.out}")
    for label, src, tgt in rows[: args.show]:
        print(f"[{label}] {src}\n    -> {tgt}")
    return 0


def cmd_xl_aligned(args: argparse.Namespace) -> int:
    from .crosslingual.pipeline import aligned_classifier

    result = aligned_classifier(args.source, args.target, dataset=args.dataset, classes=args.classes,
                                dictionary=args.dictionary, test_dictionary=args.test_dictionary, refine=args.refine,
                                dim=args.dim, seed=args.seed, vectors_dir=args.vectors_dir, root=args.data_root,
                                out=args.out)
    vec = result["vectors"]
    for lang, stats in vec.items():
        print(f"{lang} vectors: {stats['sentences']:,} sentences, {stats['tokens']:,} tokens, {stats['vocab']:,} words")
    print(f"seed dictionary {result['dictionary']}: {result['seed_pairs']} pairs in both vocabularies")
    if "bli" in result:
        bli = result["bli"]
        print(f"BLI ({args.test_dictionary}, CSLS): P@1 {100 * bli['p@1']:.1f}  P@5 {100 * bli['p@5']:.1f}  "
              f"({bli['n_evaluated']} test words in the vocabularies)")
    print(f"{result['task']} ({args.classes}): acc {result['target_test/acc']:.1f}  "
          f"macro-F1 {result['target_test/macro_f1']:.1f}  (target OOV rate {result['oov_rate']['target_test']:.1%})")
    if args.out:
        print(f"saved {Path(args.out) / 'result.json'}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS

    if args.name is None:
        for name in METHODS:
            cls = METHODS.get(name)
            print(f"{name}: {(_method_doc(cls).splitlines() or [''])[0]}")
            for field, info in cls.Config.model_fields.items():
                if field != "name":
                    default = info.default_factory() if info.default_factory is not None else info.default
                    print(f"    {field} = {default!r}")
        print("\n`transferlab methods NAME` explains a method's hyper-parameters.")
        return 0
    cls = METHODS.get(args.name)  # unknown names: a did-you-mean error listing the methods
    print(f"{args.name}: {_method_doc(cls)}")
    inputs = ", ".join(f"{k} ({'labelled' if v else 'unlabelled'})" for k, v in cls.inputs.items())
    print(f"\ntrains on: {inputs}")
    print("\nhyper-parameters (method.<name> in a config, --set method.<name>=VALUE):")
    docs = _field_docs(cls.Config)
    for field, info in cls.Config.model_fields.items():
        if field == "name":
            continue
        print(f"  {field}: {_field_text(info)}")
        text = info.description or docs.get(field, "")
        for line in text.splitlines():
            print(f"      {line}" if line.strip() else "")
    return 0


def cmd_chain(args: argparse.Namespace) -> int:
    from .chain import chain_table, run_chain

    out = Path(args.out) if args.out else Path("runs") / Path(args.chain).stem
    summary = run_chain(args.chain, out, overrides=args.set, data_root=args.data_root, overwrite=args.overwrite,
                        progress=not args.no_progress, report=lambda line: print(line, flush=True))
    print()
    print(chain_table(summary["stages"]))
    print(f"\nstages in {out}/<stage>; summary: {out / 'chain.md'}, {out / 'chain.json'}")
    return 0


def cmd_model_stages(args: argparse.Namespace) -> int:
    from .experiment import build, load_config
    from .models.surgery import stages

    experiment = build(load_config(args.config, args.set), args.data_root)
    encoder = experiment.method.encoder
    rows = []
    for name, modules in stages(encoder).items():
        params = [p for m in modules for p in encoder.get_submodule(m).parameters()]
        rows.append([name, f"{sum(p.numel() for p in params):,}",
                     "yes" if params and not any(p.requires_grad for p in params) else "no", ", ".join(modules)])
    print(table(rows, ["stage", "parameters", "frozen", "modules"]))
    return 0


def _version() -> str:
    """The running package's version (``transferlab.__version__``; the package is imported before this module)."""
    return getattr(sys.modules.get(__package__ or "transferlab"), "__version__", "unknown")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning and domain adaptation.")
    parser.add_argument("--version", action="version", version=f"transferlab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="source-only vs DANN on the embedded digits shift, table and t-SNE (no download, "
                       "< 1 min on CPU)")
    p.add_argument("--out", default=str(Path("runs") / "demo"),
                   help="folder for results.md, results.json, tsne.png and the runs (default: runs/demo; the demo's "
                        "own earlier runs there are replaced)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds, from --seed on (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--iterations", type=int, help="default: the packaged config's train.iterations")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the packaged config (repeatable), e.g. method.trade_off=0.5")
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE picture")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    for name, config_help, func in (
        ("train", "YAML config file (see configs/)", cmd_train),
        ("pretrain", "YAML config with a pretraining method and a transfer: section (see configs/selftaught/)", cmd_pretrain),
    ):
        p = sub.add_parser(name, help="train a config; saves config, metrics, checkpoints, model and result" if name == "train"
                           else "self-supervised pretraining (autoencoder, simclr) on unlabelled data")
        p.add_argument("config", help=config_help)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. optim.lr=0.1")
        p.add_argument("--out", help="run folder (default: runs/<config name>)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest intact checkpoint")
        p.add_argument("--overwrite", action="store_true", help="delete a previous run in --out first")
        p.add_argument("--no-progress", action="store_true", help="no progress bar; print one line per logged step instead")
        _common(p)
        p.set_defaults(func=func)

    for name, strategy, text in (("probe", "probe", "linear classifier on the frozen pretrained encoder"),
                                 ("finetune", "finetune", "fine-tune the pretrained encoder and a new classifier")):
        p = sub.add_parser(name, help=f"{text}, on the run's transfer task with K labels per class")
        p.add_argument("run", help="a finished pretraining run folder")
        p.add_argument("--labels-per-class", type=parse_labels, required=True, metavar="K", help="a positive integer or 'all'")
        p.add_argument("--seed", type=int, default=0, help="draws the labelled samples and initialises the classifier")
        p.add_argument("--target", metavar="DATASET", help="transfer to this dataset's train/test parts instead of the "
                       "run's transfer: section (any finished run, e.g. a supervised source model)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value of the downstream run's config, e.g. optim.lr=0.1")
        p.add_argument("--out", help="save the downstream run here (default: not saved)")
        p.add_argument("--overwrite", action="store_true")
        p.add_argument("--no-progress", action="store_true")
        if name == "finetune":
            p.add_argument("--from-scratch", action="store_true",
                           help="the no-transfer baseline: same architecture and data, random initialisation")
        _common(p)
        p.set_defaults(func=cmd_transfer, strategy=strategy)

    p = sub.add_parser("grid", help="probe/finetune/scratch x labels per class x seeds; table and plot")
    p.add_argument("runs", nargs="+", help="pretraining runs (several methods and seeds may be mixed)")
    p.add_argument("--out", required=True, help="folder for cells.jsonl, results.json/.md, accuracy_vs_labels.png")
    p.add_argument("--labels-per-class", type=parse_labels, nargs="+", metavar="K", help="default: the config's transfer list")
    p.add_argument("--strategies", nargs="+", default=["probe", "finetune", "scratch"], choices=["probe", "finetune", "scratch"])
    p.add_argument("--seeds", type=int, nargs="+", help="default: 0..(runs per method - 1)")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once, in separate processes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override every cell's config")
    p.add_argument("--target", metavar="DATASET", help="transfer every run to this dataset's train/test parts instead "
                   "of their transfer: section (e.g. to compare source models trained on different datasets)")
    _common(p)
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("cv", help="stratified, grouped k-fold cross-validation x seeds of a config's source set: AUC, "
                       "accuracy, ECE, NLL (mean ± std), temperature scaling; `cv compare DIR_A DIR_B` pairs two")
    p.add_argument("config", metavar="CONFIG", help="YAML config whose data.source is cross-validated, or the word "
                   "'compare' followed by two cross-validation folders")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="(compare) the two cross-validation folders, A then B")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of every cell's config, e.g. optim.lr=0.01")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (default: 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="partitions (and run seeds) to repeat the cross-validation over (default: 0 1 2)")
    p.add_argument("--no-validation", action="store_true", help="train on k-1 folds; no validation fold, no "
                   "temperature scaling (default: fold i+1 validates, training uses k-2 folds)")
    p.add_argument("--group", metavar="COLUMN", help="rows with equal values share a fold (e.g. speaker; default: "
                   "duplicate_group when the set has one)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained at once, in separate processes")
    p.add_argument("--out", help="folder for the cells, cv.json and cv.md (default: runs/<config name>-cv); "
                   "finished cells there are kept and skipped")
    p.add_argument("--metric", default="auc", help="(compare) acc, auc, nll, ece, or after.<metric> (after "
                   "temperature scaling); default: auc")
    p.add_argument("--no-progress", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("analyze", help=f"diagnostics of saved runs: {', '.join(c.name for c in ANALYZE)} (JSON + PNG)")
    asub = p.add_subparsers(dest="analysis", required=True)
    for command in ANALYZE:
        q = asub.add_parser(command.name, help=command.help)
        command.add_arguments(q)
        _common(q)
        q.set_defaults(func=cmd_analyze, report=command.run)

    p = sub.add_parser("eval", help="re-evaluate a finished run's final model on its target test split (or --on another "
                       "labelled set); loads no training data")
    p.add_argument("run")
    p.add_argument("--on", metavar="DATASET[:PART]", help="a labelled part of any registered or imported dataset with "
                   "the run's classes (default part: test)")
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="class probabilities of a finished run's model on any dataset of its kind "
                       "(CSV or JSONL)")
    p.add_argument("run")
    p.add_argument("dataset", metavar="DATASET[:PART]", help="a registered or imported dataset (default part: test, "
                   "or its only part); labels are not needed")
    p.add_argument("--out", metavar="FILE.csv|FILE.jsonl", help="write here (atomically); default: CSV on standard output")
    _common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("datasets", help="list known datasets, download one, or import your own")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    q = dsub.add_parser("list", help="what is known and what is present under the data root")
    _common(q)
    q.set_defaults(func=cmd_datasets_list)
    q = dsub.add_parser("download", help="download from the canonical source, verify sha256, convert")
    q.add_argument("name")
    _common(q)
    q.set_defaults(func=cmd_datasets_download)
    q = dsub.add_parser("import", help="bring your own images, text, audio or arrays into the prepared layout "
                        "(docs/importing.md)")
    isub = q.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, source_help, text in (
        ("images", "a folder with one sub-folder of images per class", "image folders -> <part>.npz"),
        ("text", "a .csv, .tsv or .jsonl file with a text and a label column", "CSV/TSV/JSONL -> <part>.tsv"),
        ("audio", "a folder of audio files with a manifest CSV (path, label and/or transcript, speaker, ...)",
         "audio files + manifest -> <part>.npz (int16, concatenated)"),
        ("arrays", "an .npz file with x, y and optionally classes", "an x/y .npz -> <part>.npz, checked"),
    ):
        r = isub.add_parser(kind, help=text)
        r.add_argument("source", help=source_help)
        r.add_argument("--name", required=True, help="the dataset's name (its folder under the data root)")
        r.add_argument("--part", default="train", help="the split or domain to write (default: train)")
        r.add_argument("--overwrite", action="store_true", help="replace the part if the dataset already has it")
        r.add_argument("--description", help="one line for dataset.json (default: where it came from)")
        if kind == "images":
            r.add_argument("--image-size", type=int, metavar="N", help="resize every image to NxN (needed when sizes differ)")
            r.add_argument("--channels", type=int, choices=(1, 3), help="default: 3 if any image is colour, else 1")
        elif kind == "text":
            r.add_argument("--text-column", default="text")
            r.add_argument("--label-column", default="label")
            r.add_argument("--language-column", help="a column to keep as the language of each row")
        elif kind == "audio":
            r.add_argument("--manifest", help="the manifest CSV (default: <folder>/manifest.csv)")
            r.add_argument("--sample-rate", type=int, metavar="HZ", help="resample to this rate (default: the first file's)")
        _common(r)
        r.set_defaults(func=cmd_datasets_import)

    p = sub.add_parser("speech", help="speech recognition: WER/CER of a CTC run per speaker and group "
                       "(docs/speech.md)")
    ssub = p.add_subparsers(dest="speech_command", required=True)
    q = ssub.add_parser("wer", help="transcribe a set with a finished CTC run; WER/CER overall and by column")
    q.add_argument("run")
    q.add_argument("--on", metavar="DATASET[:PART]", help="the set to transcribe (default: the run's test set)")
    q.add_argument("--where", action="append", metavar="COLUMN=VALUE[,VALUE...]",
                   help="only these rows of --on (e.g. speaker=theo); repeatable")
    q.add_argument("--by", nargs="*", default=[], metavar="COLUMN", help="also break WER down by these columns "
                   "(speaker, group, age, ...)")
    q.add_argument("--out", metavar="FILE.json", help="write the table and every utterance's transcript")
    _common(q)
    q.set_defaults(func=cmd_speech_wer)

    q = ssub.add_parser("whisper", help="transcribe a speech set with Whisper (bundled tiny.en, or --model); WER/CER "
                        "by column, optionally after test-time child->adult normalisation")
    q.add_argument("dataset", metavar="DATASET[:PART]")
    q.add_argument("--where", action="append", metavar="COLUMN=VALUE[,VALUE...]", help="only these rows; repeatable")
    q.add_argument("--text", default="text", help="the transcript column (default: text; 'label' for FSDD)")
    q.add_argument("--by", nargs="*", default=[], metavar="COLUMN", help="break WER down by these columns")
    q.add_argument("--normalize", metavar="COLUMN=VALUE", help="warp these utterances (e.g. group=child) toward "
                   "--target-f0, or toward the median f0 of the others")
    q.add_argument("--target-f0", type=float, help="Hz (default: the median f0 of the utterances not warped)")
    q.add_argument("--per-speaker", action="store_true", help="one warp factor per speaker (their median f0)")
    q.add_argument("--formant-exponent", type=float, default=1.0,
                   help="the formant warp is factor**this (0: pitch shift only; default 1)")
    q.add_argument("--model", help="a CTranslate2 Whisper folder or faster-whisper model name (default: bundled "
                   "tiny.en)")
    q.add_argument("--beam-size", type=int, default=5)
    q.add_argument("--out", metavar="FILE.json")
    q.add_argument("--no-progress", action="store_true")
    _common(q)
    q.set_defaults(func=cmd_speech_whisper)

    p = sub.add_parser("crosslingual", help="cross-lingual text: a from-scratch encoder, translation, aligned "
                       "word embeddings (docs/crosslingual.md)")
    xsub = p.add_subparsers(dest="xl_command", required=True)
    q = xsub.add_parser("new-encoder", help="a WordPiece tokenizer learnt from unlabelled text + a random BERT, "
                        "saved for model.backbone: hf:<folder>")
    q.add_argument("--texts", nargs="+", required=True, metavar="DATASET:PART[,PART...]",
                   help="the sentences to learn the vocabulary from (labels are not read)")
    q.add_argument("--out", required=True, help="a new folder")
    q.add_argument("--vocab-size", type=int, default=8000)
    q.add_argument("--layers", type=int, default=2)
    q.add_argument("--hidden", type=int, default=128)
    q.add_argument("--heads", type=int, default=2)
    q.add_argument("--seed", type=int, default=0)
    _common(q)
    q.set_defaults(func=cmd_xl_new_encoder)
    q = xsub.add_parser("translate", help="machine-translate a text set (cached) and show or write it")
    q.add_argument("dataset", metavar="DATASET:PART")
    q.add_argument("--with", dest="backend", default="apertium",
                   help="apertium | dictionary:<opener-apertium|opener-bingliu|muse|file> | hf:<seq2seq model>")
    q.add_argument("--to", default="en", help="target language (default: en)")
    q.add_argument("--source", help="the set's language (default: its language column or part prefix)")
    q.add_argument("--out", metavar="FILE.tsv", help="write label<TAB>translation (atomically)")
    q.add_argument("--show", type=int, default=5, metavar="N", help="print the first N pairs (default: 5)")
    _common(q)
    q.set_defaults(func=cmd_xl_translate)
    q = xsub.add_parser("aligned", help="aligned word embeddings: vectors per language, Procrustes map, BLI, and a "
                        "source-trained classifier applied to the target")
    q.add_argument("--source", default="en")
    q.add_argument("--target", required=True, help="e.g. es, ca, eu")
    q.add_argument("--dataset", default="opener_sentiment", help="text dataset with <lang>_train/_dev/_test parts")
    q.add_argument("--classes", default="binary", choices=("binary", "4class", "all"))
    q.add_argument("--dictionary", default="opener-apertium",
                   help="seed dictionary: muse | opener-apertium | opener-bingliu | a file of 'target source' pairs")
    q.add_argument("--test-dictionary", help="score the map by bilingual lexicon induction (e.g. muse-test)")
    q.add_argument("--refine", type=int, default=0, help="rounds of Procrustes refinement (MUSE)")
    q.add_argument("--dim", type=int, default=100)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--vectors-dir", default="runs/vectors", help="where trained vectors are kept and reused")
    q.add_argument("--out", help="a folder for result.json")
    _common(q)
    q.set_defaults(func=cmd_xl_aligned)

    p = sub.add_parser("chain", help="multi-hop transfer: train a chain's stages in order, each from the previous "
                       "stage's encoder; resumes where it stopped; metrics side by side")
    p.add_argument("chain", help="chain YAML (see configs/medical/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every stage's config, e.g. seed=1")
    p.add_argument("--out", help="folder for the stages' runs and chain.md (default: runs/<chain name>)")
    p.add_argument("--overwrite", action="store_true", help="delete the chain's earlier stage runs first")
    p.add_argument("--no-progress", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("model", help="inspect a config's model: its stages (for model.freeze, init_stages, stage_lr)")
    msub = p.add_subparsers(dest="model_command", required=True)
    q = msub.add_parser("stages", help="the encoder's stages, input to output, with parameter counts")
    q.add_argument("config")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _common(q)
    q.set_defaults(func=cmd_model_stages)

    p = sub.add_parser("methods", help="list methods and their hyper-parameters; with NAME, explain each of them")
    p.add_argument("name", nargs="?", help="a method, e.g. dann")
    p.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
