"""What every report shares: the :class:`Command` of the CLI's table, the arguments of the commands that
analyse run folders, the terminal tables, and the files (JSON, PNG) reports write."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import ArrayDataset, lookup
from ..engine.checkpoint import atomic_write_json
from ..experiment import Experiment, load_domain


@dataclass(frozen=True)
class Command:
    """One ``transferlab analyze`` sub-command: ``add_arguments`` declares its arguments on its parser (the
    CLI adds ``--data-root``), and ``run`` computes the report from the parsed arguments, writes its files
    under ``--out`` and prints a summary."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def run_arguments(parser: argparse.ArgumentParser, max_samples: int = 1000) -> None:
    """The arguments of the commands that analyse finished run folders."""
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--out", required=True, help="folder for the JSON and PNG files")
    parser.add_argument("--max-samples", type=int, default=max_samples, help="samples per set (drawn with --seed)")
    parser.add_argument("--seed", type=int, default=0)


def parse_labels(text: str) -> int | str:
    """An argparse type: a number of labelled samples per class (a positive integer) or ``all``."""
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table with left-aligned columns, a header and a rule under it."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run_name(run: str | Path) -> str:
    """A run folder as tables and plots name it: its last two path parts (``task/method``)."""
    return "/".join(Path(run).parts[-2:])


def source_eval_set(experiment: Experiment, data_root: str | Path | None) -> ArrayDataset:
    """Labelled held-out source data of a run: the source dataset's ``test`` part when it has one, else
    its training set."""
    c = experiment.config.data.source
    if "test" in lookup(c.name, data_root).parts and c.part != "test":
        return load_domain(c.model_copy(update={"part": "test", "labels_per_class": None}), data_root,
                           experiment.config.seed)
    return experiment.source


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (reports only write files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically (a temporary file renamed into place) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    pyplot().close(fig)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically; NumPy scalars are written as floats."""
    atomic_write_json(Path(path), json.loads(json.dumps(obj, default=float)))
