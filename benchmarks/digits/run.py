"""Digits benchmark: every method on MNIST->USPS, USPS->MNIST, MNIST->MNIST-M, several seeds.

Each run is the project's own command (``transferlab train configs/digits/<task>_<method>.yaml``),
launched ``--parallel`` at a time; finished runs are skipped and interrupted ones resumed, so the
benchmark can be stopped and restarted. The reported number is the final model's target test
accuracy (no model selection on the target test set), as mean ± sample std over seeds.

    python benchmarks/digits/run.py --seeds 0 1 2                        # the full protocol (GPU)
    python benchmarks/digits/run.py --iterations 2000 --tasks mnist_usps usps_mnist --parallel 2 --threads 1
    python benchmarks/digits/run.py --aggregate-only                     # rebuild results.json/.md

Records of other run folders already in results.json are kept unless ``--fresh`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import measured, run_parallel, summarize, this_command, today, write_results  # noqa: E402

TASKS = {"mnist_usps": "mnist->usps", "usps_mnist": "usps->mnist", "mnist_mnist_m": "mnist->mnist_m",
         "digits_digits_m": "digits->digits_m"}  # the last one is the embedded default of `transferlab demo`
METHODS = ["source_only", "dann", "adda", "cdan", "cdan_e", "mcd"]
# Relative cost of a run (measured step times, DANN = 1; the DTN of MNIST->MNIST-M is an estimate from its
# FLOPs): runs start longest first, so the long ones do not trail at the end of a parallel batch.
COST = {"mcd": 4.6, "cdan_e": 1.1, "cdan": 1.1, "dann": 1.0, "adda": 0.9, "source_only": 0.5}
TASK_COST = {"mnist_mnist_m": 3.0}
# Published target accuracies (%): TLlib's reproduction (M->U, U->M), the ADDA paper (Tzeng et al. 2017,
# Table 2: the two-stage method the issue asks for; TLlib's ADDA example is a one-network variant), and the
# DANN paper (M->MM).
PUBLISHED = {
    ("mnist->usps", "source_only"): [(82.1, "TLlib")], ("usps->mnist", "source_only"): [(74.6, "TLlib")],
    ("mnist->usps", "dann"): [(91.7, "TLlib")], ("usps->mnist", "dann"): [(95.2, "TLlib")],
    ("mnist->usps", "adda"): [(94.5, "TLlib"), (89.4, "ADDA paper")],
    ("usps->mnist", "adda"): [(98.3, "TLlib"), (90.1, "ADDA paper")],
    ("mnist->usps", "cdan"): [(96.0, "TLlib")], ("usps->mnist", "cdan"): [(97.7, "TLlib")],
    ("mnist->usps", "mcd"): [(94.1, "TLlib")], ("usps->mnist", "mcd"): [(97.6, "TLlib")],
    ("mnist->mnist_m", "dann"): [(76.66, "DANN paper")], ("mnist->mnist_m", "source_only"): [(52.25, "DANN paper")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="override train.iterations (shortened protocol)")
    parser.add_argument("--batch-size", type=int, help="override data.batch_size (per domain)")
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at the same time (several fit one GPU)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: leave as is)")
    parser.add_argument("--time-limit", type=float, help="seconds: start no run after this, and stop running ones "
                        "(they checkpoint; the next invocation resumes them)")
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench_digits"), help="where runs are stored")
    parser.add_argument("--include", nargs="*", default=[], help="further run folders to aggregate (e.g. GPU runs "
                        "next to CPU runs); records say which protocol and device produced them")
    parser.add_argument("--results", default=str(HERE), help="where results.json/results.md are written")
    parser.add_argument("--data-root")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="rewrite results.json from these run folders only "
                        "(default: their records replace the same task/method/protocol/device/engine and the rest "
                        "of results.json is kept)")
    args = parser.parse_args()
    runs = Path(args.runs)

    overrides = list(args.set) + ["train.eval_every=0"]
    if args.iterations:
        overrides.append(f"train.iterations={args.iterations}")
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    if not args.aggregate_only:
        import time

        deadline = time.monotonic() + args.time_limit if args.time_limit else None
        commands = []
        for task in args.tasks:
            (runs / task).mkdir(parents=True, exist_ok=True)
            (runs / task / "command.txt").write_text(this_command() + "\n")  # what produced this task's runs
            (runs / task / "overrides.json").write_text(json.dumps(args.set) + "\n")  # settings beyond the protocol
        for task, method in sorted(((t, m) for t in args.tasks for m in args.methods),
                                   key=lambda tm: -COST[tm[1]] * TASK_COST.get(tm[0], 1.0)):
            for seed in args.seeds:
                out = runs / task / method / f"seed{seed}"
                if (out / "result.json").is_file():
                    continue
                cmd = [sys.executable, "-m", "transferlab.cli", "train", str(REPO / "configs/digits" / f"{task}_{method}.yaml"),
                       "--out", str(out), "--no-progress", "--set", f"seed={seed}"]
                for o in overrides:
                    cmd += ["--set", o]
                if args.data_root:
                    cmd += ["--data-root", args.data_root]
                if (out / "config.json").is_file():
                    cmd.append("--resume")
                commands.append(cmd)
        started = time.monotonic()
        codes = run_parallel(commands, args.parallel, args.threads, runs / "logs", deadline) if commands else []
        if commands:  # for the speed benchmark's whole-card throughput (benchmarks/speed/run.py --sweep)
            (runs / "sweep.json").write_text(json.dumps({
                "wall_s": round(time.monotonic() - started, 1), "parallel": args.parallel, "runs_started": sum(
                    c is not None for c in codes), "command": this_command(), "date": today()}, indent=2) + "\n")
        if any(codes):
            print(f"{sum(1 for c in codes if c)} runs failed or were stopped; see {runs / 'logs'}", file=sys.stderr)
        if None in codes:
            print(f"{codes.count(None)} runs not started before --time-limit; run the same command again", file=sys.stderr)
    aggregate([runs] + [Path(p) for p in args.include], Path(args.results), keep_others=not args.fresh)


def _engine(train: dict, result: dict) -> str:
    """How the engine ran the steps: eager, torch.compile, or the whole-step CUDA graph (train.cuda_graph; the
    result says whether it was used: a CPU ignores it)."""
    if result.get("cuda_graph", train.get("cuda_graph")):
        return "CUDA graph"
    return "eager" if train.get("compile", "none") == "none" else f"compile {train['compile']}"


def _key(record: dict) -> tuple:
    """What one record measures: a new measurement of the same thing replaces it."""
    return (record["task"], record["method"], record["iterations"], record["batch_size"], record["device"],
            record["engine"], tuple(record.get("overrides", [])))


def aggregate(run_dirs: list[Path], results_dir: Path, keep_others: bool = True) -> None:
    """Summarize the runs under ``run_dirs`` into results.json/.md. With ``keep_others``, records already in
    results.json that these runs do not measure again are kept (running a subset of tasks, or on another device,
    never drops the rest of the table)."""
    records = []
    for runs, task, method in ((r, t, m) for r in run_dirs for t in TASKS for m in METHODS):
        paths = sorted((runs / task / method).glob("seed*/result.json"))
        if not paths:
            continue
        results = [json.loads(p.read_text()) for p in paths]
        configs = [json.loads((p.parent / "config.json").read_text()) for p in paths]
        values = [r["target_test/acc"] for r in results]
        mean, std = summarize(values)
        iterations = configs[0]["train"]["iterations"]
        records.append({
            "task": TASKS[task], "method": method, "metric": "target_acc", "mean": round(mean, 2), "std": round(std, 2),
            "n_seeds": len(values), "values": [round(v, 2) for v in values],
            "seeds": [c["seed"] for c in configs], "iterations": iterations,
            "batch_size": configs[0]["data"]["batch_size"], "backbone": configs[0]["model"]["backbone"],
            "protocol": ("embedded default (demo config)" if task == "digits_digits_m" else
                         "full (10,000 iterations)" if iterations >= 10_000 else f"shortened: {iterations} of 10,000 iterations"),
            "engine": _engine(configs[0]["train"], results[0]),
            "device": results[0]["device"], "train_seconds_mean": round(sum(r["train_seconds"] for r in results) / len(results), 1),
            "published": [{"value": v, "source": src} for v, src in PUBLISHED.get((TASKS[task], method), [])],
            "command": (runs / task / "command.txt").read_text().strip(), "date": max(measured(p) for p in paths),
        })
        overrides_file = runs / task / "overrides.json"
        overrides = json.loads(overrides_file.read_text()) if overrides_file.is_file() else []
        if overrides:  # run.py --set: settings that differ from the task's config
            records[-1]["overrides"] = overrides
        partial = max(r.get("train_seconds_from_step", 0) for r in results)
        if partial:  # resumed from checkpoints too old to carry their seconds: the mean leaves those steps out
            records[-1]["train_seconds_from_step"] = partial
    previous = results_dir / "results.json"
    if keep_others and previous.is_file():
        measured_now = {_key(r) for r in records}
        records += [r for r in json.loads(previous.read_text()) if _key(r) not in measured_now]
    order = {t: i for i, t in enumerate(TASKS.values())}
    records.sort(key=lambda r: (order[r["task"]], -r["iterations"], r["engine"] != "eager", METHODS.index(r["method"]),
                                bool(r.get("overrides"))))
    header = ("| task | method | target acc % (mean ± std) | seeds | iterations | batch | published | device | engine |\n"
              "|---|---|---|---|---|---|---|---|---|")
    results_dir.mkdir(parents=True, exist_ok=True)
    write_results(results_dir, records, header, lambda r: [
        r["task"], " ".join([r["method"], *(f"`{o}`" for o in r.get("overrides", []))]),
        f"{r['mean']:.1f} ± {r['std']:.1f}", r["n_seeds"], r["iterations"], f"{r['batch_size']}+{r['batch_size']}",
        ", ".join(f"{p['value']} ({p['source']})" for p in r["published"]) or "—", r["device"], r["engine"]])
    print((results_dir / "results.md").read_text())


if __name__ == "__main__":
    main()
