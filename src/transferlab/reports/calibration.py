"""``transferlab analyze calibration``: does a finished classifier's confidence match its accuracy, and does
temperature scaling fix it (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017).

The run's logits on a labelled validation set (``--val``) fit one temperature T
(:func:`transferlab.analysis.calibration.fit_temperature`); the test set (``--on``, default the run's own test set)
is only scored: accuracy, ROC AUC, NLL and ECE (equal-width and equal-mass bins) before and after dividing its logits
by T. Without ``--val`` the uncalibrated metrics alone are reported. Writes ``calibration.json`` and
``reliability.png`` (the reliability diagram before / after). Also the shared pieces of the commands that look at one
run's predictions (:mod:`.gradcam` uses them): ``DATASET[:PART]`` arguments, the run's class view, its logits.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data as tl_data
from ..config import Config, DomainConfig
from ..errors import ConfigError, DataError
from ..experiment import Experiment, load_domain, load_for_eval, predict_logits, read_run_config
from ..validation import closest
from .common import Command, run_name, table, write_json


# ---------------------------------------------------------------- one run's predictions (shared with gradcam)


def run_config(run_dir: str | Path) -> Config:
    """A run folder's config (validated); the data root and class views of the sets come from it."""
    return read_run_config(run_dir, finished=False)


def dataset_spec(text: str, root: str | Path | None, option: str, default_parts: tuple[str, ...] = ("test",)
                 ) -> DomainConfig:
    """``DATASET[:PART]`` (the syntax of ``transferlab eval --on``) as a :class:`DomainConfig`. Without a part: the
    first of ``default_parts`` the dataset has, else its only part. ``option`` names the argument in errors."""
    name, _, part = text.partition(":")
    if not name:
        raise ConfigError(f"{option} {text!r} names no dataset; give DATASET or DATASET:PART (e.g. pneumoniamnist:val)")
    info = tl_data.lookup(name, root)  # an unknown name: a did-you-mean error listing the known ones
    if not part:
        found = [p for p in default_parts if p in info.parts]
        if not found and len(info.parts) != 1:
            raise ConfigError(f"{option}: dataset {name} has no {' or '.join(default_parts)} part; name one: "
                              f"{', '.join(f'{name}:{p}' for p in info.parts)}")
        part = found[0] if found else info.parts[0]
    elif part not in info.parts:
        raise ConfigError(f"{option}: dataset {name} has no part '{part}'.{closest(part, list(info.parts))} "
                          f"Its parts: {', '.join(info.parts)}")
    return DomainConfig(name=name, part=part)


def with_run_view(domain: DomainConfig, config: Config) -> DomainConfig:
    """``domain`` with the run's class view (``data.<set>.classes``, e.g. a binary merge of labels) when it is a part
    of a dataset the run itself used with one, so its labels are the classes the model predicts."""
    for own in (config.data.test, config.data.target, config.data.source):
        if own is not None and own.name == domain.name and own.classes is not None:
            return domain.model_copy(update={"classes": own.classes})
    return domain


def classifier_run(run_dir: str | Path, on: str | None, data_root: str | Path | None, command: str
                   ) -> tuple[Config, Experiment]:
    """A finished classification run's final model and its labelled evaluation set (``on``, else its test set) as
    the experiment's ``test``; clear errors for a CTC run, an unlabelled set or another label space."""
    config = run_config(run_dir)
    root = data_root or config.data.root
    domain = with_run_view(dataset_spec(on, root, "--on"), config) if on else None
    experiment = load_for_eval(run_dir, data_root, on=domain)
    method, test = experiment.method, experiment.test
    if method.task != "classification":
        raise ConfigError(f"{run_dir} is a {method.task} run (it transcribes speech); analyze {command} needs a "
                          f"classification run (use `transferlab speech wer` for this one)")
    check_labels(test, method.num_classes, "--on" if on else "the run's test set")
    return config, experiment


