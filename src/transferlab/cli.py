"""Command line: ``transferlab demo | train | pretrain | probe | finetune | grid | analyze | eval | datasets | methods``.

Thin by design: parse arguments, validate the config, call the library. Every
:class:`~transferlab.errors.TransferlabError` is printed as one ``error:`` message with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import TransferlabError
from .reports import ANALYZE
from .reports.common import parse_labels, table


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="prepared data folder (default: $TRANSFERLAB_DATA or ~/.cache/transferlab/data)")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_config
    from .experiment import train

    print("transferlab demo: digits (grey, 8x8) -> digits_m (other digits on colour photos), LeNet, "
          f"{demo_config('dann', args.iterations).train.iterations} iterations, seed {args.seed}", flush=True)
    rows, accuracy = [], {}
    for method in ("source_only", "dann"):
        started = time.perf_counter()
        result = train(demo_config(method, args.iterations, args.seed), None, progress=not args.no_progress)
        accuracy[method] = result["target_test/acc"]
        rows.append([method, f"{result['target_test/acc']:.1f}", f"{time.perf_counter() - started:.1f}"])
        print(f"  {method:<12} target accuracy {result['target_test/acc']:.1f}%", flush=True)
    print()
    print(table(rows, ["method", "target acc %", "seconds"]))
    gain = accuracy["dann"] - accuracy["source_only"]
    print(f"\nDANN vs source-only on the target: {gain:+.1f} points ({result['device']}).")
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


def cmd_analyze(args: argparse.Namespace) -> int:
    """An ``analyze`` sub-command: the handler its :class:`~transferlab.reports.Command` registered."""
    args.report(args)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .experiment import load_run

    experiment = load_run(args.run, args.data_root)
    if experiment.test is None or not experiment.method.classifies():
        raise TransferlabError(f"{args.run} is a pretraining run with nothing to classify; evaluate its transfer with "
                               f"`transferlab probe {args.run} --labels-per-class K`")
    trainer = experiment.trainer(None, progress=False)
    result = trainer.evaluate()
    print(json.dumps({"run": str(args.run), "test": f"{experiment.test.name}/{experiment.test.part}", **result}, indent=2))
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
    from .data import data_root
    from .data.download import download

    folder = download(args.name, data_root(args.data_root))
    print(f"{args.name} ready in {folder}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        for field, info in cls.Config.model_fields.items():
            if field != "name":
                print(f"    {field} = {info.default!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning and domain adaptation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="source-only vs DANN on the embedded digits shift (no download, < 1 min on CPU)")
    p.add_argument("--iterations", type=int, help="default: the embedded config's 600")
    p.add_argument("--seed", type=int, default=0)
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

    p = sub.add_parser("analyze", help="diagnostics of saved runs: divergence, features, scores, landscape (JSON + PNG)")
    asub = p.add_subparsers(dest="analysis", required=True)
    for command in ANALYZE:
        q = asub.add_parser(command.name, help=command.help)
        command.add_arguments(q)
        _common(q)
        q.set_defaults(func=cmd_analyze, report=command.run)

    p = sub.add_parser("eval", help="re-evaluate a finished run's final model on its target test split")
    p.add_argument("run")
    _common(p)
    p.set_defaults(func=cmd_eval)

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

    p = sub.add_parser("methods", help="list methods and their hyper-parameters")
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
