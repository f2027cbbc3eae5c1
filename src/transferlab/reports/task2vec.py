"""``transferlab analyze task2vec``: Task2Vec distances between tasks (Achille et al., "Task2Vec: Task
Embedding for Meta-Learning", ICCV 2019), with a run's encoder as the probe network, and whether those
distances predict the fine-tuning gains that ``transferlab grid`` measured."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data as tl_data
from ..errors import TransferlabError
from ..experiment import build, load_config, resolved_config
from ..protocol import read_run_config
from .common import Command, parse_labels, pyplot, save_figure, table, write_json


def task2vec_report(probe_run: str | Path, tasks: Sequence[str], *, data_root: str | Path | None = None,
                    max_samples: int = 500, seed: int = 0) -> dict[str, Any]:
    """Task2Vec embeddings of ``tasks`` ("dataset" or "dataset:part") with the encoder of ``probe_run`` as
    the fixed probe network: per task, a linear head is fitted on the frozen features, then the diagonal
    Fisher of the encoder's weights (exact expectation over the head's predictive distribution) is
    averaged per filter, as in the paper; returns the embeddings' pairwise normalised-cosine distances.
    Inputs are preprocessed as the probe was trained (size, channels), so any image task can be compared."""
    from ..analysis.features import sample
    from ..analysis.task2vec import distance_matrix, fisher_diagonal, probe_head

    config = read_run_config(probe_run)
    raw = resolved_config(config)
    raw["model"]["encoder_init"] = str(Path(probe_run).resolve())
    raw["method"] = {"name": "supervised"}
    probe = build(load_config(raw=raw), data_root)
    encoder = probe.method.encoder.eval()
    embeddings, info = {}, []
    for spec in tasks:
        name, _, part = spec.partition(":")
        dataset = sample(tl_data.load(name, part or "train", data_root or config.data.root), max_samples, seed)
        x = probe.transform(dataset.x)
        with torch.no_grad():
            features = encoder(x)
        head = probe_head(features, dataset.y, dataset.num_classes)
        model = torch.nn.Sequential(encoder, head)
        names = [f"0.{n}" for n, _ in encoder.named_parameters()]
        fisher = fisher_diagonal(model, x.contiguous(), parameters=names, exact=True)
        per_filter = [f.mean(dim=tuple(range(1, f.ndim))) if f.ndim > 1 else f for _, f in sorted(fisher.items())]
        embeddings[spec] = torch.cat(per_filter)
        with torch.no_grad():
            accuracy = 100.0 * float((head(features).argmax(1) == dataset.y).float().mean())
        info.append({"task": spec, "n": len(dataset), "classes": dataset.num_classes, "probe_train_acc": accuracy})
    names, distances = distance_matrix(embeddings)
    return {"probe_run": str(probe_run), "tasks": info, "names": names, "distances": distances.tolist()}


def distance_vs_gain(report: dict[str, Any], grids: Sequence[str | Path], labels_per_class: int | str = 10,
                     strategy: str = "finetune") -> dict[str, Any]:
    """Does Task2Vec distance predict transfer? Pairs each (source task, target task) of ``grids`` (folders
    of ``transferlab grid`` runs whose pretrained models were trained on different source datasets) with
    its measured gain over training from scratch (``strategy`` at ``labels_per_class``, mean over seeds)
    and the two tasks' distance in ``report`` (:func:`task2vec_report`, which must hold both tasks).
    Returns the pairs and the rank correlations (Spearman, Kendall): negative means that closer tasks
    transfer better, as Achille et al. report."""
    from scipy.stats import kendalltau, spearmanr

    index = {name: i for i, name in enumerate(report["names"])}
    pairs = []
    for grid in grids:
        path = Path(grid) / "results.json"
        if not path.is_file():
            raise TransferlabError(f"{grid} has no results.json: run `transferlab grid ... --out {grid}` first")
        for record in json.loads(path.read_text()):
            if not record["method"].endswith(f"+{strategy}") or str(record["labels_per_class"]) != str(labels_per_class) \
                    or "gain_vs_scratch" not in record:
                continue
            runs = next(iter(record["pretraining"].values()))
            domain = read_run_config(runs[0]).data.source
            source = domain.name if domain.part == "train" else f"{domain.name}:{domain.part}"
            target = record["target"]
            missing = [t for t in (source, target) if t not in index]
            if missing:
                raise TransferlabError(f"the Task2Vec report has no task {missing} (it has {', '.join(report['names'])}); "
                                       f"add them to --tasks")
            pairs.append({"source": source, "target": target, "distance": report["distances"][index[source]][index[target]],
                          "gain": record["gain_vs_scratch"], "accuracy": record["mean"], "std": record["std"],
                          "negative_transfer": record.get("negative_transfer", False)})
    if len(pairs) < 3:
        raise TransferlabError(f"found {len(pairs)} (source, target) pairs with a {strategy} gain at k={labels_per_class} "
                               f"in {', '.join(map(str, grids))}; need at least 3")
    d, g = [p["distance"] for p in pairs], [p["gain"] for p in pairs]
    per_target = {}
    for target in dict.fromkeys(p["target"] for p in pairs):
        members = [p for p in pairs if p["target"] == target]
        if len(members) >= 3:
            per_target[target] = float(spearmanr([p["distance"] for p in members], [p["gain"] for p in members]).statistic)
    return {"labels_per_class": labels_per_class, "strategy": strategy, "pairs": pairs,
            "spearman": float(spearmanr(d, g).statistic), "kendall_tau": float(kendalltau(d, g).statistic),
            "spearman_per_target": per_target, "n_pairs": len(pairs)}


def plot_distance_vs_gain(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    targets = list(dict.fromkeys(p["target"] for p in result["pairs"]))
    for target in targets:
        members = [p for p in result["pairs"] if p["target"] == target]
        ax.errorbar([p["distance"] for p in members], [p["gain"] for p in members], yerr=[p["std"] for p in members],
                    fmt="o", capsize=2, label=f"target {target}")
        for p in members:
            ax.annotate(p["source"].split(":")[-1], (p["distance"], p["gain"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("Task2Vec distance (source, target)")
    ax.set_ylabel(f"gain over scratch, k={result['labels_per_class']} (points)")
    ax.set_title(f"Spearman {result['spearman']:+.2f}, Kendall {result['kendall_tau']:+.2f} ({result['n_pairs']} pairs)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_distance_matrix(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names, d = report["names"], np.asarray(report["distances"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.6 + 0.6 * len(names)), dpi=120)
    image = ax.imshow(d, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{d[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if d[i, j] < d.max() * 0.6 else "black")
    fig.colorbar(image, ax=ax, label="Task2Vec distance")
    ax.set_title(f"probe: {Path(report['probe_run']).name}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("probe", help="a finished run whose encoder is the probe network (e.g. a pretraining run)")
    parser.add_argument("--tasks", nargs="+", required=True, metavar="DATASET[:PART]", help="e.g. mnist usps mnist_m "
                        "office_caltech10_images:amazon")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gains-from", metavar="GRID_DIR", nargs="+",
                        help="`transferlab grid --target T` folders of source models trained on the tasks above: correlate "
                             "each (source, target) distance with the measured fine-tuning gain over scratch")
    parser.add_argument("--labels-per-class", type=parse_labels, default=10, help="the grids' k to read (default 10)")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    report = task2vec_report(args.probe, args.tasks, data_root=args.data_root, max_samples=args.max_samples,
                             seed=args.seed)
    if args.gains_from:
        report["distance_vs_gain"] = distance_vs_gain(report, args.gains_from, args.labels_per_class)
        plot_distance_vs_gain(report["distance_vs_gain"], out / "task2vec_vs_gain.png")
    write_json(out / "task2vec.json", report)
    plot_distance_matrix(report, out / "task2vec.png")
    names = report["names"]
    print(table([[n] + [f"{v:.3f}" for v in row] for n, row in zip(names, report["distances"])], ["task"] + names))
    if "distance_vs_gain" in report:
        r = report["distance_vs_gain"]
        print(f"\ndistance vs gain over scratch (k={r['labels_per_class']}, {r['n_pairs']} pairs): Spearman "
              f"{r['spearman']:+.3f}, Kendall {r['kendall_tau']:+.3f}; plot {out / 'task2vec_vs_gain.png'}")
    print(f"\nwritten: {out / 'task2vec.json'}, {out / 'task2vec.png'}")


COMMAND = Command("task2vec", "Task2Vec distance matrix between tasks, with a run's encoder as the probe", _arguments, _run)