def check_labels(dataset, num_classes: int, what: str) -> None:
    """``dataset`` has labels of the model's ``num_classes`` classes."""
    if dataset.y is None:
        raise DataError(f"{what} ({dataset.name}/{dataset.part}) has no labels; pass a labelled set")
    if dataset.num_classes != num_classes:
        raise DataError(f"{what} ({dataset.name}/{dataset.part}) has {dataset.num_classes} classes, but the run's "
                        f"model predicts {num_classes}; pass a set with the run's classes")


def run_logits(experiment: Experiment, dataset) -> np.ndarray:
    """Class logits (N, K), float64, of the run's model on a set prepared by ``experiment.modality``, in the set's
    order (:func:`transferlab.experiment.predict_logits`)."""
    return predict_logits(experiment, dataset).double().numpy()


# ---------------------------------------------------------------- the report


def _validation_set(experiment: Experiment, config: Config, domain: DomainConfig, root: str | Path | None):
    """The ``--val`` set, loaded and prepared as the run prepares its data."""
    kind = tl_data.lookup(domain.name, root).kind
    if kind != experiment.modality.kind:
        raise DataError(f"--val {domain.name} holds {kind} data, but the run's model takes {experiment.modality.kind} "
                        f"input; choose a validation set of kind {experiment.modality.kind}")
    dataset = load_domain(domain, root, config.seed)
    if len(dataset) == 0:
        raise DataError(f"--val {domain.name}/{domain.part} is empty: no samples to fit the temperature on")
    check_labels(dataset, experiment.method.num_classes, "--val")
    return experiment.modality.prepare(dataset)


def _json_diagram(d: dict[str, Any]) -> dict[str, Any]:
    """A :func:`~transferlab.analysis.calibration.reliability` result as JSON: lists, empty bins' NaN as null."""
    as_list = lambda a: [None if isinstance(v, float) and math.isnan(v) else v for v in np.asarray(a).tolist()]  # noqa: E731
    return {"edges": as_list(d["edges"]), "confidence": as_list(d["confidence"]), "accuracy": as_list(d["accuracy"]),
            "count": as_list(d["count"]), "ece": d["ece"]}


def calibration_analysis(run_dir: str | Path, *, val: str | None = None, on: str | None = None, n_bins: int = 15,
                         data_root: str | Path | None = None) -> dict[str, Any]:
    """The calibration of a finished classification run on its test set (or ``on``), before and after temperature
    scaling fitted on ``val`` (``DATASET[:PART]``, default part ``val``).

    Returns ``run``, ``test`` / ``val`` (``name/part``, ``val`` None without a validation set), ``n_test``,
    ``n_val``, ``n_bins``, ``temperature`` (None without ``val``), ``before`` / ``after``: the test set's
    :func:`~transferlab.analysis.calibration.logit_metrics` (``acc`` a fraction, ``auc``, ``nll`` in nats, ``ece``
    and ``ece_mass`` fractions; ``after`` None without ``val``), ``val_before`` / ``val_after``: the same on the
    validation set, ``reliability``: the equal-width reliability diagram's numbers before / after, and ``note``
    (what was not done, or a warning) when there is one."""
    from ..analysis.calibration import calibration_report, logit_metrics, reliability

    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"--bins must be a positive integer; got {n_bins!r}")
    config, experiment = classifier_run(run_dir, on, data_root, "calibration")
    test = experiment.test
    zt, yt = run_logits(experiment, test), test.y.cpu().numpy()
    report: dict[str, Any] = {"run": str(run_dir), "test": f"{test.name}/{test.part}", "n_test": len(test),
                              "classes": experiment.method.num_classes, "n_bins": n_bins}
    softmax = lambda z: torch.softmax(torch.from_numpy(z), dim=1).numpy()  # noqa: E731
    diagrams = {"before": reliability(softmax(zt), yt, n_bins)}
    if val is None:
        report.update({"val": None, "n_val": 0, "temperature": None, "before": logit_metrics(zt, yt, n_bins),
                       "after": None, "val_before": None, "val_after": None,
                       "note": "no --val set: temperature scaling is fitted on a labelled validation set, so only "
                               "the uncalibrated metrics are reported"})
    else:
        root = data_root or config.data.root
        domain = with_run_view(dataset_spec(val, root, "--val", ("val", "validation")), config)
        if (domain.name, domain.part) == (test.name, test.part):
            raise ConfigError(f"--val {domain.name}:{domain.part} is the set the report scores; fitting the "
                              f"temperature on it would bias the after-scaling numbers. Pass a held-out validation "
                              f"split (e.g. {domain.name}:val)")
        valset = _validation_set(experiment, config, domain, root)
        zv, yv = run_logits(experiment, valset), valset.y.cpu().numpy()
        fitted = calibration_report(zv, yv, zt, yt, n_bins)
        t = fitted["temperature"]
        report.update({"val": f"{valset.name}/{valset.part}", "n_val": len(valset), "temperature": t,
                       "before": fitted["before"], "after": fitted["after"],
                       "val_before": logit_metrics(zv, yv, n_bins), "val_after": logit_metrics(zv / t, yv, n_bins)})
        source = config.data.source
        if source is not None and (domain.name, domain.part) == (source.name, source.part):
            report["note"] = (f"--val {domain.name}:{domain.part} is the run's training set: its confidence there is "
                              f"higher than on unseen data, so T is too small; prefer a held-out split")
        diagrams[f"after (T={t:.2f})"] = reliability(softmax(zt / t), yt, n_bins)
    report["reliability"] = {name: _json_diagram(d) for name, d in diagrams.items()}
    return report


