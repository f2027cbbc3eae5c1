"""Command line: ``transferlab demo | train | eval | datasets | methods``.

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


def cmd_eval(args: argparse.Namespace) -> int:
    from .experiment import load_run

    experiment = load_run(args.run, args.data_root)
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

    p = sub.add_parser("train", help="train a config; saves config, metrics, checkpoints, model and result")
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. optim.lr=0.1")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest intact checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete a previous run in --out first")
    p.add_argument("--no-progress", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_train)

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
