"""``transferlab analyze divergence``: the Ben-David terms of trained models (Ben-David et al., "A theory
of learning from different domains", 2010): source error, target error, the proxy A-distance of their
features and the joint error λ (which needs target labels: analysis only). Compare a source-only run with
adapted runs of the same task to see whether adaptation aligned the domains."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TransferlabError
from ..experiment import load_run, method_config
from .common import Command, pyplot, run_arguments, run_name, save_figure, source_eval_set, table, write_json


def divergence_report(run_dir: str | Path, *, data_root: str | Path | None = None, max_samples: int = 2000,
                      classifier: str = "linear", seed: int = 0) -> dict[str, Any]:
    """Ben-David terms of a domain adaptation run (errors in %, A-distance in [0, 2], λ in [0, 2])."""
    from ..analysis.divergence import joint_error, proxy_a_distance
    from ..analysis.features import extract, sample

    experiment = load_run(run_dir, data_root)
    if experiment.test is None or not experiment.method.classifies():
        raise TransferlabError(f"{run_dir} has no classifier and target test set; the divergence report needs a "
                               f"domain adaptation (or source-only) run")
    method, transform = experiment.method, experiment.transform
    source = extract(method, sample(source_eval_set(experiment, data_root), max_samples, seed), transform, "source")
    target = extract(method, sample(experiment.test, max_samples, seed), transform, "target")
    error = lambda d: 100.0 * float((d["logits"].argmax(1) != d["labels"]).mean())  # noqa: E731
    pad = proxy_a_distance(source["features"], target["features"], classifier=classifier, seed=seed)
    lam = joint_error(source["features"], source["labels"], target["features"], target["labels"], seed=seed)
    c = experiment.config
    return {
        "run": str(run_dir), "method": method_config(c).name, "seed": c.seed,
        "task": f"{c.data.source.name}->{c.data.target.name if c.data.target else experiment.test.name}",
        "source_error": error(source), "target_error": error(target),
        "a_distance": pad["a_distance"], "a_distance_raw": pad["a_distance_raw"], "domain_error": pad["domain_error"],
        "lambda": lam["lambda"], "lambda_source_error": lam["source_error"], "lambda_target_error": lam["target_error"],
        "n_source": len(source["features"]), "n_target": len(target["features"]), "classifier": classifier,
    }


def plot_divergence(reports: list[dict[str, Any]], path: Path) -> None:
    """Bars of A-distance, λ and target error per method (mean ± std over the runs given)."""
    plt = pyplot()
    methods = list(dict.fromkeys(r["method"] for r in reports))
    keys = [("a_distance", "proxy A-distance"), ("lambda", "joint error λ"), ("target_error", "target error (%)")]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=120)
    for ax, (key, title) in zip(axes, keys):
        values = [[r[key] for r in reports if r["method"] == m] for m in methods]
        ax.bar(range(len(methods)), [np.mean(v) for v in values], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values],
               capsize=3, color=["#888888" if m == "source_only" else "#3b75af" for m in methods])
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(reports[0]["task"], fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_arguments(parser, max_samples=2000)
    parser.add_argument("--classifier", choices=["linear", "mlp"], default="linear", help="the domain classifier")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    reports = [divergence_report(run, data_root=args.data_root, max_samples=args.max_samples,
                                 classifier=args.classifier, seed=args.seed) for run in args.runs]
    write_json(out / "divergence.json", reports)
    plot_divergence(reports, out / "divergence.png")
    rows = [[run_name(r["run"]), r["method"], f"{r['source_error']:.1f}", f"{r['target_error']:.1f}",
             f"{r['a_distance']:.3f}", f"{r['lambda']:.3f}"] for r in reports]
    print(table(rows, ["run", "method", "source err %", "target err %", "A-distance", "lambda"]))
    print(f"\nwritten: {out / 'divergence.json'}, {out / 'divergence.png'} (lambda uses target labels: analysis only)")


COMMAND = Command("divergence", "Ben-David terms: source/target error, proxy A-distance, joint error lambda",
                  _arguments, _run)
