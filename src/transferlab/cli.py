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


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="prepared data folder (default: $TRANSFERLAB_DATA or ~/.cache/transferlab/data)")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


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
    print(_table(rows, ["method", "target acc %", "seconds"]))
    gain = accuracy["dann"] - accuracy["source_only"]
    print(f"\nDANN vs source-only on the target: {gain:+.1f} points ({result['device']}).")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .experiment import train

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = train(config, out, data_root=args.data_root, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(result, indent=2))
        print(f"run saved in {out}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .methods import METHODS

    config = load_config(args.config, args.set)
    name = config.method_config().name
    if METHODS.get(name).inputs != {"source": False}:
        raise ConfigError(f"method {name} is not a pretraining method (it trains on labels); use `transferlab train`. "
                          f"Pretraining methods: {', '.join(n for n in METHODS if METHODS.get(n).inputs == {'source': False})}")
    return cmd_train(args)


def _labels(text: str):
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


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
    from .analysis import runs as analysis

    out = Path(args.out)
    if args.analysis == "divergence":
        reports = [analysis.divergence_report(run, data_root=args.data_root, max_samples=args.max_samples,
                                              classifier=args.classifier, seed=args.seed) for run in args.runs]
        analysis.write_json(out / "divergence.json", reports)
        analysis.plot_divergence(reports, out / "divergence.png")
        rows = [["/".join(Path(r["run"]).parts[-2:]), r["method"], f"{r['source_error']:.1f}", f"{r['target_error']:.1f}",
                 f"{r['a_distance']:.3f}", f"{r['lambda']:.3f}"] for r in reports]
        print(_table(rows, ["run", "method", "source err %", "target err %", "A-distance", "lambda"]))
        print(f"\nwritten: {out / 'divergence.json'}, {out / 'divergence.png'} (lambda uses target labels: analysis only)")
    elif args.analysis == "features":
        for run in args.runs:
            info = analysis.feature_map(run, out / f"tsne_{Path(run).name}.png", data_root=args.data_root,
                                        max_samples=args.max_samples, seed=args.seed)
            print(f"{run}: {info['plot']}")
    elif args.analysis == "scores":
        accuracies = args.accuracies or _grid_accuracies(args.accuracies_from, args.runs, args.labels_per_class,
                                                         args.target)
        report = analysis.score_candidates(args.runs, accuracies, data_root=args.data_root,
                                           max_samples=args.max_samples, seed=args.seed, target=args.target)
        analysis.write_json(out / "scores.json", report)
        keys = list(report["correlation"])
        rows = [["/".join(Path(r["run"]).parts[-2:]), r["pretraining"], f"{r['finetuned_acc']:.1f}"]
                + [f"{r[k]:.3f}" for k in keys] for r in report["candidates"]]
        print(_table(rows, ["run", "pretraining", "fine-tuned acc %"] + keys))
        for key, value in report["correlation"].items():
            print(f"{key}: weighted Kendall tau {value['weighted_kendall_tau']:+.3f}, Kendall tau {value['kendall_tau']:+.3f}")
        print(f"\nwritten: {out / 'scores.json'}")
    elif args.analysis == "layers":
        from .analysis.yosinski import layer_transferability

        report = layer_transferability(args.task_a, args.task_b, out, seeds=args.seeds, overrides=args.set,
                                       jobs=args.jobs, data_root=args.data_root)
        rows = [[c] + [f"{v[n]['mean']:.1f} ± {v[n]['std']:.1f}" for n in sorted(v)] for c, v in report["curves"].items()]
        print(_table(rows, ["condition"] + [f"n={n}" for n in range(1, report["n_layers"] + 1)]))
        print(f"baseA {report['baseA']['mean']:.1f}, baseB {report['baseB']['mean']:.1f}; "
              f"layers: {', '.join(report['layers'])}\nwritten: {out / 'layers.json'}, {out / 'layers.png'}")
    elif args.analysis == "transfer":
        report = analysis.transfer_check(args.runs, labels_per_class=args.labels_per_class, seeds=args.seeds,
                                         data_root=args.data_root, out_dir=out / "runs")
        analysis.write_json(out / "transfer.json", report)
        rows = [[name, f"{r['mean']:.1f} ± {r['std']:.1f}", len(r["values"]),
                 "NEGATIVE TRANSFER" if r.get("negative_transfer") else ""] for name, r in report["methods"].items()]
        print(f"{report['task']}: target test accuracy %")
        print(_table(rows, ["method", "acc", "runs", "flag"]))
        print(f"\nwritten: {out / 'transfer.json'}")
    elif args.analysis == "cka":
        if len(args.runs) != 2:
            from .errors import ConfigError

            raise ConfigError(f"analyze cka compares two runs; got {len(args.runs)}")
        report = analysis.cka_report(*args.runs, data_root=args.data_root, max_samples=args.max_samples, seed=args.seed)
        analysis.write_json(out / "cka.json", report)
        analysis.plot_cka(report, out / "cka.png")
        print(_table([[la] + [f"{v:.3f}" for v in row] for la, row in zip(report["layers_a"], report["cka"])],
                     ["layer (A) \\ (B)"] + report["layers_b"]))
        print(f"\nwritten: {out / 'cka.json'}, {out / 'cka.png'}")
    elif args.analysis == "task2vec":
        report = analysis.task2vec_report(args.probe, args.tasks, data_root=args.data_root,
                                          max_samples=args.max_samples, seed=args.seed)
        if args.gains_from:
            report["distance_vs_gain"] = analysis.distance_vs_gain(report, args.gains_from, args.labels_per_class)
            analysis.plot_distance_vs_gain(report["distance_vs_gain"], out / "task2vec_vs_gain.png")
        analysis.write_json(out / "task2vec.json", report)
        analysis.plot_distance_matrix(report, out / "task2vec.png")
        names = report["names"]
        print(_table([[n] + [f"{v:.3f}" for v in row] for n, row in zip(names, report["distances"])], ["task"] + names))
        if "distance_vs_gain" in report:
            r = report["distance_vs_gain"]
            print(f"\ndistance vs gain over scratch (k={r['labels_per_class']}, {r['n_pairs']} pairs): Spearman "
                  f"{r['spearman']:+.3f}, Kendall {r['kendall_tau']:+.3f}; plot {out / 'task2vec_vs_gain.png'}")
        print(f"\nwritten: {out / 'task2vec.json'}, {out / 'task2vec.png'}")
    elif args.analysis == "landscape":
        for run in args.runs:
            info = analysis.landscape_report(run, out / f"landscape_{Path(run).name}.png", data_root=args.data_root,
                                             max_samples=args.max_samples, seed=args.seed)
            analysis.write_json(out / f"landscape_{Path(run).name}.json", info)
            print(f"{run}: sharpness {info['sharpness']:.4g}, plot {info['plot']}")
    return 0


def _grid_accuracies(grids: list[str] | None, runs: list[str], labels_per_class, target: str | None = None) -> list[float]:
    """Mean fine-tuned accuracy of each run at k labels per class (on ``target`` when given), from grid
    folders' cells.jsonl."""
    import statistics

    from .errors import ConfigError

    if not grids:
        raise ConfigError("give the candidates' fine-tuned accuracies: --accuracies A B C ... or --accuracies-from GRID_DIR")
    cells = [json.loads(line) for grid in grids for line in (Path(grid) / "cells.jsonl").read_text().splitlines()
             if line.strip()]
    grid = ", ".join(grids)
    accuracies = []
    for run in runs:
        values = [c["target_test/acc"] for c in cells if c["strategy"] == "finetune" and
                  str(c["labels_per_class"]) == str(labels_per_class) and
                  (target is None or c.get("target") == target) and
                  Path(c["pretrained_run"]).resolve() == Path(run).resolve()]
        if not values:
            raise ConfigError(f"no finetune cell of {run} at k={labels_per_class}"
                              f"{f' on {target}' if target else ''} in {grid} (cells.jsonl)")
        accuracies.append(statistics.fmean(values))
    return accuracies


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

    root = data_root(args.data_root)
    rows = []
    for name in DATASETS:
        info = DATASETS.get(name)
        present = info.present_parts(root) if info.kind in ("image", "features") else (
            ["yes"] if (root / name).is_dir() else [])
        where = "embedded" if info.embedded else ("download" if info.downloadable else "data root")
        rows.append([name, info.kind, str(info.num_classes), ",".join(info.parts), ",".join(present) or "-", where])
    print(f"data root: {root}\n")
    print(_table(rows, ["name", "kind", "classes", "parts", "present", "source"]))
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
        p.add_argument("--no-progress", action="store_true")
        _common(p)
        p.set_defaults(func=func)

    for name, strategy, text in (("probe", "probe", "linear classifier on the frozen pretrained encoder"),
                                 ("finetune", "finetune", "fine-tune the pretrained encoder and a new classifier")):
        p = sub.add_parser(name, help=f"{text}, on the run's transfer task with K labels per class")
        p.add_argument("run", help="a finished pretraining run folder")
        p.add_argument("--labels-per-class", type=_labels, required=True, metavar="K", help="a positive integer or 'all'")
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
    p.add_argument("--labels-per-class", type=_labels, nargs="+", metavar="K", help="default: the config's transfer list")
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
    for name, text in (("divergence", "Ben-David terms: source/target error, proxy A-distance, joint error lambda"),
                       ("features", "t-SNE of source and target features, by domain and by class"),
                       ("scores", "LogME/H-score/TransRate of candidate pretrained runs vs their fine-tuned accuracy"),
                       ("landscape", "loss from initialisation to solution, 2-D filter-normalised slice, sharpness"),
                       ("cka", "linear CKA between every layer of two runs' encoders, on run A's test data"),
                       ("transfer", "negative-transfer check: adapted vs source-only vs training on a few target labels")):
        q = asub.add_parser(name, help=text)
        q.add_argument("runs", nargs="+", help="finished run folders")
        q.add_argument("--out", required=True, help="folder for the JSON and PNG files")
        q.add_argument("--max-samples", type=int, default={"divergence": 2000, "scores": 2000, "cka": 500}.get(name, 1000),
                       help="samples per set (drawn with --seed)")
        q.add_argument("--seed", type=int, default=0)
        if name == "transfer":
            q.add_argument("--labels-per-class", type=int, default=10, help="target labels for the target-scratch baseline")
            q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="target-scratch seeds")
        if name == "divergence":
            q.add_argument("--classifier", choices=["linear", "mlp"], default="linear", help="the domain classifier")
        if name == "scores":
            q.add_argument("--accuracies", type=float, nargs="+", help="fine-tuned accuracy of each run, in order")
            q.add_argument("--accuracies-from", metavar="GRID_DIR", nargs="+", help="read them from `transferlab grid` folders")
            q.add_argument("--labels-per-class", type=_labels, default="all", help="the grid's k to read (default all)")
            q.add_argument("--target", metavar="DATASET", help="score on this dataset's train part instead of the runs' "
                           "transfer: section")
        _common(q)
        q.set_defaults(func=cmd_analyze)
    q = asub.add_parser("task2vec", help="Task2Vec distance matrix between tasks, with a run's encoder as the probe")
    q.add_argument("probe", help="a finished run whose encoder is the probe network (e.g. a pretraining run)")
    q.add_argument("--tasks", nargs="+", required=True, metavar="DATASET[:PART]", help="e.g. mnist usps mnist_m "
                   "office_caltech10_images:amazon")
    q.add_argument("--out", required=True)
    q.add_argument("--max-samples", type=int, default=500)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--gains-from", metavar="GRID_DIR", nargs="+",
                   help="`transferlab grid --target T` folders of source models trained on the tasks above: correlate "
                        "each (source, target) distance with the measured fine-tuning gain over scratch")
    q.add_argument("--labels-per-class", type=_labels, default=10, help="the grids' k to read (default 10)")
    _common(q)
    q.set_defaults(func=cmd_analyze)
    q = asub.add_parser("layers", help="Yosinski et al.'s AnB/BnB(+) curves over the number of copied layers")
    q.add_argument("--task-a", required=True, metavar="CONFIG", help="supervised config of task A")
    q.add_argument("--task-b", required=True, metavar="CONFIG", help="supervised config of task B (same model)")
    q.add_argument("--out", required=True)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--jobs", type=int, default=1, help="runs at once, in separate processes")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override both configs")
    _common(q)
    q.set_defaults(func=cmd_analyze)

    p = sub.add_parser("eval", help="re-evaluate a finished run's final model on its target test split")
    p.add_argument("run")
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("datasets", help="list known datasets or download one")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    q = dsub.add_parser("list", help="what is known and what is present under the data root")
    _common(q)
    q.set_defaults(func=cmd_datasets_list)
    q = dsub.add_parser("download", help="download from the canonical source, verify sha256, convert")
    q.add_argument("name")
    _common(q)
    q.set_defaults(func=cmd_datasets_download)

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
