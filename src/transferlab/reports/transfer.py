"""``transferlab analyze transfer``: the negative-transfer check of one domain adaptation task. Each
method's target accuracy is compared with its task's ``source_only`` runs, and source-only with training
on a few labelled target samples instead of transferring (target-scratch)."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import TransferlabError
from ..experiment import load_config, method_config, resolved_config, train
from ..protocol import read_run_config
from .common import Command, run_arguments, table, write_json


def _summary(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def transfer_check(runs: Sequence[str | Path], *, labels_per_class: int = 10, seeds: Sequence[int] = (0, 1, 2),
                   data_root: str | Path | None = None, out_dir: Path | None = None, log=print) -> dict[str, Any]:
    """Adapted vs source-only vs target-scratch on one task. ``runs`` are finished domain adaptation
    runs of one task (any methods, including ``source_only``); target-scratch trains the same model
    with ``supervised`` on ``labels_per_class`` labelled target samples per class (the cost of
    labelling a few target images instead of transferring), one run per seed. Flags negative transfer:
    a method below source-only, or source-only below target-scratch, by more than the two standard
    deviations combined."""
    by_method: dict[str, list[float]] = {}
    tasks = set()
    for run in runs:
        config = read_run_config(run)
        if config.data.target is None:
            raise TransferlabError(f"{run} is not a domain adaptation run (no data.target)")
        tasks.add((config.data.source.name, config.data.target.name))
        result = json.loads((Path(run) / "result.json").read_text())
        by_method.setdefault(method_config(config).name, []).append(result["target_test/acc"])
    if len(tasks) != 1:
        raise TransferlabError(f"the runs belong to different tasks {sorted(tasks)}; compare one task at a time")
    if "source_only" not in by_method:
        raise TransferlabError("include the task's source_only runs: negative transfer is judged against them")
    reference = resolved_config(read_run_config(runs[0]))
    scratch = []
    for seed in seeds:
        raw = {**reference, "seed": seed, "method": {"name": "supervised"}}
        target = reference["data"]["target"]
        raw["data"] = {**reference["data"], "source": {**target, "labels_per_class": labels_per_class},
                       "target": None, "test": reference["data"]["test"] or {**target, "part": "test"}}
        raw["train"] = {**reference["train"], "iterations": 500, "eval_every": 0, "checkpoint_every": 0}
        raw["data"]["batch_size"] = min(reference["data"]["batch_size"], 64)
        out = out_dir / f"target_scratch_seed{seed}" if out_dir is not None else None
        result = train(load_config(raw=raw), out, data_root=data_root, overwrite=True, progress=False)
        log(f"  target-scratch ({labels_per_class} labels/class) seed {seed}: {result['target_test/acc']:.1f}%")
        scratch.append(result["target_test/acc"])
    rows = {name: _summary(values) for name, values in by_method.items()}
    rows[f"target_scratch_{labels_per_class}"] = _summary(scratch)
    base, own = rows["source_only"], rows[f"target_scratch_{labels_per_class}"]
    for name, row in rows.items():
        if name not in ("source_only", f"target_scratch_{labels_per_class}"):
            row["gain_vs_source_only"] = row["mean"] - base["mean"]
            row["negative_transfer"] = row["gain_vs_source_only"] < -(row["std"] + base["std"])
    base["gain_vs_target_scratch"] = base["mean"] - own["mean"]
    base["negative_transfer"] = base["gain_vs_target_scratch"] < -(base["std"] + own["std"])
    (source, target), = tasks
    return {"task": f"{source}->{target}", "labels_per_class": labels_per_class, "methods": rows,
            "note": "target-scratch uses target labels: it is the alternative to transfer, not a method"}


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_arguments(parser)
    parser.add_argument("--labels-per-class", type=int, default=10, help="target labels for the target-scratch baseline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="target-scratch seeds")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    report = transfer_check(args.runs, labels_per_class=args.labels_per_class, seeds=args.seeds,
                            data_root=args.data_root, out_dir=out / "runs")
    write_json(out / "transfer.json", report)
    rows = [[name, f"{r['mean']:.1f} ± {r['std']:.1f}", len(r["values"]),
             "NEGATIVE TRANSFER" if r.get("negative_transfer") else ""] for name, r in report["methods"].items()]
    print(f"{report['task']}: target test accuracy %")
    print(table(rows, ["method", "acc", "runs", "flag"]))
    print(f"\nwritten: {out / 'transfer.json'}")


COMMAND = Command("transfer", "negative-transfer check: adapted vs source-only vs training on a few target labels",
                  _arguments, _run)
