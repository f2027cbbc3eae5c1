"""``transferlab analyze information``: the information-bottleneck view of transfer (Tishby & Zaslavsky, "Deep
Learning and the Information Bottleneck Principle", 2015) on saved runs. For every encoder layer (and the
representation the classifier sees), two estimates each of

* I(Z; Y_target): how much the layer's output on target test data says about the target labels (analysis
  only: it reads target labels), and
* I(Z; D): how much it says about the domain, source vs target (equal numbers of each, so H(D) = 1 bit),

by a held-out probe's variational lower bound and by the k-NN estimator of Ross (2014) on a PCA projection
(:mod:`transferlab.analysis.information`). Good transfer in this view: adaptation lowers I(Z; D) without
lowering I(Z; Y_target). Several runs of one method (seeds) are summarised with a confidence interval."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TransferlabError
from ..experiment import load_run, method_config
from .common import Command, pyplot, run_arguments, run_name, save_figure, source_eval_set, table, write_json

ESTIMATORS = ("variational", "knn")
QUANTITIES = ("I(Z;Y)", "I(Z;D)")


def information_report(run_dir: str | Path, *, data_root: str | Path | None = None, max_samples: int = 1000,
                       seed: int = 0, neighbors: int = 3, knn_dims: int = 8, probe_dims: int | None = 64,
                       n_bootstrap: int = 200, n_subsamples: int = 30) -> dict[str, Any]:
    """Per layer of ``run_dir``'s encoder: I(Z; Y_target) on (at most ``max_samples`` of) the run's labelled test
    set, and, for domain adaptation runs, I(Z; D) between as many source held-out samples (the source test part,
    else its training set) and target test samples; each by :func:`~transferlab.analysis.information.variational_mi`
    (probe on ``probe_dims`` principal components, half of the samples to fit it, half to evaluate) and
    :func:`~transferlab.analysis.information.knn_mi` (``neighbors``, ``knn_dims``). All values in nats, with
    ``*_bits`` copies."""
    from ..analysis.features import extract, layer_activations, sample
    from ..analysis.information import domain_labels, knn_mi, variational_mi

    experiment = load_run(run_dir, data_root)
    if experiment.test is None or experiment.test.y is None:
        raise TransferlabError(f"{run_dir} has no labelled test set (data.test or data.target); I(Z; Y_target) needs "
                               f"the target labels of a run's test set")
    c = experiment.config
    method, transform = experiment.method, experiment.transform
    target = sample(experiment.test, max_samples, seed)
    y = target.y.numpy()
    layers = layer_activations(method, target, transform, "target")
    layers["representation"] = extract(method, target, transform, "target")["features"]
    source_layers = None
    if c.data.target is not None:  # a domain adaptation (or source-only) run: its source and target domains
        source = sample(source_eval_set(experiment, data_root), max_samples, seed)
        source_layers = layer_activations(method, source, transform, "source")
        source_layers["representation"] = extract(method, source, transform, "source")["features"]

    def both(z: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        return {"variational": variational_mi(z, labels, seed=seed, probe_dims=probe_dims, n_bootstrap=n_bootstrap),
                "knn": knn_mi(z, labels, k=neighbors, dims=knn_dims, seed=seed, n_subsamples=n_subsamples)}

    results = []
    for name, z in layers.items():
        entry = {"layer": name, "dims": int(z.shape[1]), "I(Z;Y)": both(z, y)}
        if source_layers is not None:
            entry["I(Z;D)"] = both(*domain_labels(source_layers[name], z, seed))
        results.append(entry)
    task = f"{c.data.source.name}->{c.data.target.name}" if c.data.target is not None else experiment.test.name
    return {"run": str(run_dir), "method": method_config(c).name, "seed": c.seed, "task": task,
            "test_set": f"{experiment.test.name}/{experiment.test.part}", "n_target": len(y),
            "n_source": None if source_layers is None else len(next(iter(source_layers.values()))),
            "layers": results, "unit": "nats (and *_bits)"}


def summarize(reports: list[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per method, layer, quantity and estimator: mean, standard deviation and a Student-t confidence interval
    over the runs (seeds), in nats and bits."""
    from scipy.stats import t

    groups: dict[tuple, list[float]] = {}
    for report in reports:
        for entry in report["layers"]:
            for quantity in QUANTITIES:
                for estimator in ESTIMATORS:
                    if quantity in entry:
                        key = (report["method"], entry["layer"], quantity, estimator)
                        groups.setdefault(key, []).append(entry[quantity][estimator]["mi"])
    summary = []
    for (method, layer, quantity, estimator), values in groups.items():
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        n = len(values)
        half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / n ** 0.5 if n > 1 else 0.0
        summary.append({"method": method, "layer": layer, "quantity": quantity, "estimator": estimator,
                        "n_runs": len(values), "mean": mean, "std": std, "ci": [mean - half, mean + half],
                        "mean_bits": mean / np.log(2),
                        "ci_bits": [(mean - half) / np.log(2), (mean + half) / np.log(2)],
                        "values": values})
    return summary


