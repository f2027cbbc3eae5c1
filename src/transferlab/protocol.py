"""The transfer protocol of self-taught learning: from a pretrained encoder, train a classifier on the
pretraining run's downstream task (its ``transfer:`` section) with only k labels per class, by

``probe``     a linear classifier on the frozen pretrained encoder;
``finetune``  the pretrained encoder and a new classifier, all trained;
``scratch``   the same architecture from random initialisation (the no-transfer baseline);

and the grid over strategies × k × seeds that answers "does pretraining help, and from how many
labels on does it stop mattering?" (a table and a plot of accuracy against labels per class).

Each cell is an ordinary supervised run built from a config, so it uses the one engine; the grid
keeps one JSON line per finished cell and skips finished cells when run again.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, DomainConfig, TransferConfig
from .engine.checkpoint import atomic_write_json, atomic_write_text
from .engine.pool import run_in_pool, worker_threads
from .errors import ConfigError
from .experiment import load_config, method_config, read_run_config, train  # read_run_config: also for reports
from .methods import METHODS

STRATEGIES = ("probe", "finetune", "scratch")
Labels = int | str  # a number of labels per class, or "all"


def _input_size(config: Config, data_root: str | Path | None) -> int | None:
    """The image size the pretrained encoder was built for (the downstream data is resized to it)."""
    if config.data.image_size is not None:
        return config.data.image_size
    from . import data as tl_data

    if tl_data.DATASETS.get(config.data.source.name).kind != "image":
        return None
    root = data_root or config.data.root
    return _stored_size(config.data.source.name, config.data.source.part, str(root) if root is not None else None)


@functools.lru_cache(maxsize=None)
def _stored_size(name: str, part: str, root: str | None) -> int:
    """The stored image side of a dataset part (loaded once per process: every grid cell asks)."""
    from . import data as tl_data

    return int(tl_data.load(name, part, root).x.shape[1])


def downstream(pre: Config, target: str | None = None, run_dir: str | Path | None = None) -> TransferConfig:
    """A run's downstream task: its ``transfer:`` section or, given ``target`` (a dataset name), that
    dataset's train and test parts in its place (the section's other settings are kept, or defaulted).
    ``target`` lets any finished run, a supervised source model included, be transferred anywhere."""
    if target is None:
        if pre.transfer is None:
            raise ConfigError(f"{run_dir or 'the run'} was trained without a 'transfer:' section, so its downstream "
                              f"task is unknown. Give a target dataset (--target NAME), or add transfer: {{train: "
                              f"{{name: ..., part: train}}, test: {{name: ..., part: test}}}} to the pretraining config")
        return pre.transfer
    from . import data as tl_data

    info = tl_data.DATASETS.get(target)  # unknown names: a clear error listing the known ones
    missing = [p for p in ("train", "test") if p not in info.parts]
    if missing:
        raise ConfigError(f"target {target} has no {'/'.join(missing)} part (its parts: {', '.join(info.parts)}); "
                          f"a target needs train and test parts")
    update = {"train": DomainConfig(name=target, part="train"), "test": DomainConfig(name=target, part="test")}
    return pre.transfer.model_copy(update=update) if pre.transfer is not None else TransferConfig(**update)


def transfer_config(run_dir: str | Path, strategy: str, labels_per_class: Labels, seed: int = 0,
                    overrides: Sequence[str] = (), data_root: str | Path | None = None,
                    target: str | None = None) -> Config:
    """The supervised run of one protocol cell, derived from a pretraining run's config (its downstream
    task, or ``target``: see :func:`downstream`)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if labels_per_class != "all" and not (isinstance(labels_per_class, int) and labels_per_class > 0):
        raise ConfigError(f"labels per class must be a positive integer or 'all'; got {labels_per_class!r}")
    pre = read_run_config(run_dir)
    t = downstream(pre, target, run_dir)
    data = pre.data.model_dump(mode="json", exclude={"source", "target", "test", "batch_size"})
    data["image_size"] = _input_size(pre, data_root)
    optim = (t.probe_optim or t.optim) if strategy == "probe" else t.optim
    raw = {
        "seed": seed,
        "data": {**data, "batch_size": t.batch_size,
                 "source": {**t.train.model_dump(mode="json"),
                            "labels_per_class": None if labels_per_class == "all" else labels_per_class},
                 "test": t.test.model_dump(mode="json")},
        "model": {**pre.model.model_dump(mode="json"), "pretrained": False if strategy == "scratch" else pre.model.pretrained,
                  "encoder_init": None if strategy == "scratch" else str(Path(run_dir).resolve())},
        "method": {"name": "linear_probe" if strategy == "probe" else "supervised"},
        "optim": optim.model_dump(mode="json"),
        "train": {**pre.train.model_dump(mode="json"), "iterations": t.iterations, "eval_every": 0,
                  "checkpoint_every": 0, "log_every": min(pre.train.log_every, t.iterations)},
    }
    return load_config(raw=raw, overrides=list(overrides))


