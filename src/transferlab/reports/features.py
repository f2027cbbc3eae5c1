"""``transferlab analyze features``: t-SNE pictures of the features a run's classifier sees, source and
target together, coloured by domain (did adaptation mix them?) and by class (are they separable?)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..experiment import load_run, method_config
from .common import Command, pyplot, run_arguments, run_name, save_figure, source_eval_set


def feature_map(run_dir: str | Path, path: Path, *, data_root: str | Path | None = None, max_samples: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """t-SNE of source and target test features of a run; left coloured by domain, right by class."""
    from sklearn.manifold import TSNE

    from ..analysis.features import extract, sample

    experiment = load_run(run_dir, data_root)
    method, transform = experiment.method, experiment.transform
    source = extract(method, sample(source_eval_set(experiment, data_root), max_samples, seed), transform, "source")
    target = extract(method, sample(experiment.test, max_samples, seed), transform, "target")
    features = np.concatenate([source["features"], target["features"]])
    embedded = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(features)
    n_s = len(source["features"])
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4.2), dpi=120)
    a.scatter(*embedded[:n_s].T, s=3, c="#3b75af", label=f"source ({experiment.config.data.source.name})", alpha=0.6)
    a.scatter(*embedded[n_s:].T, s=3, c="#d9534f", label=f"target ({experiment.test.name})", alpha=0.6)
    a.legend(fontsize=8, markerscale=4)
    a.set_title("by domain", fontsize=9)
    labels = np.concatenate([source["labels"], target["labels"]])
    b.scatter(*embedded.T, s=3, c=labels, cmap="tab10", alpha=0.6)
    b.set_title("by class", fontsize=9)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{run_name(run_dir)}: {method_config(experiment.config).name}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {"run": str(run_dir), "plot": str(path), "n_source": n_s, "n_target": len(features) - n_s}


def _run(args: argparse.Namespace) -> None:
    for run in args.runs:
        info = feature_map(run, Path(args.out) / f"tsne_{Path(run).name}.png", data_root=args.data_root,
                           max_samples=args.max_samples, seed=args.seed)
        print(f"{run}: {info['plot']}")


COMMAND = Command("features", "t-SNE of source and target features, by domain and by class", run_arguments, _run)
