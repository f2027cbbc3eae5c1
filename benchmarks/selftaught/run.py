"""Self-taught learning benchmark: pretrain on unlabelled data of another distribution, then transfer
with k labels per class by linear probing, fine-tuning, or training from scratch.

Tasks (configs/selftaught/):
  mnist_usps        unlabelled MNIST -> USPS classification (cross-dataset self-taught learning)
  digits59_digits04 unlabelled MNIST digits 5-9 -> classify digits 0-4 (the UFLDL exercise)

For each task, every pretraining method is run once per seed (``transferlab pretrain``), then one
``transferlab grid`` over all of them writes the task's table and plot; transfer seed i uses the
pretraining run of seed i. Finished runs and grid cells are skipped, so the benchmark resumes.

    python benchmarks/selftaught/run.py --parallel 2 --threads 1
    python benchmarks/selftaught/run.py --aggregate-only
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import run_parallel, this_command, write_results  # noqa: E402

TASKS = {"mnist_usps": ["simclr", "denoising_autoencoder"], "digits59_digits04": ["simclr", "sparse_autoencoder"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every pretraining run")
    parser.add_argument("--parallel", type=int, default=1, help="runs (and grid cells) at the same time")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per pretraining run (0: leave as is)")
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench_selftaught"))
    parser.add_argument("--data-root")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    runs = Path(args.runs)
    root = ["--data-root", args.data_root] if args.data_root else []
    if not args.aggregate_only:
        commands = []
        for task in args.tasks:
            (runs / task).mkdir(parents=True, exist_ok=True)
            (runs / task / "command.txt").write_text(this_command() + "\n")
            for method in TASKS[task]:
                for seed in args.seeds:
                    out = runs / task / method / f"seed{seed}"
                    if (out / "model.safetensors").is_file():
                        continue
                    cmd = [sys.executable, "-m", "transferlab.cli", "pretrain",
                           str(REPO / "configs/selftaught" / f"{task}_{method}.yaml"), "--out", str(out), "--no-progress",
                           "--set", f"seed={seed}", *[a for o in args.set for a in ("--set", o)], *root]
                    commands.append(cmd + (["--resume"] if (out / "config.json").is_file() else []))
        codes = run_parallel(commands, args.parallel, args.threads, runs / "logs") if commands else []
        if any(codes):
            sys.exit(f"{sum(1 for c in codes if c)} pretraining runs failed; see {runs / 'logs'}")
        for task in args.tasks:
            pretrained = [str(runs / task / m / f"seed{s}") for m in TASKS[task] for s in args.seeds]
            cmd = ["transferlab", "grid", *pretrained, "--out", str(runs / task / "grid"), "--jobs", str(args.parallel),
                   *root]
            print("$", shlex.join(cmd), flush=True)
            subprocess.run([sys.executable, "-m", "transferlab.cli", *cmd[1:]], check=True)
    aggregate(runs)


def aggregate(runs: Path) -> None:
    records = []
    for task in TASKS:
        grid = runs / task / "grid"
        if not (grid / "results.json").is_file():
            continue
        command = (runs / task / "command.txt").read_text().strip()
        pretraining = {}
        for method in TASKS[task]:
            result = json.loads(next((runs / task / method).glob("seed*/result.json")).read_text())
            config = json.loads(next((runs / task / method).glob("seed*/config.json")).read_text())
            pretraining[method] = {"iterations": config["train"]["iterations"], "batch_size": config["data"]["batch_size"],
                                   "train_seconds": round(result["train_seconds"], 1), "device": result["device"]}
        for record in json.loads((grid / "results.json").read_text()):
            method = record["method"].split("+")[0]
            record.update({"task_id": task, "command": f"{command}  (grid: {record['command']})",
                           "pretraining": pretraining.get(method)})
            records.append(record)
        (HERE / f"{task}.png").write_bytes((grid / "accuracy_vs_labels.png").read_bytes())
        (HERE / f"{task}.md").write_text((grid / "results.md").read_text())
    ks = lambda r: float("inf") if r["labels_per_class"] == "all" else r["labels_per_class"]  # noqa: E731
    records.sort(key=lambda r: (r["task_id"], r["method"], ks(r)))
    header = ("| task | strategy | labels/class | target acc % (mean ± std) | seeds | device |\n"
              "|---|---|---|---|---|---|")
    write_results(HERE, records, header, lambda r: [
        r["task"], r["method"], r["labels_per_class"], f"{r['mean']:.1f} ± {r['std']:.1f}", r["n_seeds"], r["device"]])
    print("\n\n".join((HERE / f"{t}.md").read_text() for t in TASKS if (HERE / f"{t}.md").is_file()))


if __name__ == "__main__":
    main()
