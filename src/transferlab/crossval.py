"""The small-data evaluation protocol: stratified, grouped k-fold cross-validation repeated over seeds.

For each seed ``s`` and fold ``i`` of ``k`` one ordinary run is trained (``out_dir/seed<s>/fold<i>``) on the config
with ``data.source.fold = {k, index: i, role: train, seed: s, validation}`` and ``data.test`` the same set's fold ``i``
(``role: test``); the run's own ``seed`` is ``s`` too. The folds are stratified by label and never split a group (a
speaker; by default the ``duplicate_group`` of byte-identical images): :mod:`transferlab.data.splits`. With
``validation`` fold ``(i + 1) % k`` is held out of training as well and a temperature (Guo et al., ICML 2017) is fitted
on it alone; the test fold is used for nothing but the metrics.

Per cell, on the test fold: ``acc`` (fraction correct), ``auc`` (ROC AUC; one-vs-rest macro for more than two classes),
``nll`` (mean cross-entropy, nats) and ``ece`` (expected calibration error, 15 equal-width bins, a fraction), before
and after temperature scaling. ``cv.json`` keeps every cell and the mean ± std over all seed × fold cells; ``cv.md`` is
the table. The cells of one seed share most of their training data, so the std over cells understates the
uncertainty of the mean (Bengio & Grandvalet, JMLR 2004); :func:`paired_comparison` therefore gives, next to the plain
paired t-test, the corrected resampled t-test of Nadeau & Bengio (2003).

Finished cells are skipped when the cross-validation is run again (a killed one resumes; a cell stopped mid-training
continues from its newest checkpoint), and a folder holding cells of another config is refused.

A protocol layer: it uses :mod:`transferlab.experiment`, the analysis and the engine; nothing below imports it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .analysis.calibration import T_BOUNDS, apply_temperature, fit_temperature, logit_metrics
from .config import Config, DomainConfig, FoldConfig
from .engine.checkpoint import atomic_write_json, atomic_write_text, read_json
from .engine.pool import run_in_pool, worker_threads
from .errors import CheckpointError, ConfigError, DataError, TransferlabError
from .experiment import (load_config, load_domain, load_for_eval, method_config, predict_logits,
                         resolved_config, same_config, train)

METRICS = ("acc", "auc", "nll", "ece")
HIGHER_IS_BETTER = {"acc": True, "auc": True, "nll": False, "ece": False}
N_BINS = 15
CELL_FILE = "cell.json"  # a cell's row, written once its metrics are computed: the cell is done


# --- configs -------------------------------------------------------------------------------------------------------


def cell_config(config: Config, k: int, index: int, seed: int, validation: bool = True,
                group: str | None = None) -> Config:
    """The run of fold ``index`` of ``k`` under partition ``seed``: trains on the other folds (less the validation
    fold ``(index + 1) % k`` with ``validation``), is tested on fold ``index``, and uses ``seed`` as its own seed."""
    source = config.data.source
    fold = FoldConfig(k=k, index=index, role="train", seed=seed, validation=validation, group=group)
    test = DomainConfig(name=source.name, part=source.part, classes=source.classes, where=source.where,
                        exclude=source.exclude, translate=source.translate, perturb=source.perturb,
                        fold=fold.model_copy(update={"role": "test"}))
    raw = config.model_dump(mode="json")
    raw["seed"] = seed
    raw["data"]["source"]["fold"] = fold.model_dump(mode="json")
    raw["data"]["test"] = test.model_dump(mode="json", exclude_none=True)
    return load_config(raw=raw)


def _check_protocol(config: Config, k: int, seeds: Sequence[int], validation: bool, jobs: int) -> list[int]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"cross-validation needs k >= 2 folds; got {k!r}")
    if validation and k < 3:
        raise ConfigError(f"cross-validation with a validation fold needs k >= 3 (test, validation and at least one "
                          f"training fold); got k={k}. Use more folds or no validation fold")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be one or more non-negative integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a seed; a repeated seed is the same partition and run again")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer; got {jobs!r}")
    if config.data.source.fold is not None:
        raise ConfigError("cross-validation chooses data.source.fold itself (k, index, seed); remove it from the "
                          "config and give the folds, seeds and grouping column to the cross-validation")
    target = config.data.target
    if target is not None and (target.name, target.part) == (config.data.source.name, config.data.source.part):
        raise ConfigError(f"data.target is the cross-validated set itself ({target.name}/{target.part}): its test fold "
                          f"would be seen in training; cross-validate without data.target")
    from .methods import METHODS

    name = method_config(config).name
    if not METHODS.get(name).classifies() or config.task.name != "classification":
        raise ConfigError(f"cross-validation scores a classifier (accuracy, AUC, calibration); method {name} with "
                          f"task.name {config.task.name} is not one")
    return seeds


# --- one cell ------------------------------------------------------------------------------------------------------


def fold_metrics(logits: torch.Tensor | np.ndarray, labels, n_bins: int = N_BINS) -> dict[str, float | None]:
    """``acc``, ``auc`` (None when the labels hold one class), ``nll`` and ``ece`` (``n_bins`` equal-width bins) of
    ``logits`` against ``labels``: :func:`~transferlab.analysis.calibration.logit_metrics`' numbers of a test fold."""
    metrics = logit_metrics(logits, labels, n_bins)
    return {key: metrics[key] for key in METRICS}