def plot_information(summary: list[dict[str, Any]], path: Path) -> None:
    """I(Z; Y_target) and I(Z; D) per layer in bits, one colour per method; solid: variational bound, dashed: kNN;
    bars: the confidence interval over runs."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    methods = list(dict.fromkeys(s["method"] for s in summary))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, quantity, title in zip(axes, QUANTITIES, ("I(Z; Y_target), target test", "I(Z; D), source vs target")):
        layers: list[str] = []
        for i, method in enumerate(methods):
            for estimator, style in zip(ESTIMATORS, ("-", "--")):
                rows = [s for s in summary
                        if (s["method"], s["quantity"], s["estimator"]) == (method, quantity, estimator)]
                if not rows:
                    continue
                layers = [r["layer"] for r in rows]
                mean = np.array([r["mean_bits"] for r in rows])
                ci = np.array([r["ci_bits"] for r in rows]).T
                ax.errorbar(range(len(rows)), mean, yerr=[mean - ci[0], ci[1] - mean], ls=style, marker="o", ms=3,
                            capsize=2, color=colours[i % 10], label=f"{method} ({estimator})")
        if layers:
            ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=7)
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "no domain adaptation runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel("bits")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_arguments(parser, max_samples=1000)
    parser.add_argument("--neighbors", type=int, default=3, help="k of the kNN estimator")
    parser.add_argument("--knn-dims", type=int, default=8, help="PCA dimensions for the kNN estimator")
    parser.add_argument("--probe-dims", type=int, default=64,
                        help="PCA dimensions for the probe of the variational bound (0: all features)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the probe's interval")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    reports = [information_report(run, data_root=args.data_root, max_samples=args.max_samples, seed=args.seed,
                                  neighbors=args.neighbors, knn_dims=args.knn_dims, probe_dims=args.probe_dims or None,
                                  n_bootstrap=args.bootstrap) for run in args.runs]
    summary = summarize(reports)
    write_json(out / "information.json", {"runs": reports, "summary": summary})
    plot_information(summary, out / "information.png")
    bits = lambda entry, q, e: f"{entry[q][e]['mi_bits']:.3f}" if q in entry else "-"  # noqa: E731
    rows = [[run_name(r["run"]), r["method"], entry["layer"],
             *(bits(entry, q, e) for q in QUANTITIES for e in ESTIMATORS)] for r in reports for entry in r["layers"]]
    print(table(rows, ["run", "method", "layer", "I(Z;Y) probe", "I(Z;Y) kNN", "I(Z;D) probe", "I(Z;D) kNN"]))
    print(f"\nbits; written: {out / 'information.json'}, {out / 'information.png'} (I(Z;Y) uses target labels: "
          f"analysis only)")


COMMAND = Command("information", "I(Z;Y_target) and I(Z;D) per layer: held-out probe bound and kNN estimate",
                  _arguments, _run)
