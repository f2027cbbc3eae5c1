"""Evidence for the NTK and information-bottleneck views of transfer (issue #18), through the CLI:

  ntk          `transferlab analyze ntk` on the self-taught benchmark's SimCLR runs (unlabelled MNIST, then USPS;
               runs/bench_selftaught/mnist_usps/simclr/seed{0,1,2}, made by benchmarks/selftaught/run.py) with
               k = 1, 10, 100 labels per class: NTK kernel-regression accuracy, kernel-target alignment and kernel
               movement during fine-tuning, for the SimCLR encoder and for random initialisation of the same
               LeNet (transfer seed = the run's seed), next to the accuracy of the fine-tuned cell and, where the
               self-taught grid has it, the grid's own fine-tune accuracy
  information  `transferlab analyze information` on the digits benchmark's MNIST->USPS runs
               (runs/bench_digits/mnist_usps/{source_only,dann,cdan}/seed{0,1,2}, benchmarks/digits/run.py):
               I(Z; Y_target) and I(Z; D) per layer, held-out probe bound and kNN estimate, 3 seeds

Records (tagged ``"part": "ntk_information"``) are merged into benchmarks/analysis/results.json/.md, replacing
this script's earlier records and keeping everything else; the figures are ntk_mnist_usps.png and
information_mnist_usps.png. ``benchmarks/analysis/run.py``'s aggregation rewrites results.json from its own
parts only: run this script with ``--aggregate-only`` after it to put these records back.

    python benchmarks/analysis/ntk_information.py [--parts ntk information] [--parallel 1]
    python benchmarks/analysis/ntk_information.py --aggregate-only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import measured, this_command, today, write_results  # noqa: E402

PART = "ntk_information"
SEEDS = (0, 1, 2)
METHODS = ("source_only", "dann", "cdan")


def cpu_name() -> str:
    """The CPU's model name (Linux), for the records' ``device``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


DEVICE = f"{cpu_name()} CPU, 1 thread per process"


def cli(*args: str) -> None:
    print("$ transferlab", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "transferlab.cli", *args], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["ntk", "information"], choices=["ntk", "information"])
    parser.add_argument("--parallel", type=int, default=1, help="analyze commands at the same time")
    parser.add_argument("--selftaught", default=str(REPO / "runs" / "bench_selftaught" / "mnist_usps"),
                        help="folder with simclr/seed*/ pretraining runs (and grid/cells.jsonl)")
    parser.add_argument("--digits", default=str(REPO / "runs" / "bench_digits" / "mnist_usps"),
                        help="folder with <method>/seed*/ domain adaptation runs")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_analysis" / "ntk_information"))
    parser.add_argument("--results", default=str(HERE), help="where results.json/.md and the figures go")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--labels-per-class", nargs="+", default=["1", "10", "100"])
    parser.add_argument("--max-samples", type=int, default=1000)
    parser.add_argument("--projection", type=int, default=4096)
    parser.add_argument("--task", default="mnist->usps",
                        help="the task the runs are of, as records and figure names give it (e.g. digits->digits_m)")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    out, selftaught, digits = Path(args.out), Path(args.selftaught), Path(args.digits)
    if not args.aggregate_only:
        jobs = []
        if "ntk" in args.parts:
            for seed in args.seeds:
                run = selftaught / "simclr" / f"seed{seed}"
                if (run / "model.safetensors").is_file() and not (out / "ntk" / f"seed{seed}" / "ntk.json").is_file():
                    jobs.append(("analyze", "ntk", str(run), "--labels-per-class", *args.labels_per_class,
                                 "--max-samples", str(args.max_samples), "--projection", str(args.projection),
                                 "--out", str(out / "ntk" / f"seed{seed}")))
        if "information" in args.parts:
            for method in METHODS:
                runs = [str(digits / method / f"seed{s}") for s in args.seeds
                        if (digits / method / f"seed{s}" / "model.safetensors").is_file()]
                if runs and not (out / "information" / method / "information.json").is_file():
                    jobs.append(("analyze", "information", *runs, "--max-samples", str(args.max_samples),
                                 "--out", str(out / "information" / method)))
        if not jobs:
            print("nothing to do (finished parts are skipped; the runs they need are listed in --help)")
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            list(pool.map(lambda job: cli(*job), jobs))
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "command.txt", "a") as handle:
            handle.write(this_command() + "\n")
    aggregate(out, selftaught, Path(args.results), args.task)


