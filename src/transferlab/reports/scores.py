"""``transferlab analyze scores``: transferability scores of candidate pretrained encoders on one target
task (LogME, H-score, TransRate, and LEEP and NCE for candidates with a source classifier), and how well
each score ranks the candidates by the accuracy fine-tuning actually reached (weighted Kendall τ)."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, TransferlabError
from ..experiment import build, load_run, method_config
from ..protocol import downstream, read_run_config, transfer_config
from .common import Command, parse_labels, run_arguments, run_name, table, write_json


def score_candidates(runs: Sequence[str | Path], accuracies: Sequence[float], *, data_root: str | Path | None = None,
                     max_samples: int = 2000, seed: int = 0, target: str | None = None) -> dict[str, Any]:
    """Score each candidate run on one target task (the runs' common ``transfer:`` section, or the
    dataset ``target``: its labelled training set), and correlate every score with the fine-tuned
    ``accuracies``.

    LogME, H-score and TransRate use the encoder's features, so they score any candidate. LEEP and NCE
    use the candidate's own source classifier (its predictions over the source classes on the target
    images), so they are computed only when every candidate is a classifier (e.g. supervised source
    models); self-supervised encoders have none.
    """
    from ..analysis.features import extract, sample
    from ..analysis.scores import h_score, leep, logme, nce, transrate, weighted_kendall_tau

    if len(runs) != len(accuracies) or len(runs) < 3:
        raise TransferlabError(f"need one accuracy per candidate and at least 3 candidates; got {len(runs)} runs and "
                               f"{len(accuracies)} accuracies")
    from scipy.stats import kendalltau

    configs = [read_run_config(run) for run in runs]
    tasks = {json.dumps(downstream(c, target, run).train.model_dump(mode="json"), sort_keys=True)
             for run, c in zip(runs, configs)}
    if len(tasks) != 1:
        raise TransferlabError("the candidates transfer to different tasks (their transfer.train differs); scores "
                               "are compared on one target task (or give --target)")
    rows = []
    for run, pre, accuracy in zip(runs, configs, accuracies):
        config = transfer_config(run, "finetune", "all", seed, data_root=data_root, target=target)
        experiment = build(config, data_root)  # the candidate's encoder on the target task's data
        target_sample = sample(experiment.source, max_samples, seed)
        data = extract(experiment.method, target_sample, experiment.transform)
        row = {"run": str(run), "pretraining": method_config(pre).name, "source": pre.data.source.name,
               "finetuned_acc": accuracy,
               "logme": logme(data["features"], data["labels"]), "h_score": h_score(data["features"], data["labels"]),
               "transrate": transrate(data["features"], data["labels"])}
        source_model = load_run(run, data_root).method
        if source_model.classifies():  # the source classifier's predictions, on the target images
            logits = extract(source_model, target_sample, experiment.transform)["logits"]
            probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
            row["leep"] = leep(probs, data["labels"])
            row["nce"] = nce(probs.argmax(axis=1), data["labels"])
        rows.append(row)
    keys = ["logme", "h_score", "transrate"] + [k for k in ("leep", "nce") if all(k in r for r in rows)]
    correlation = {}
    for key in keys:
        scores = [r[key] for r in rows]
        correlation[key] = {"weighted_kendall_tau": weighted_kendall_tau(scores, accuracies),
                            "kendall_tau": float(kendalltau(scores, accuracies).statistic)}
    return {"target": json.loads(next(iter(tasks)))["name"], "candidates": rows, "correlation": correlation,
            "n_candidates": len(rows)}


def grid_accuracies(grids: list[str] | None, runs: list[str], labels_per_class, target: str | None = None) -> list[float]:
    """Mean fine-tuned accuracy of each run at k labels per class (on ``target`` when given), from grid
    folders' cells.jsonl."""
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


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_arguments(parser, max_samples=2000)
    parser.add_argument("--accuracies", type=float, nargs="+", help="fine-tuned accuracy of each run, in order")
    parser.add_argument("--accuracies-from", metavar="GRID_DIR", nargs="+", help="read them from `transferlab grid` folders")
    parser.add_argument("--labels-per-class", type=parse_labels, default="all", help="the grid's k to read (default all)")
    parser.add_argument("--target", metavar="DATASET", help="score on this dataset's train part instead of the runs' "
                        "transfer: section")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    accuracies = args.accuracies or grid_accuracies(args.accuracies_from, args.runs, args.labels_per_class, args.target)
    report = score_candidates(args.runs, accuracies, data_root=args.data_root, max_samples=args.max_samples,
                              seed=args.seed, target=args.target)
    write_json(out / "scores.json", report)
    keys = list(report["correlation"])
    rows = [[run_name(r["run"]), r["pretraining"], f"{r['finetuned_acc']:.1f}"] + [f"{r[k]:.3f}" for k in keys]
            for r in report["candidates"]]
    print(table(rows, ["run", "pretraining", "fine-tuned acc %"] + keys))
    for key, value in report["correlation"].items():
        print(f"{key}: weighted Kendall tau {value['weighted_kendall_tau']:+.3f}, Kendall tau {value['kendall_tau']:+.3f}")
    print(f"\nwritten: {out / 'scores.json'}")


COMMAND = Command("scores", "LogME/H-score/TransRate of candidate pretrained runs vs their fine-tuned accuracy",
                  _arguments, _run)