def evaluate_cell(run_dir: str | Path, data_root: str | Path | None = None, n_bins: int = N_BINS) -> dict[str, Any]:
    """A finished cell's row: its test fold's metrics before and after a temperature fitted on its validation fold
    (when it has one), the fold sizes, and the run's parameter counts and training time."""
    run_dir = Path(run_dir)
    experiment = load_for_eval(run_dir, data_root)  # the run's final model and its test set (the test fold)
    c = experiment.config
    root = data_root or c.data.root
    test, fold = experiment.test, c.data.test.fold if c.data.test is not None else None
    if fold is None or fold.role != "test" or c.data.source.fold is None:
        raise CheckpointError(f"{run_dir} is not a cross-validation cell (its data.test is not a fold of its source)")
    z_test = predict_logits(experiment, test)
    before = fold_metrics(z_test, test.y, n_bins)
    after, temperature, n_val, at_bound = None, None, None, None
    if fold.validation:
        val_domain = c.data.test.model_copy(update={"fold": fold.model_copy(update={"role": "val"}), "label": "val"})
        val = experiment.modality.prepare(load_domain(val_domain, root, c.seed))
        z_val = predict_logits(experiment, val)
        temperature = fit_temperature(z_val, val.y)  # the validation fold only: the test fold fits nothing
        at_bound = any(math.isclose(temperature, bound, rel_tol=1e-3) for bound in T_BOUNDS)
        after = fold_metrics(apply_temperature(z_test.double(), temperature), test.y, n_bins)
        n_val = len(val)
        if after["acc"] != before["acc"]:
            raise TransferlabError(f"{run_dir}: temperature {temperature:.4g} changed the test accuracy "
                                   f"({before['acc']} -> {after['acc']}); a positive temperature keeps every argmax, "
                                   f"so this is a bug, please report it")
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return {"seed": c.data.source.fold.seed, "fold": c.data.source.fold.index, "n_train": len(load_domain(
            c.data.source, root, c.seed)), "n_val": n_val, "n_test": len(test), "temperature": temperature,
            "temperature_at_bound": at_bound, "before": before, "after": after, "parameters": result.get("parameters"),
            "train_seconds": result.get("train_seconds")}


def _same_config(saved: Path, config: Config) -> bool:
    try:
        return same_config(json.loads(saved.read_text()), config)
    except ValueError:  # unreadable
        return False


