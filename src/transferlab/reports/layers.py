"""``transferlab analyze layers``: layer transferability (Yosinski, Clune, Bengio & Lipson, "How
transferable are features in deep neural networks?", NeurIPS 2014).

Two tasks A and B (same architecture, e.g. digits 0–4 and 5–9). Base networks baseA and baseB are
trained on each; then, on task B, for every n (number of copied layers):

    BnB   first n layers copied from baseB and frozen, the rest re-initialised and trained on B
    BnB+  the same, but every layer fine-tuned
    AnB   first n layers copied from baseA and frozen, the rest trained on B
    AnB+  copied from baseA, every layer fine-tuned

BnB below baseB reveals fragile co-adaptation between layers n and n+1; AnB below BnB reveals the
specificity of layer n's features to task A; AnB+ above baseB is the transfer boost.
Each run is an ordinary supervised run (``model.encoder_init``, ``model.init_layers``,
``model.freeze_layers``) on the one engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.checkpoint import atomic_write_json
from ..engine.pool import run_in_pool, worker_threads
from ..experiment import build, load_config, resolved_config, train
from ..models.layers import encoder_layers
from .common import Command, pyplot, save_figure, table

CONDITIONS = {"BnB": ("B", True), "BnB+": ("B", False), "AnB": ("A", True), "AnB+": ("A", False)}


def _train(raw: dict[str, Any], out: str | None, data_root: str | None, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return train(load_config(raw=raw), out, data_root=data_root, progress=False, overwrite=True)


def layer_transferability(config_a: str | Path, config_b: str | Path, out_dir: str | Path, *,
                          seeds: Sequence[int] = (0, 1, 2), overrides: Sequence[str] = (), jobs: int = 1,
                          data_root: str | Path | None = None, log=print) -> dict[str, Any]:
    """Train the base networks and every (condition, n, seed) run; write ``layers.json`` and
    ``layers.png`` (accuracy on B's test set against n, one line per condition). Finished runs are
    kept in ``cells.jsonl`` and skipped when the command is run again."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = str(data_root) if data_root is not None else None
    configs = {task: load_config(path, list(overrides)) for task, path in (("A", config_a), ("B", config_b))}
    layers = encoder_layers(build(configs["B"], data_root).method.encoder)
    n_layers = len(layers)
    done_path = out_dir / "cells.jsonl"
    done = {}
    if done_path.is_file():
        done = {row["key"]: row for row in map(json.loads, done_path.read_text().splitlines()) if row}
    threads = worker_threads(jobs)

    def run_all(cells: list[tuple[str, dict[str, Any], str | None]]) -> None:
        todo = [c for c in cells if c[0] not in done]
        log(f"{len(cells)} runs, {len(cells) - len(todo)} already done")
        def record(key: str, result: dict[str, Any]) -> None:
            done[key] = {"key": key, "acc": result["target_test/acc"], "device": result["device"]}
            with open(done_path, "a") as handle:
                handle.write(json.dumps(done[key]) + "\n")
            log(f"  {key}: {result['target_test/acc']:.2f}%")

        run_in_pool([(key, _train, (raw, out, root, threads)) for key, raw, out in todo], jobs, record)

    def raw(task: str, seed: int, **model: Any) -> dict[str, Any]:
        cfg = resolved_config(configs[task])
        cfg["seed"] = seed
        cfg["model"].update(model)
        return cfg

    run_all([(f"base{task}|{seed}", raw(task, seed), str(out_dir / f"base{task}" / f"seed{seed}"))
             for task in "AB" for seed in seeds])
    cells = []
    for condition, (source, frozen) in CONDITIONS.items():
        for n in range(1, n_layers + 1):
            for seed in seeds:
                init = str((out_dir / f"base{source}" / f"seed{seed}").resolve())
                cells.append((f"{condition}|{n}|{seed}",
                              raw("B", seed, encoder_init=init, init_layers=n, freeze_layers=n if frozen else 0), None))
    run_all(cells)

    def summary(prefix: str) -> dict[str, float]:
        values = [row["acc"] for key, row in done.items() if key.rsplit("|", 1)[0] == prefix and
                  int(key.rsplit("|", 1)[1]) in seeds]
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    report = {"task_a": str(config_a), "task_b": str(config_b), "n_layers": n_layers, "seeds": list(seeds),
              "layers": ["+".join(layer) for layer in layers],
              "baseA": summary("baseA"), "baseB": summary("baseB"),
              "curves": {c: {n: summary(f"{c}|{n}") for n in range(1, n_layers + 1)} for c in CONDITIONS},
              "device": next(iter(done.values()))["device"]}
    atomic_write_json(out_dir / "layers.json", report)
    plot_layers(report, out_dir / "layers.png")
    return report


def plot_layers(report: dict[str, Any], path: Path) -> None:
    """Yosinski et al.'s figure: accuracy on B against the number of copied layers n."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    styles = {"BnB": ("#3b75af", "o", "-"), "BnB+": ("#3b75af", "o", "--"), "AnB": ("#d9534f", "s", "-"),
              "AnB+": ("#d9534f", "s", "--")}
    ax.errorbar([0], [report["baseB"]["mean"]], yerr=[report["baseB"]["std"]], fmt="D", color="black", label="baseB")
    for condition, curve in report["curves"].items():
        ns = sorted(int(n) for n in curve)
        color, marker, line = styles[condition]
        ax.errorbar(ns, [curve[n]["mean"] if n in curve else curve[str(n)]["mean"] for n in ns],
                    yerr=[curve[n]["std"] if n in curve else curve[str(n)]["std"] for n in ns],
                    color=color, marker=marker, linestyle=line, capsize=3, label=condition)
    ax.set_xticks(range(report["n_layers"] + 1))
    ax.set_xlabel("layers copied from the base network (n)")
    ax.set_ylabel("test accuracy on task B (%)")
    ax.set_title(f"{Path(report['task_a']).stem} -> {Path(report['task_b']).stem}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)



def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-a", required=True, metavar="CONFIG", help="supervised config of task A")
    parser.add_argument("--task-b", required=True, metavar="CONFIG", help="supervised config of task B (same model)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, in separate processes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override both configs")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    report = layer_transferability(args.task_a, args.task_b, out, seeds=args.seeds, overrides=args.set,
                                   jobs=args.jobs, data_root=args.data_root)
    rows = [[c] + [f"{v[n]['mean']:.1f} ± {v[n]['std']:.1f}" for n in sorted(v)] for c, v in report["curves"].items()]
    print(table(rows, ["condition"] + [f"n={n}" for n in range(1, report["n_layers"] + 1)]))
    print(f"baseA {report['baseA']['mean']:.1f}, baseB {report['baseB']['mean']:.1f}; "
          f"layers: {', '.join(report['layers'])}\nwritten: {out / 'layers.json'}, {out / 'layers.png'}")


COMMAND = Command("layers", "Yosinski et al.'s AnB/BnB(+) curves over the number of copied layers", _arguments, _run)