def grid_finetune(selftaught: Path) -> dict[tuple[str, str], list[float]]:
    """The self-taught grid's fine-tune accuracies of the SimCLR runs and its scratch accuracies, by (init, k)."""
    path = selftaught / "grid" / "cells.jsonl"
    found: dict[tuple[str, str], list[float]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            cell = json.loads(line)
            if cell["strategy"] == "finetune" and "/simclr/" in cell["pretrained_run"]:
                found.setdefault(("pretrained", str(cell["labels_per_class"])), []).append(cell["target_test/acc"])
            elif cell["strategy"] == "scratch":
                found.setdefault(("random", str(cell["labels_per_class"])), []).append(cell["target_test/acc"])
    return found


def _stats(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "n_seeds": len(values),
            "values": values}


def aggregate(out: Path, selftaught: Path, results: Path, task: str = "mnist->usps") -> None:
    sys.path.insert(0, str(REPO / "src"))
    from transferlab.reports.information import plot_information
    from transferlab.reports.information import summarize as summarize_information
    from transferlab.reports.ntk import SUMMARY_KEYS, plot_ntk
    from transferlab.reports.ntk import summarize as summarize_ntk

    lines = (out / "command.txt").read_text().split("\n") if (out / "command.txt").is_file() else [this_command()]
    command = "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip()))
    records = []
    ntk_files = sorted((out / "ntk").glob("seed*/ntk.json"))
    if ntk_files:
        reports = [json.loads(p.read_text()) for p in ntk_files]
        rows = [row for report in reports for row in report["rows"]]
        grid = grid_finetune(selftaught)
        settings = reports[0]["settings"]
        for entry in summarize_ntk(rows):
            method = f"{entry['pretraining']}-pretrained" if entry["init"] == "pretrained" else "random init"
            for key in SUMMARY_KEYS:
                if key not in entry:
                    continue
                record = {"task": f"NTK, mnist (unlabelled) -> usps, k={entry['labels_per_class']}", "method": method,
                          "metric": key, **_stats(entry[key]["values"]), "labels_per_class": entry["labels_per_class"],
                          "n_test": rows[0]["n_test"], "ntk_settings": settings, "device": DEVICE, "command": command,
                          "date": measured(ntk_files[-1]), "part": PART,
                          "runs": sorted({r["run"] for r in rows if r["init"] == entry["init"]})}
                if key == "finetune_acc" and grid.get((entry["init"], str(entry["labels_per_class"]))):
                    record["grid_finetune_acc"] = _stats(grid[(entry["init"], str(entry["labels_per_class"]))])
                records.append(record)
        plot_ntk(summarize_ntk(rows), results / "ntk_mnist_usps.png")
    info_files = [out / "information" / m / "information.json" for m in METHODS
                  if (out / "information" / m / "information.json").is_file()]
    if info_files:
        reports = [r for p in info_files for r in json.loads(p.read_text())["runs"]]
        summary = summarize_information(reports)
        for entry in summary:
            quantity = "I(Z;Y_target)" if entry["quantity"] == "I(Z;Y)" else "I(Z;D)"
            values = [v / 0.6931471805599453 for v in entry["values"]]
            records.append({"task": f"information, {task}, layer {entry['layer']}", "method": entry["method"],
                            "metric": f"{quantity} [{entry['estimator']}, bits]", **_stats(values),
                            "ci95_over_seeds_bits": [round(v, 4) for v in entry["ci_bits"]], "unit": "bits",
                            "estimator": reports[0]["layers"][0]["I(Z;Y)"][entry["estimator"]]["estimator"],
                            "n_target": reports[0]["n_target"], "n_source": reports[0]["n_source"],
                            "runs": [r["run"] for r in reports if r["method"] == entry["method"]],
                            "device": DEVICE, "command": command, "date": measured(info_files[-1]), "part": PART})
        plot_information(summary, results / f"information_{task.replace('->', '_')}.png")
    path = results / "results.json"
    # this script's earlier records of the same task are replaced; other tasks' and other parts' records are kept
    mine = ("NTK, " if ntk_files else "\0", f"information, {task}, " if info_files else "\0")
    kept = [r for r in json.loads(path.read_text()) if r.get("part") != PART or not r["task"].startswith(mine)] \
        if path.is_file() else []
    header = "| task | method | metric | mean ± std | seeds/runs |\n|---|---|---|---|---|"
    write_results(results, kept + records, header, lambda r: [r["task"], r["method"], r["metric"],
                                                              f"{r['mean']:.4g} ± {r['std']:.2g}", r["n_seeds"]])
    print(f"{len(records)} records of {PART} in {path} ({len(kept)} others kept); {today()}")


if __name__ == "__main__":
    main()