def run_cell(config: Config, run_dir: str | Path, data_root: str | Path | None = None, *, progress: bool = False,
             threads: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or skip when done) one cell and return its row (also written to ``run_dir/cell.json``)."""
    if threads is not None:
        torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if saved.is_file() and (run_dir / "result.json").is_file() and not _same_config(saved, config):
        raise CheckpointError(f"{run_dir} holds a finished run of another config (other settings, folds or seeds); "
                              f"cross-validate into another folder, or delete it to start over")
    cell_file = run_dir / CELL_FILE
    if cell_file.is_file() and (run_dir / "result.json").is_file():
        return json.loads(cell_file.read_text())
    if not (run_dir / "result.json").is_file():  # not trained to the end: train it, or go on from its checkpoint
        if log is not None and saved.is_file():
            log(f"  resuming {run_dir}")
        train(config, run_dir, data_root=data_root, resume=saved.is_file(), progress=progress)
    row = evaluate_cell(run_dir, data_root)
    atomic_write_json(cell_file, row)
    return row


def _pool_cell(config: Config, run_dir: str, data_root: str | None, threads: int) -> dict[str, Any]:
    return run_cell(config, run_dir, data_root, threads=threads)


# --- the cross-validation ------------------------------------------------------------------------------------------


def cross_validate(config: Config, out_dir: str | Path, *, k: int = 5, seeds: Sequence[int] = (0, 1, 2),
                   data_root: str | Path | None = None, validation: bool = True, group: str | None = None,
                   jobs: int = 1, progress: bool = False, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Cross-validate ``config``'s source set: k folds × ``seeds`` runs under ``out_dir/seed<s>/fold<i>``, then
    ``out_dir/cv.json`` (returned) and ``out_dir/cv.md``. ``group``: the per-sample column whose values must share a
    fold (default: ``duplicate_group`` when the set has one). ``data.test`` is replaced by the test fold; ``data.eval``
    sets are kept (each run evaluates them as usual). ``jobs`` cells train at once in separate processes;
    ``progress`` shows each run's progress bar (one job only)."""
    seeds = _check_protocol(config, k, seeds, validation, jobs)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"--out {out_dir} is a file; cross-validation needs a folder")
    cells = [(seed, index, cell_config(config, k, index, seed, validation, group)) for seed in seeds
             for index in range(k)]
    root = str(data_root) if data_root is not None else None
    cell_dir = lambda seed, index: out_dir / f"seed{seed}" / f"fold{index}"  # noqa: E731
    done = sum((cell_dir(s, i) / CELL_FILE).is_file() for s, i, _ in cells)
    say = log or (lambda _line: None)
    source = config.data.source
    say(f"cv: {source.name}/{source.part}, {k} folds x {len(seeds)} seed{'s' * (len(seeds) > 1)} = {len(cells)} "
        f"cells{' (fold i+1 validates: temperature scaling)' if validation else ''}; {done} already done, "
        f"{len(cells) - done} to run ({jobs} at a time)")
    rows: dict[tuple[int, int], dict[str, Any]] = {}

    def record(key: tuple[int, int], row: dict[str, Any]) -> None:
        rows[key] = row
        after = row["after"] or {}
        say(f"  seed {key[0]} fold {key[1]}: acc {row['before']['acc']:.3f}  auc {_fmt(row['before']['auc'])}  "
            f"nll {row['before']['nll']:.3f}  ece {row['before']['ece']:.3f}"
            + (f"  | T {row['temperature']:.2f}: nll {after['nll']:.3f}  ece {after['ece']:.3f}" if after else ""))

    threads = worker_threads(jobs)
    if jobs <= 1:
        for seed, index, cell in cells:
            record((seed, index), run_cell(cell, cell_dir(seed, index), root, progress=progress, threads=threads,
                                           log=say))
    else:
        run_in_pool([((seed, index), _pool_cell, (cell, str(cell_dir(seed, index)), root, threads))
                     for seed, index, cell in cells], jobs, record)
    ordered = [{"run": f"seed{s}/fold{i}", **rows[(s, i)]} for s, i, _ in cells]
    result = {
        "protocol": "stratified grouped k-fold cross-validation, repeated over seeds",
        "dataset": f"{source.name}/{source.part}",
        "k": k, "seeds": seeds, "validation": validation, "group": group,
        "metrics": {"acc": "fraction correct", "auc": "ROC AUC (one-vs-rest macro for > 2 classes)",
                    "nll": "mean cross-entropy (nats)", "ece": f"expected calibration error, {N_BINS} equal-width bins"},
        "n_bins": N_BINS,
        "config": resolved_config(config),
        "rows": ordered,
        "summary": summarize(ordered),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "cv.json", result)
    atomic_write_text(out_dir / "cv.md", summary_markdown(result))
    return result