def run_transfer(run_dir: str | Path, strategy: str, labels_per_class: Labels, seed: int = 0, *,
                 out_dir: str | Path | None = None, overrides: Sequence[str] = (), data_root: str | Path | None = None,
                 overwrite: bool = False, progress: bool = True, target: str | None = None) -> dict[str, Any]:
    """Train and evaluate one protocol cell; returns the run's result (``target_test/acc`` in %)."""
    config = transfer_config(run_dir, strategy, labels_per_class, seed, overrides, data_root, target)
    result = train(config, out_dir, data_root=data_root, overwrite=overwrite, progress=progress)
    return {"strategy": strategy, "labels_per_class": labels_per_class, "seed": seed, "pretrained_run": str(run_dir),
            "target": config.data.source.name, **result}


# --- the grid ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    label: str           # "simclr+probe", "scratch", ...
    run_dir: str         # the pretraining run (scratch: any run of the grid, for its task and model)
    strategy: str
    labels_per_class: Labels
    seed: int
    target: str | None = None  # the downstream dataset in place of the runs' transfer: section

    @property
    def key(self) -> str:
        return f"{self.label}|{self.labels_per_class}|{self.seed}"


def grid_cells(runs: Sequence[str | Path], labels: Sequence[Labels], strategies: Sequence[str],
               seeds: Sequence[int] | None = None, target: str | None = None) -> list[Cell]:
    """Strategy × k × seed cells. Runs are grouped by pretraining method (and by pretraining dataset when
    the runs were trained on different ones: labels like ``mnist/supervised``); transfer seed i uses the
    i-th run of each group (ordered by seed), so pretraining seeds vary with the transfer seeds.
    ``scratch`` does not depend on pretraining and is run once per k and seed."""
    configs = [read_run_config(run) for run in runs]
    by_source = len({c.data.source.name for c in configs}) > 1
    groups: dict[str, list[tuple[int, str]]] = {}
    reference = None
    for run, config in zip(runs, configs):
        task = (downstream(config, target, run).model_dump(exclude={"labels_per_class"}),
                config.model.model_dump(exclude={"encoder_init"}), config.data.image_size, config.data.channels)
        if reference is None:
            reference = task
        elif task != reference:
            raise ConfigError(f"{run} transfers to a different task or model than {runs[0]}; a grid compares "
                              f"pretrained models on one downstream task with one architecture")
        label = method_config(config).name
        groups.setdefault(f"{config.data.source.name}/{label}" if by_source else label, []).append((config.seed, str(run)))
    for members in groups.values():
        members.sort()
    seeds = list(seeds) if seeds is not None else list(range(max(len(m) for m in groups.values())))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; use {', '.join(STRATEGIES)}")
    cells = []
    for k in labels:
        for seed in seeds:
            for method, members in groups.items():
                run = members[seed % len(members)][1]
                cells += [Cell(f"{method}+{s}", run, s, k, seed, target) for s in strategies if s != "scratch"]
            if "scratch" in strategies:
                cells.append(Cell("scratch", next(iter(groups.values()))[0][1], "scratch", k, seed, target))
    return cells


