"""``transferlab analyze report``: one page a person would rather look at than read, for one run or a comparison of
several: what was run (config), how training went (loss curves, learning-rate and GRL schedules), the accuracy at
every evaluation, and, for adaptation runs, whether the domains were aligned (proxy A-distance of the features and a
t-SNE of source vs target). Written as ``report.md`` with PNGs beside it and as ``report.html``, one self-contained
file (the pictures inlined) to send to someone."""

from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from ..engine.checkpoint import atomic_write_text
from ..engine.metrics import MetricsLog
from ..errors import TransferlabError
from .common import Command, pyplot, run_name, save_figure

SCHEDULES = ("lr", "grl_lambda")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's config, metrics records and result (a run still in progress has no result yet)."""
    run = Path(run_dir)
    config_path, metrics_path = run / "config.json", run / "metrics.jsonl"
    if not config_path.is_file() or not metrics_path.is_file():
        raise TransferlabError(f"{run} is not a transferlab run folder (it needs config.json and metrics.jsonl)")
    try:
        config = json.loads(config_path.read_text())
        records = MetricsLog.read(metrics_path)
        result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else None
    except (OSError, ValueError) as exc:
        raise TransferlabError(f"{run}: cannot read its files ({exc}); is the run folder damaged?") from None
    return {"dir": run, "name": run_name(run), "config": config, "records": records, "result": result,
            "method": config.get("method", {}).get("name", "?")}


def _series(records: list[dict[str, Any]], kind: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        if record.get("kind") != kind:
            continue
        for key, value in record.items():
            if key in ("step", "kind", "wall_s") or not isinstance(value, (int, float)):
                continue
            steps, values = out.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(float(value))
    return out


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    """Training losses, evaluation accuracies and schedules against the step, one line per run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    for run in runs:
        train, evals = _series(run["records"], "train"), _series(run["records"], "eval")
        label = run["name"] if len(runs) > 1 else None
        for key, (steps, values) in train.items():
            if key in SCHEDULES or key.startswith("lr/"):
                if key.startswith("lr"):  # relative, so λ in [0, 1] and an lr of 1e-3 share one axis
                    values, key = [v / values[0] if values[0] else v for v in values], f"{key} / {key}(first)"
                axes[2].plot(steps, values, label=f"{label}: {key}" if label else key)
            elif "loss" in key:
                axes[0].plot(steps, values, label=f"{label}: {key}" if label else key)
        for key, (steps, values) in evals.items():
            axes[1].plot(steps, values, marker="o", label=f"{label}: {key}" if label else key)
    for ax, title in zip(axes, ("training losses (window means)", "evaluation accuracy (%)", "schedules")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _final_accuracy(run: dict[str, Any]) -> dict[str, float]:
    source = run["result"] or next((r for r in reversed(run["records"]) if r.get("kind") == "eval"), {})
    return {k: v for k, v in source.items() if k.endswith("/acc")}


def build_report(run_dirs: list[str | Path], out: Path, *, data_root: str | Path | None = None,
                 diagnostics: bool = True, max_samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and their PNGs under ``out``; return what the page shows."""
    runs = [read_run(r) for r in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(runs, out / "curves.png")
    pictures = [("Training", out / "curves.png")]
    rows = []
    for run in runs:
        accuracy = _final_accuracy(run)
        row = {"run": run["name"], "method": run["method"], "step": (run["result"] or {}).get("step"),
               **{k: round(v, 2) for k, v in accuracy.items()},
               "train_seconds": round((run["result"] or {}).get("train_seconds") or 0.0, 1) or None}
        adapts = run["config"].get("data", {}).get("target") is not None and run["result"] is not None
        if diagnostics and adapts:
            from .divergence import divergence_report
            from .features import feature_map

            terms = divergence_report(run["dir"], data_root=data_root, max_samples=max_samples, seed=seed)
            row["a_distance"] = round(terms["a_distance"], 3)
            tsne = out / f"tsne_{len(pictures)}.png"
            feature_map(run["dir"], tsne, data_root=data_root, max_samples=max_samples, seed=seed)
            pictures.append((f"Features of {run['name']} (t-SNE, source vs target test)", tsne))
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table_md = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n" + "".join(
        "| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |\n" for row in rows)
    configs = "".join(f"\n<details><summary>config of {run['name']}</summary>\n\n```yaml\n"
                      f"{yaml.safe_dump(run['config'], sort_keys=False)}```\n</details>\n" for run in runs)
    title = runs[0]["name"] if len(runs) == 1 else f"{len(runs)} runs compared"
    notes = ("A-distance: proxy A-distance of the features the classifier sees, source vs target test (0: the domains "
             "cannot be told apart, 2: perfectly separable); it uses no labels. Accuracy is measured on the run's test "
             "set at the end; no model was selected on it.")
    markdown = (f"# transferlab report: {title}\n\n{table_md}\n{notes}\n\n"
                + "".join(f"## {caption}\n\n![{caption}]({path.name})\n\n" for caption, path in pictures) + configs)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(title, columns, rows, notes, pictures, runs))
    return {"rows": rows, "markdown": str(out / "report.md"), "html": str(out / "report.html"),
            "pictures": [str(p) for _, p in pictures]}


def _html(title: str, columns: list[str], rows: list[dict[str, Any]], notes: str,
          pictures: list[tuple[str, Path]], runs: list[dict[str, Any]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc('' if r.get(c) is None else str(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    figures = "".join(
        f"<h2>{esc(caption)}</h2><img alt='{esc(caption)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'>" for caption, path in pictures)
    configs = "".join(f"<details><summary>config of {esc(run['name'])}</summary><pre>"
                      f"{esc(yaml.safe_dump(run['config'], sort_keys=False))}</pre></details>" for run in runs)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%}pre{background:#f7f7f7;padding:8px;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{style}</style>"
            f"</head><body><h1>transferlab report: {esc(title)}</h1><table><tr>{head}</tr>{body}</table>"
            f"<p>{esc(notes)}</p>{figures}{configs}</body></html>\n")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders (finished, or in progress for the curves only)")
    parser.add_argument("--out", required=True, help="folder for report.md, report.html and the PNGs")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the A-distance and t-SNE of adaptation runs (they load the data and the model)")
    parser.add_argument("--max-samples", type=int, default=1000, help="samples per domain for the diagnostics")
    parser.add_argument("--seed", type=int, default=0)


def _run(args: argparse.Namespace) -> None:
    report = build_report(args.runs, Path(args.out), data_root=args.data_root, diagnostics=not args.no_diagnostics,
                          max_samples=args.max_samples, seed=args.seed)
    print(f"written: {report['html']} (self-contained) and {report['markdown']} with {len(report['pictures'])} PNG(s)")


COMMAND = Command("report", "one HTML/Markdown page per run or comparison: curves, schedules, accuracy, A-distance, "
                  "t-SNE", _arguments, _run)