def _mean_std(values: list[float | None]) -> dict[str, Any]:
    present = [float(v) for v in values if v is not None]
    return {"mean": statistics.fmean(present) if present else None,
            "std": statistics.stdev(present) if len(present) > 1 else None, "n": len(present)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std (ddof 1) and count over the cells of each metric, before and after temperature scaling
    (``after`` None without a validation fold), and of the temperature. Undefined values (AUC of a one-class fold)
    are left out and ``n`` says how many cells count."""
    out: dict[str, Any] = {"cells": len(rows),
                           "before": {m: _mean_std([r["before"][m] for r in rows]) for m in METRICS}}
    with_after = [r for r in rows if r.get("after")]
    out["after"] = {m: _mean_std([r["after"][m] for r in with_after]) for m in METRICS} if with_after else None
    out["temperature"] = _mean_std([r.get("temperature") for r in rows])
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(stat: dict[str, Any] | None) -> str:
    if stat is None or stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} ± {_fmt(stat['std'])}" + f" (n={stat['n']})"


def summary_markdown(cv: dict[str, Any]) -> str:
    """The cross-validation's table: mean ± std over all seed × fold cells of each metric, before and after
    temperature scaling."""
    s = cv["summary"]
    lines = [f"# Cross-validation: {cv['dataset']}", "",
             f"{cv['k']} folds x seeds {', '.join(map(str, cv['seeds']))} = {s['cells']} cells (stratified by label, "
             f"grouped by {cv['group'] or 'duplicate_group when present'}); "
             + ("fold i+1 validates: the temperature is fitted on it only." if cv["validation"] else
                "no validation fold: no temperature scaling."), "",
             "| metric | test fold | after temperature scaling |", "|---|---|---|"]
    for m in METRICS:
        lines.append(f"| {m} | {_pm(s['before'][m])} | {_pm(s['after'][m]) if s['after'] else '-'} |")
    if cv["validation"]:
        lines.append(f"| temperature | | {_pm(s['temperature'])} |")
        bound = sum(bool(r.get("temperature_at_bound")) for r in cv["rows"])
        if bound:
            lines += ["", f"In {bound} of {s['cells']} cells the temperature reached the end of its search range "
                          f"{T_BOUNDS} (a validation fold classified all right or all wrong): too small a validation "
                          f"fold to calibrate on."]
    lines += ["", "mean ± sample std over cells; " + "; ".join(f"{m}: {d}" for m, d in cv["metrics"].items()) + ".",
              "The cells of one seed share most training rows, so the std understates the uncertainty of the mean "
              "(compare strategies with `transferlab cv compare`, which pairs cells).", ""]
    return "\n".join(lines)


# --- comparing two cross-validations -------------------------------------------------------------------------------


def _metric(metric: str) -> tuple[str, str]:
    stage, _, name = metric.rpartition(".")
    stage = stage or "before"
    if stage not in ("before", "after") or name not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)} (the test fold's), or "
                          f"after.<metric> (after temperature scaling), e.g. after.nll")
    return stage, name


def _by_cell(rows: Sequence[dict[str, Any]], side: str) -> dict[tuple[int, int], dict[str, Any]]:
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        try:
            key = (int(row["seed"]), int(row["fold"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{side}: a row without an integer seed and fold ({sorted(row)[:8]}); pass the rows of a "
                            f"cv.json") from None
        if key in out:
            raise DataError(f"{side} has two rows for seed {key[0]} fold {key[1]}")
        out[key] = row
    return out


def paired_comparison(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]],
                      metric: str = "auc") -> dict[str, Any]:
    """A minus B, cell by cell: the rows (of two ``cv.json``) are matched by (seed, fold) and must be the same cells
    (and, when they say so, the same number of test rows). ``metric``: ``acc``, ``auc``, ``nll``, ``ece`` (on the
    test fold) or ``after.<metric>`` (after temperature scaling).

    Returns ``n`` (cells with the metric on both sides), ``mean_diff`` and ``std_diff`` (sample std) of A - B,
    ``wins``/``losses``/``ties`` of A (higher is better for acc and auc, lower for nll and ece), ``p_value`` of the
    paired t-test (``scipy.stats.ttest_rel``; it treats cells as independent, which overlapping training folds are
    not) and ``p_value_corrected``, the corrected resampled t-test of Nadeau & Bengio (2003), whose variance is
    scaled by ``1/n + n_test/n_train`` (None without fold sizes). p-values are None with fewer than two cells or when
    every difference is the same."""
    stage, name = _metric(metric)
    a, b = _by_cell(rows_a, "A"), _by_cell(rows_b, "B")
    if set(a) != set(b):
        only_a = ", ".join(f"seed {s} fold {f}" for s, f in sorted(set(a) - set(b))) or "none"
        only_b = ", ".join(f"seed {s} fold {f}" for s, f in sorted(set(b) - set(a))) or "none"
        raise DataError(f"the two cross-validations have different cells (only in A: {only_a}; only in B: {only_b}); "
                        f"a paired comparison needs the same folds and seeds on both sides")
    if not a:
        raise DataError("no cells to compare")
    pairs, ratios, skipped = [], [], 0
    for key in sorted(a):
        ra, rb = a[key], b[key]
        if ra.get("n_test") is not None and rb.get("n_test") is not None and ra["n_test"] != rb["n_test"]:
            raise DataError(f"seed {key[0]} fold {key[1]} has {ra['n_test']} test rows in A and {rb['n_test']} in B: "
                            f"not the same test fold (another dataset, k or grouping)")
        va, vb = (r.get(stage)[name] if r.get(stage) else None for r in (ra, rb))
        if va is None or vb is None:
            skipped += 1
            continue
        pairs.append((key, float(va), float(vb)))
        if ra.get("n_test") and ra.get("n_train") and rb.get("n_train"):
            ratios.append(ra["n_test"] / ((ra["n_train"] + rb["n_train"]) / 2))
    if not pairs:
        why = "without a validation fold there is no temperature scaling" if stage == "after" else "it is undefined"
        raise DataError(f"no cell has {metric} on both sides ({why})")
    diffs = np.array([va - vb for _, va, vb in pairs])
    n = len(diffs)
    sign = 1.0 if HIGHER_IS_BETTER[name] else -1.0
    mean = float(diffs.mean())
    std = float(diffs.std(ddof=1)) if n > 1 else None
    p_value = p_corrected = None
    if n > 1 and std is not None and std > 0:
        from scipy import stats

        p_value = float(stats.ttest_rel([va for _, va, _ in pairs], [vb for _, _, vb in pairs]).pvalue)
        if len(ratios) == n:
            t = mean / math.sqrt((1.0 / n + float(np.mean(ratios))) * std ** 2)
            p_corrected = float(2 * stats.t.sf(abs(t), df=n - 1))
    return {"metric": f"{stage}.{name}" if stage == "after" else name, "higher_is_better": HIGHER_IS_BETTER[name],
            "n": n, "skipped": skipped, "mean_a": float(np.mean([va for _, va, _ in pairs])),
            "mean_b": float(np.mean([vb for _, _, vb in pairs])), "mean_diff": mean, "std_diff": std,
            "wins": int((sign * diffs > 0).sum()), "losses": int((sign * diffs < 0).sum()),
            "ties": int((diffs == 0).sum()), "p_value": p_value, "p_value_corrected": p_corrected,
            "diffs": [{"seed": s, "fold": f, "a": va, "b": vb, "diff": va - vb} for (s, f), va, vb in pairs]}


def read_cv(path: str | Path) -> dict[str, Any]:
    """A cross-validation's ``cv.json`` (its folder or the file)."""
    path = Path(path)
    path = path / "cv.json" if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a finished cross-validation (run `transferlab cv` first)")
    cv = read_json(path)
    if not isinstance(cv, dict) or not isinstance(cv.get("rows"), list):
        raise CheckpointError(f"{path} is not a cross-validation result (no rows)")
    return cv


def compare_runs(dir_a: str | Path, dir_b: str | Path, metric: str = "auc") -> dict[str, Any]:
    """:func:`paired_comparison` of two cross-validation folders, refused unless they split the same set into the
    same folds (dataset, k, grouping: the test folds; the validation fold may differ)."""
    cv_a, cv_b = read_cv(dir_a), read_cv(dir_b)
    for key in ("dataset", "k", "group"):
        if cv_a.get(key) != cv_b.get(key):
            raise DataError(f"{dir_a} and {dir_b} differ in {key} ({cv_a.get(key)!r} vs {cv_b.get(key)!r}): their test "
                            f"folds are not the same, so cells cannot be paired")
    return {"a": str(dir_a), "b": str(dir_b), "dataset": cv_a.get("dataset"),
            **paired_comparison(cv_a["rows"], cv_b["rows"], metric)}


def comparison_text(result: dict[str, Any]) -> str:
    """The comparison as a few lines for a terminal."""
    better = "higher" if result["higher_is_better"] else "lower"
    p = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    lines = [f"{result['metric']} on {result.get('dataset', 'the test folds')}: A = {result.get('a', 'A')}, "
             f"B = {result.get('b', 'B')} ({better} is better)",
             f"  A {result['mean_a']:.4f}   B {result['mean_b']:.4f}   A - B {result['mean_diff']:+.4f} ± "
             f"{_fmt(result['std_diff'], 4)} over {result['n']} paired cells"
             + (f" ({result['skipped']} without the metric left out)" if result["skipped"] else ""),
             f"  A better in {result['wins']}, worse in {result['losses']}, tied in {result['ties']}",
             f"  paired t-test p = {p(result['p_value'])}; corrected resampled t-test (Nadeau & Bengio) p = "
             f"{p(result['p_value_corrected'])}"]
    return "\n".join(lines)