def _run_cell(cell: Cell, data_root: str | None, overrides: Sequence[str], threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    result = run_transfer(cell.run_dir, cell.strategy, cell.labels_per_class, cell.seed, overrides=overrides,
                          data_root=data_root, progress=False, target=cell.target)
    return {"label": cell.label, **result}


def run_grid(runs: Sequence[str | Path], out_dir: str | Path, *, labels: Sequence[Labels] | None = None,
             strategies: Sequence[str] = STRATEGIES, seeds: Sequence[int] | None = None, jobs: int = 1,
             overrides: Sequence[str] = (), data_root: str | Path | None = None, command: str = "",
             log=print, target: str | None = None) -> list[dict[str, Any]]:
    """Run every cell not yet in ``out_dir/cells.jsonl``, then write ``results.json``, ``results.md`` and
    ``accuracy_vs_labels.png`` there. ``jobs`` cells run at once in separate processes. Every run is checked
    before ``out_dir`` is made, and a folder this call made is removed again if it stops before writing to it."""
    out_dir = Path(out_dir)
    if labels is None:
        labels = downstream(read_run_config(runs[0]), target, runs[0]).labels_per_class
    cells = grid_cells(runs, labels, strategies, seeds, target)  # reads every run: a bad path stops here
    done_path = out_dir / "cells.jsonl"
    done = {}
    if done_path.is_file():
        for line in done_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[f"{row['label']}|{row['labels_per_class']}|{row['seed']}"] = row
    wanted = downstream(read_run_config(runs[0]), target, runs[0]).train.name
    other = sorted({row["target"] for row in done.values() if row.get("target", wanted) != wanted})
    if other:  # cells are keyed by strategy, k and seed: another target's cells must not count as done
        raise ConfigError(f"{out_dir} holds grid cells on {', '.join(other)}, not {wanted}; choose another --out")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_cells(cells, done, out_dir, runs, jobs, overrides, data_root, command, log, target)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # nothing was written: leave no empty folder behind
        raise


def _run_cells(cells: list[Cell], done: dict[str, Any], out_dir: Path, runs: Sequence[str | Path], jobs: int,
               overrides: Sequence[str], data_root: str | Path | None, command: str, log,
               target: str | None) -> list[dict[str, Any]]:
    done_path = out_dir / "cells.jsonl"
    todo = [c for c in cells if c.key not in done]
    log(f"grid: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run ({jobs} at a time)")
    threads = worker_threads(jobs)
    root = str(data_root) if data_root is not None else None

    def record(cell: Cell, row: dict[str, Any]) -> None:
        done[cell.key] = row
        with open(done_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        log(f"  {cell.label:<22} k={str(cell.labels_per_class):<4} seed {cell.seed}: {row['target_test/acc']:.1f}%")

    if jobs <= 1:
        for cell in todo:
            record(cell, _run_cell(cell, root, overrides, threads))
    else:
        by_key = {cell.key: cell for cell in todo}
        run_in_pool([(cell.key, _run_cell, (cell, root, overrides, threads)) for cell in todo], jobs,
                    lambda key, row: record(by_key[key], row))
    rows = [done[c.key] for c in cells]
    records = summarize_grid(rows, runs, command, target)
    write_grid_results(out_dir, records)
    return records


def _task_name(configs: Sequence[Config], t: TransferConfig) -> str:
    def name(domain) -> str:
        return domain.name + (f"[{','.join(map(str, domain.classes))}]" if domain.classes else "")

    sources = ", ".join(dict.fromkeys(name(c.data.source) for c in configs))
    unlabelled = all(not METHODS.get(method_config(c).name).inputs.get("source", False) for c in configs)
    return f"{sources}{' (unlabelled)' if unlabelled else ''} -> {name(t.train)}"


def summarize_grid(rows: list[dict[str, Any]], runs: Sequence[str | Path], command: str,
                   target: str | None = None) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (strategy label, k): records in the benchmark schema.

    A pretrained strategy's record gets ``gain_vs_scratch`` (its mean minus the scratch mean at the same k) and
    ``negative_transfer``: true when both it and scratch were measured over at least 2 seeds and it lies below
    scratch by more than the two standard deviations combined. With one seed no spread is measured, so a drop
    is reported (``gain_vs_scratch``) but never flagged."""
    import datetime as dt

    configs = [read_run_config(run) for run in runs]
    config = configs[0]
    t = downstream(config, target, runs[0])
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault((row["label"], str(row["labels_per_class"])), []).append(row)
    records = []
    for (label, k), members in by_cell.items():
        values = [m["target_test/acc"] for m in members]
        records.append({
            "task": _task_name(configs, t), "method": label, "metric": "target_acc", "target": t.train.name,
            "labels_per_class": k if k == "all" else int(k),
            "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n_seeds": len(values), "values": values, "seeds": [m["seed"] for m in members],
            "iterations": t.iterations,
            "pretraining": {label.split("+")[0]: sorted({m["pretrained_run"] for m in members if "pretrained_run" in m})
                            or [str(r) for r in runs]} if "+" in label else None,
            "device": members[0]["device"], "command": command, "date": dt.date.today().isoformat(),
        })
    scratch = {r["labels_per_class"]: r for r in records if r["method"] == "scratch"}
    for r in records:  # the negative-transfer check: a pretrained strategy against training from scratch
        base = scratch.get(r["labels_per_class"])
        if base is not None and r["method"] != "scratch":
            r["gain_vs_scratch"] = r["mean"] - base["mean"]
            spread = r["n_seeds"] >= 2 and base["n_seeds"] >= 2  # one seed measures no spread: nothing to exceed
            r["negative_transfer"] = spread and r["gain_vs_scratch"] < -(r["std"] + base["std"])
    return records


def write_grid_results(out_dir: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_json(out_dir / "results.json", records)
    atomic_write_text(out_dir / "results.md", grid_table(records))
    plot_grid(records, out_dir / "accuracy_vs_labels.png")


def grid_table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per strategy, one column per k (mean ± std over seeds)."""
    ks = sorted({r["labels_per_class"] for r in records}, key=lambda k: float("inf") if k == "all" else k)
    labels = list(dict.fromkeys(r["method"] for r in records))
    cell = {(r["method"], r["labels_per_class"]): r for r in records}
    lines = [f"Task: {records[0]['task']}. Target test accuracy (%), mean ± std over seeds, by labels per class.", "",
             "| strategy | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]

    def mark(r: dict[str, Any]) -> str:
        if r.get("negative_transfer"):
            return " ↓"
        if "gain_vs_scratch" not in r or r["gain_vs_scratch"] >= 0:
            return ""
        base = cell.get(("scratch", r["labels_per_class"]), {})
        unmeasured = r["n_seeds"] < 2 or base.get("n_seeds", 1) < 2  # a drop without a spread to compare it with
        return f" ({r['gain_vs_scratch']:+.1f})" if unmeasured else ""

    for label in labels:
        cells = [f"{cell[label, k]['mean']:.1f} ± {cell[label, k]['std']:.1f}" + mark(cell[label, k])
                 if (label, k) in cell else "–" for k in ks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    first = records[0]
    lines += ["", "↓ negative transfer: below training from scratch by more than the two standard deviations combined "
              "(needs 2 or more seeds; with one seed no spread is measured: a drop below scratch is shown as (-x.x), "
              "not flagged).",
              f"Seeds: {first['n_seeds']}; device: {first['device']}; {first['date']}.", f"Command: `{first['command']}`"]
    return "\n".join(lines) + "\n"


def plot_grid(records: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against labels per class (log axis; 'all' drawn at the right end), one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = sorted({r["labels_per_class"] for r in records if r["labels_per_class"] != "all"})
    all_x = (numeric[-1] * 4) if numeric else 1
    xpos = lambda k: all_x if k == "all" else k  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label in dict.fromkeys(r["method"] for r in records):
        rs = sorted((r for r in records if r["method"] == label), key=lambda r: xpos(r["labels_per_class"]))
        ax.errorbar([xpos(r["labels_per_class"]) for r in rs], [r["mean"] for r in rs], yerr=[r["std"] for r in rs],
                    marker="o", capsize=3, label=label, linestyle="--" if label == "scratch" else "-")
    ticks = numeric + ([all_x] if any(r["labels_per_class"] == "all" for r in records) else [])
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(t) for t in numeric] + (["all"] if len(ticks) > len(numeric) else []))
    ax.minorticks_off()
    ax.set_xlabel("labelled samples per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(records[0]["task"], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)