def plot_calibration(report: dict[str, Any], path: Path) -> Path:
    """The reliability diagram(s) of :func:`calibration_analysis` (before, and after temperature scaling)."""
    from ..analysis.calibration import plot_reliability

    return plot_reliability(report["reliability"], path, title=f"{run_name(report['run'])} on {report['test']}")


def _row(name: str, m: dict[str, Any] | None) -> list[str]:
    if m is None:
        return [name] + ["-"] * 5
    auc = "-" if m["auc"] is None else f"{m['auc']:.4f}"
    return [name, f"{100 * m['acc']:.2f}", auc, f"{m['nll']:.4f}", f"{100 * m['ece']:.2f}",
            f"{100 * m['ece_mass']:.2f}"]


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished classification run folder")
    parser.add_argument("--val", metavar="DATASET[:PART]", help="the labelled validation set the temperature is "
                        "fitted on (default part: val); without it only the uncalibrated metrics are reported")
    parser.add_argument("--on", metavar="DATASET[:PART]", help="the labelled set to report on (default: the run's "
                        "test set; default part: test)")
    parser.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE and the diagram (default 15)")
    parser.add_argument("--out", required=True, help="folder for calibration.json and reliability.png")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    report = calibration_analysis(args.run, val=args.val, on=args.on, n_bins=args.bins, data_root=args.data_root)
    write_json(out / "calibration.json", report)
    plot_calibration(report, out / "reliability.png")
    t = report["temperature"]
    rows = [_row(f"test {report['test']}", report["before"])]
    if t is not None:
        rows += [_row(f"test {report['test']}, T-scaled", report["after"]),
                 _row(f"val {report['val']}", report["val_before"]),
                 _row(f"val {report['val']}, T-scaled", report["val_after"])]
    print(table(rows, ["set", "acc %", "AUC", "NLL", "ECE %", "ECE-mass %"]))
    if t is not None:
        print(f"\ntemperature T = {t:.4f} (fitted on {report['val']} only)")
    if "note" in report:
        print(f"note: {report['note']}")
    print(f"written: {out / 'calibration.json'}, {out / 'reliability.png'}")


COMMAND = Command("calibration", "ECE, NLL, AUC and reliability diagram of a run's test predictions, before and "
                  "after temperature scaling fitted on --val", _arguments, _run)
