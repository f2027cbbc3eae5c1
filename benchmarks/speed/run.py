"""Training-throughput benchmark (GitHub issue "Performance").

For each case it builds the run with the library's own path (``transferlab.experiment.build`` on a
config, then ``Experiment.trainer``) and times windows of ``Trainer.fit(stop_at=k)`` after warm-up
steps. Reported per case: throughput in images/s (source + target images, 2·batch·steps/s), step
time in ms (median and mean ± std over the timing windows) and peak memory in MB.

Cases
    digits_dann, digits_cdan_e, digits_mcd        MNIST->USPS, LeNet, batch 128+128 (configs/digits/)
    digits_adda_stage1, digits_adda_stage2        ADDA's two stages timed separately (see below)
    resnet50_dann                                  DANN, torchvision ResNet-50, 224x224 RGB, batch 32+32,
                                                   on a synthetic in-memory dataset (random uint8 images)

ADDA: stage 2 starts at ``pretrain_fraction`` of ``train.iterations``. Stage 1 is timed with
iterations=10000 and the default fraction 0.5 (all timed steps lie before step 5000); stage 2 with
``method.pretrain_fraction=0.0001`` so that it starts at step 1 and the warm-up covers the switch.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` from just before the trainer is created
(the trainer moves the model and the training data to the GPU, so both are included). On CPU the
peak resident-set size above the RSS just before the trainer is created (the model and the data are
already in RAM then, so they are excluded): the kernel's peak-RSS counter is reset through
``/proc/self/clear_refs`` and read from ``VmHWM``; where that is not possible, ``ru_maxrss`` of
``resource.getrusage`` is used instead (a process-lifetime peak). Each record says which.

Every (case, precision, compile) combination runs in its own Python process, so peak memory,
compilation caches and dynamo state never leak from one measurement into the next.

    python benchmarks/speed/run.py --device cuda --precision fp32 bf16 --compile none default reduce-overhead cuda-graph
    python benchmarks/speed/run.py --device cpu --steps 20 --warmup 5 --resnet-steps 5 --resnet-warmup 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import this_command, timed_windows, today, write_results  # noqa: E402

DIGITS = {  # case -> (config, method name, extra overrides, stage label)
    "digits_dann": ("mnist_usps_dann.yaml", "dann", [], None),
    "digits_cdan_e": ("mnist_usps_cdan_e.yaml", "cdan_e", [], None),
    "digits_mcd": ("mnist_usps_mcd.yaml", "mcd", [], None),
    "digits_adda_stage1": ("mnist_usps_adda.yaml", "adda", [], "stage 1 (source pre-training)"),
    "digits_adda_stage2": ("mnist_usps_adda.yaml", "adda", ["method.pretrain_fraction=0.0001"],
                           "stage 2 (adversarial; pretrain_fraction=0.0001 so it starts at step 1)"),
}
REFERENCES = {  # case -> what it is (benchmarks/speed/reference.py)
    "ref_plain_dann": "reference: plain PyTorch loop, data resident on the device (not the library's engine)",
    "ref_loader_dann": "reference: TLlib-style input pipeline re-created (PIL images, per-sample torchvision "
                       "transforms, DataLoader with 2 workers), same step eager (not the library's engine)",
}
CASES = list(DIGITS) + ["resnet50_dann"] + list(REFERENCES)
GRAPH = "cuda-graph"  # a --compile value: the engine's whole-step CUDA graph (train.cuda_graph), no torch.compile
SYNTHETIC = "synthetic224"
SYNTHETIC_DESCRIPTION = "benchmark-only: random uint8 224x224 RGB images, random labels (31 classes)"

# Reference figures from the issue: NVIDIA H200, torch 2.11, DANN MNIST->USPS, LeNet, batch 128+128.
REFERENCE = [
    ("TLlib (its own DANN example)", 12_135),
    ("plain PyTorch, data on GPU, eager fp32", 57_737),
    ("+ torch.compile", 63_615),
    ("+ compile mode reduce-overhead", 119_615),
]


# ------------------------------------------------------------------------------------------------
# worker: one (case, precision, compile) measurement in this process
# ------------------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_cpu_peak() -> tuple[float, str]:
    """Start a CPU peak-memory measurement; returns (baseline RSS in MB, method)."""

    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
        rss = _proc_status_kb("VmRSS")
        if rss is not None and _proc_status_kb("VmHWM") is not None:
            return rss / 1024, "peak RSS delta: VmHWM after /proc/self/clear_refs reset, minus RSS at reset"
    except OSError:
        pass
    try:
        import psutil

        rss_mb = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        rss_mb = (_proc_status_kb("VmRSS") or 0) / 1024
    return rss_mb, ("peak RSS delta: resource.getrusage ru_maxrss (process-lifetime peak, may include data "
                    "loading) minus RSS before the trainer was created")


def _cpu_peak_mb(method: str) -> float:
    import resource

    if method.startswith("peak RSS delta: VmHWM"):
        return _proc_status_kb("VmHWM") / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _register_synthetic(n: int) -> None:
    import numpy as np

    from transferlab.data import register_embedded

    def make(part: str) -> dict:
        rng = np.random.default_rng(0 if part == "train" else 1)
        return {"x": rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8),
                "y": rng.integers(0, 31, size=n).astype(np.int64)}

    register_embedded(SYNTHETIC, make, num_classes=31, parts=("train", "test"), description=SYNTHETIC_DESCRIPTION)


def _config(spec: dict):
    from transferlab.experiment import load_config

    graph = spec["compile"] == GRAPH
    common = ["train.eval_every=0", "train.checkpoint_every=0", "train.iterations=10000",
              f"train.precision={spec['precision']}", f"train.compile={'none' if graph else spec['compile']}",
              f"train.cuda_graph={str(graph).lower()}",
              f"train.device={spec['device']}", f"data.batch_size={spec['batch_size']}"]
    common += list(spec.get("overrides") or [])
    if spec["case"] in DIGITS:
        name, _, extra, _ = DIGITS[spec["case"]]
        return load_config(REPO / "configs" / "digits" / name, common + extra)
    _register_synthetic(spec["synthetic_n"])
    raw = {
        "seed": 0,
        "data": {"source": {"name": SYNTHETIC, "part": "train"}, "target": {"name": SYNTHETIC, "part": "test"},
                 "test": {"name": SYNTHETIC, "part": "test"}, "channels": 3,
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "eval_batch_size": 64},
        "model": {"backbone": "torchvision:resnet50", "pretrained": False, "bottleneck_dim": 256,
                  "backbone_lr_scale": 0.1},
        "method": {"name": "dann", "trade_off": 1.0},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.001},
    }
    return load_config(raw=raw, overrides=common)


def _dynamo_stats() -> dict:
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001
        return {}
    return {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompiles": int(sum(v for k, v in counters["recompiles"].items())) if "recompiles" in counters else None}


def worker(spec: dict) -> dict:
    import torch

    if spec["case"] in REFERENCES:
        from reference import worker as reference_worker

        return reference_worker(spec)

    from transferlab.engine import device_description
    from transferlab.experiment import build, method_config

    config = _config(spec)
    steps_total = spec["warmup"] + spec["steps"]
    if spec["case"] == "digits_adda_stage1":
        stage2_start = math.ceil(method_config(config).pretrain_fraction * config.train.iterations)
        if steps_total >= stage2_start:
            raise SystemExit(f"warmup+steps={steps_total} reaches ADDA stage 2 at step {stage2_start}")
    experiment = build(config, spec.get("data_root"))
    cuda = spec["device"] == "cuda" or (spec["device"] == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline_mb, mem_method = 0.0, "torch.cuda.max_memory_allocated (model, optimizer state and training data on the GPU included)"
    else:
        baseline_mb, mem_method = _reset_cpu_peak()
    trainer = experiment.trainer(None, progress=False)

    def sync() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)

    timing = timed_windows(lambda n: trainer.fit(stop_at=trainer.step + n), spec["warmup"], spec["steps"],
                           spec["windows"], sync, 2 * config.data.batch_size)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(trainer.device) / 2**20
        peak_total_mb = peak_mb
    else:
        peak_total_mb = _cpu_peak_mb(mem_method)
        peak_mb = peak_total_mb - baseline_mb
    return {
        **timing,
        "peak_mem_mb": peak_mb,
        "peak_mem_total_mb": peak_total_mb,
        "mem_method": mem_method,
        "device": device_description(trainer.device),
        "device_type": trainer.device.type,
        "batch_size": config.data.batch_size,
        "backbone": config.model.backbone,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dynamo": _dynamo_stats() if spec["compile"] not in ("none", GRAPH) else {},
        "graphs_captured": len(trainer._graphs.captured) if trainer._graphs else 0,
        "final_step": trainer.step,
    }


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _run_worker(spec: dict, timeout: float) -> tuple[dict | None, str | None]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s (warm-up/compilation included)"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
    tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(tail) if "Error" in ln or "error" in ln), tail[-1] if tail else "no output")
    return None, f"exit {proc.returncode}: {reason.strip()[:400]}"


def _key(r: dict) -> tuple:
    return (r["case"], r["precision"], r["compile"], r["device"], r["metric"], tuple(r.get("overrides") or ()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--steps", type=int, default=500, help="timed steps per digits case (after warm-up)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up steps per digits case (compilation happens here)")
    parser.add_argument("--resnet-steps", type=int, help="timed steps for resnet50_dann (default: --steps, capped at 100)")
    parser.add_argument("--resnet-warmup", type=int, help="warm-up steps for resnet50_dann (default: --warmup, capped at 20)")
    parser.add_argument("--resnet-batch", type=int, default=32, help="per-domain batch for resnet50_dann (issue: 32)")
    parser.add_argument("--synthetic-n", type=int, default=256, help="images per synthetic split (resnet50_dann; at least --resnet-batch)")
    parser.add_argument("--windows", type=int, default=5, help="timing windows the timed steps are split into")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="precisions for resnet50_dann")
    parser.add_argument("--digits-precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="precisions for the LeNet digits cases (default fp32 only, to keep GPU sessions short)")
    parser.add_argument("--compile", nargs="+", default=["none"], choices=["none", "default", "reduce-overhead", GRAPH],
                        help=f"torch.compile modes, and {GRAPH}: the engine's whole-step CUDA graph (train.cuda_graph)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="engine config override for the library cases (e.g. train.cudnn_benchmark=true); "
                             "recorded in each record's 'overrides' and kept apart from records without it")
    parser.add_argument("--data-root", help="prepared data (mnist, usps); default $TRANSFERLAB_DATA")
    parser.add_argument("--case-timeout", type=float, default=600, help="seconds per measurement process")
    parser.add_argument("--note", default="", help="free text added to every record (e.g. 'CPU shared with ...')")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--merge", action="store_true",
                        help="keep records already in --out that this run does not re-measure (e.g. CPU + GPU)")
    parser.add_argument("--aggregate", nargs="+", metavar="RESULTS_JSON",
                        help="measure nothing: merge these results files into --out (same case/precision/compile/"
                             "device/metric: the later file wins) and rewrite results.md, e.g. to add GPU figures")
    parser.add_argument("--sweep", metavar="RUNS_DIR",
                        help="measure nothing: add the whole-card throughput of a digits benchmark invocation "
                             "(benchmarks/digits/run.py --parallel N): images trained by all its runs, finished or "
                             "stopped, over its wall time (RUNS_DIR/sweep.json, or --sweep-wall-s)")
    parser.add_argument("--sweep-wall-s", type=float, help="wall time of the sweep, when sweep.json is absent")
    parser.add_argument("--sweep-parallel", type=int, help="runs at a time in the sweep, when sweep.json is absent")
    parser.add_argument("--sweep-note", default="", help="how the sweep ran (e.g. 'CUDA MPS on')")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        result = worker(json.loads(args._worker))
        print("RESULT " + json.dumps(result), flush=True)
        return

    out = Path(args.out)
    if args.sweep:
        record = sweep_record(Path(args.sweep), args.sweep_wall_s, args.sweep_note, args.sweep_parallel)
        _write(out, json.loads(out.read_text()) if out.is_file() else [], [record], [])
        print(out.with_suffix(".md").read_text())
        return
    if args.aggregate:
        merged = json.loads(out.read_text()) if out.is_file() else []
        for path in args.aggregate:
            merged = _merge(merged, json.loads(Path(path).read_text()))
        _write(out, merged, [], [])
        print(out.with_suffix(".md").read_text())
        return

    import torch

    from transferlab.data import DATASETS, data_root

    command = this_command()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device_type = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    data_root_arg = args.data_root or os.environ.get("TRANSFERLAB_DATA")
    out.parent.mkdir(parents=True, exist_ok=True)
    load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    plan, skipped = [], []
    for case in args.cases:
        digits = case in DIGITS or case in REFERENCES
        if digits:
            missing = [n for n in ("mnist", "usps") if "train" not in DATASETS.get(n).present_parts(data_root_arg)]
            if missing:
                skipped.append((case, "*", "*", f"data {missing} not found under {data_root(data_root_arg)} "
                                                  f"(use --data-root or $TRANSFERLAB_DATA)"))
                continue
        precisions = args.digits_precision if digits else args.precision
        steps = args.steps if digits else (args.resnet_steps or min(args.steps, 100))
        warmup = args.warmup if digits else (args.resnet_warmup if args.resnet_warmup is not None else min(args.warmup, 20))
        for precision in precisions:
            for mode in args.compile:
                if mode in ("reduce-overhead", GRAPH) and device_type != "cuda":
                    skipped.append((case, precision, mode, f"{mode} uses CUDA graphs; meaningless on CPU"))
                    continue
                if mode == GRAPH and case in REFERENCES:
                    continue  # the references are plain loops: train.cuda_graph is the engine's
                if args.overrides and case in REFERENCES:
                    continue  # the references are plain loops: config overrides are the engine's
                plan.append({"case": case, "precision": precision, "compile": mode, "device": args.device,
                             "overrides": list(args.overrides),
                             "batch_size": 128 if digits else args.resnet_batch, "steps": steps, "warmup": warmup,
                             "windows": args.windows, "synthetic_n": max(args.synthetic_n, args.resnet_batch), "data_root": data_root_arg})
    for case, precision, mode, why in skipped:
        print(f"note: skipping {case} precision={precision} compile={mode}: {why}", flush=True)

    previous = json.loads(out.read_text()) if args.merge and out.is_file() else []
    records: list[dict] = []
    for i, spec in enumerate(plan, 1):
        label = f"{spec['case']} {spec['precision']} compile={spec['compile']}"
        print(f"[{i}/{len(plan)}] {label}: {spec['warmup']} warm-up + {spec['steps']} timed steps, batch "
              f"{spec['batch_size']}+{spec['batch_size']} ...", flush=True)
        started = time.perf_counter()
        result, error = _run_worker(spec, args.case_timeout)
        wall = time.perf_counter() - started
        if result is None:
            print(f"    FAILED ({wall:.0f} s): {error}", flush=True)
        else:
            print(f"    {statistics.median(result['step_ms']):.1f} ms/step (median), "
                  f"{statistics.fmean(result['imgs_per_s']):,.0f} img/s, peak {result['peak_mem_mb']:.0f} MB; "
                  f"warm-up {result['warmup_s']:.1f} s, process {wall:.0f} s", flush=True)
        records += _records(spec, result, error, command, args.note, load_1m, device_type)
        _write(out, previous, records, skipped)
    if not plan:
        _write(out, previous, records, skipped)
    print(out.with_suffix(".md").read_text())


def _records(spec: dict, result: dict | None, error: str | None, command: str, note: str, load_1m: float | None,
             device_type: str) -> list[dict]:
    import torch

    reference = REFERENCES.get(spec["case"])
    digits = spec["case"] in DIGITS or reference is not None
    stage = DIGITS[spec["case"]][3] if spec["case"] in DIGITS else None
    notes = [reference] if reference else []
    if not digits:
        notes.append(f"synthetic data: {spec['synthetic_n']} random 224x224 RGB images per domain, 31 classes; "
                     "ResNet-50 from scratch (no pretrained weights)")
    if stage:
        notes.append(f"ADDA {stage}")
    if result is not None and device_type == "cpu":
        notes.append(f"CPU, {result['threads']} threads")
    if load_1m is not None and device_type == "cpu":
        notes.append(f"1-min load average at start {load_1m:.1f}")
    if result and result["dynamo"]:
        d = result["dynamo"]
        notes.append(f"dynamo: {d['unique_graphs']} graphs, {d['graph_breaks']} graph breaks"
                     + (f", {d['recompiles']} recompiles" if d.get("recompiles") is not None else ""))
    if result and spec["compile"] == GRAPH:
        notes.append(f"whole-step CUDA graph (train.cuda_graph): {result.get('graphs_captured', 0)} graph(s) captured")
    if error:
        notes.append(f"FAILED: {error}")
    if spec.get("overrides"):
        notes.append("config overrides: " + " ".join(spec["overrides"]))
    if note:
        notes.append(note)
    base = {
        "task": "mnist->usps" if digits else f"{SYNTHETIC}->{SYNTHETIC}",
        "method": DIGITS[spec["case"]][1] if spec["case"] in DIGITS else "dann",
        "implementation": "reference" if reference else "transferlab engine",
        "case": spec["case"], "stage": stage, "n_seeds": 1, "overrides": list(spec.get("overrides") or []),
        "device": result["device"] if result else _device_name(device_type), "device_type": device_type,
        "command": command, "date": today(), "precision": spec["precision"], "compile": spec["compile"],
        "batch_size": result["batch_size"] if result else spec["batch_size"],
        "backbone": result["backbone"] if result else ("lenet" if digits else "torchvision:resnet50"),
        "torch": result["torch"] if result else torch.__version__, "synthetic": not digits,
        "warmup_steps": spec["warmup"], "timed_steps": spec["steps"],
        "window_steps": result["window_steps"] if result else None,
        "warmup_s": round(result["warmup_s"], 2) if result else None,
        "note": "; ".join(notes),
    }
    if result is None:
        return [{**base, "metric": m, "mean": None, "std": None, "n_windows": 0, "error": error}
                for m in ("imgs_per_s", "step_ms", "peak_mem_mb")]
    out = []
    for metric, digits_round in (("imgs_per_s", 1), ("step_ms", 3)):
        values = result[metric]
        out.append({**base, "metric": metric, "mean": round(statistics.fmean(values), digits_round),
                    "std": round(statistics.stdev(values), digits_round) if len(values) > 1 else 0.0,
                    "median": round(statistics.median(values), digits_round), "n_windows": len(values),
                    "values": [round(v, digits_round) for v in values]})
    out.append({**base, "metric": "peak_mem_mb", "mean": round(result["peak_mem_mb"], 1), "std": 0.0,
                "n_windows": len(result["step_ms"]), "peak_mem_total_mb": round(result["peak_mem_total_mb"], 1),
                "mem_method": result["mem_method"]})
    return out


def sweep_record(runs: Path, wall_s: float | None, note: str, parallel: int | None = None) -> dict:
    """Whole-card throughput of one parallel digits-benchmark invocation: 2·batch images per step, summed over
    every run's steps (finished runs: result.json; stopped ones: the last step in metrics.jsonl), over the
    invocation's wall time (process start-up, data loading and the tail with fewer runs included)."""
    sweep = json.loads((runs / "sweep.json").read_text()) if (runs / "sweep.json").is_file() else {}
    wall_s = wall_s or sweep.get("wall_s")
    if not wall_s:
        raise SystemExit(f"{runs}/sweep.json is missing: give --sweep-wall-s")
    images, devices, n_runs, finished, tasks, methods = 0, set(), 0, 0, set(), set()
    for config_path in sorted(runs.glob("*/*/seed*/config.json")):
        run = config_path.parent
        config = json.loads(config_path.read_text())
        if (run / "result.json").is_file():
            result = json.loads((run / "result.json").read_text())
            steps, finished = result["step"], finished + 1
            devices.add(result["device"])
        else:
            lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()] \
                if (run / "metrics.jsonl").is_file() else []
            steps = max((r["step"] for r in lines), default=0)
        images += 2 * config["data"]["batch_size"] * steps
        n_runs += 1
        tasks.add(run.parts[-3])
        methods.add(run.parts[-2])
    if not n_runs:
        raise SystemExit(f"no runs under {runs}")
    import torch

    parallel = parallel or sweep.get("parallel")
    return {
        "task": "+".join(sorted(tasks)), "method": "+".join(sorted(methods)), "case": "digits_sweep",
        "implementation": "transferlab engine, parallel runs", "stage": None, "n_seeds": 1,
        "device": " / ".join(sorted(devices)) or "unknown", "device_type": "cuda" if any("NVIDIA" in d for d in devices) else "cpu",
        "command": this_command() + (f"  # sweep: {sweep['command']}" if sweep.get("command") else ""), "date": today(),
        "precision": "fp32", "compile": "none", "batch_size": 128, "backbone": "lenet/dtn", "torch": torch.__version__,
        "synthetic": False, "warmup_steps": 0, "timed_steps": None, "window_steps": [None], "warmup_s": None,
        "metric": "imgs_per_s", "mean": round(images / wall_s, 1), "std": 0.0, "n_windows": 1,
        "runs": n_runs, "runs_finished": finished, "parallel": parallel, "wall_s": wall_s, "images": images,
        "note": (f"whole card: {n_runs} digits-benchmark runs ({finished} finished), "
                 f"{parallel or '?'} at a time, {images:,} images in {wall_s:.0f} s wall (start-up and tail included)"
                 + (f"; {note}" if note else "")),
    }


def _device_name(device_type: str) -> str:
    """The card's (or CPU's) name for a failed measurement's record, as a successful one would give it."""
    import torch

    from transferlab.engine import device_description

    return device_description(torch.device(device_type))


def _row(r: dict) -> tuple:
    """One results.md row: a measurement's records (its img/s, step ms and peak memory)."""
    return _key(r)[:-2] + _key(r)[-1:]


def _merge(previous: list[dict], records: list[dict]) -> list[dict]:
    fresh = {_key(r) for r in records}
    return [r for r in previous if _key(r) not in fresh] + records


def _write(out: Path, previous: list[dict], records: list[dict], skipped: list[tuple]) -> None:
    """results.json (every record, validated by common.write_results) and a one-row-per-measurement results.md."""
    import tempfile

    merged = _merge(previous, records)
    out.parent.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, dict] = {}
    for r in merged:
        groups.setdefault(_row(r), {})[r["metric"]] = r

    def cells(r: dict) -> list:
        batch = f"{r['batch_size']}+{r['batch_size']}" if r.get("batch_size") else "—"
        case = " ".join([r["case"], *(r.get("overrides") or [])])
        head = [case, r["device"], r["precision"], r["compile"], batch]
        if r["mean"] is None:
            return head + ["failed", "—", "—", "—", r["note"]]
        group = groups[_row(r)]
        step, mem = group.get("step_ms", {}), group.get("peak_mem_mb", {})
        fmt = "{:,.0f}" if r["mean"] >= 100 else "{:.2f}"
        windows = f"{r['n_windows']} × {r['window_steps'][0]}" if (r.get("window_steps") or [None])[0] else "—"
        return head + [f"{fmt.format(r['mean'])} ± {fmt.format(r['std'])}",
                       f"{step['median']:.1f}" if "median" in step else "—",
                       f"{mem['mean']:,.0f}" if "mean" in mem else "—", windows, r["note"]]

    header = ("| case | device | precision | compile | batch | img/s (mean ± std) | step ms (median) | peak MB | "
              "windows × steps | note |\n|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        # one table row per measurement: the imgs_per_s record carries the row, the others fill its cells
        write_results(Path(tmp), merged, header, cells)
        table = [header] + ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in merged if r["metric"] == "imgs_per_s"]
        out.write_text((Path(tmp) / "results.json").read_text())
    mem_methods = sorted({f"{r['device_type']}: {r['mem_method']}" for r in merged if r.get("mem_method")})
    table += ["", "img/s = (source + target images) per second = 2 x batch x steps/s; mean ± std over the timing "
              "windows. Step ms: median over the windows of (window time / window steps)."]
    if mem_methods:
        table += ["", "Peak memory: " + "; ".join(mem_methods) + "."]
    table += ["", "Reference from the issue (NVIDIA H200, torch 2.11, DANN MNIST->USPS, LeNet, batch 128+128): "
              + "; ".join(f"{name} {value:,} img/s" for name, value in REFERENCE)
              + ". Goal: DANN digits >= 10x TLlib img/s; ResNet-50 bf16 peak memory <= 0.6x fp32 and >= 2x img/s."]
    if not any(r.get("device_type") == "cuda" for r in merged):
        table += ["", "All figures above are CPU figures; GPU figures are pending."]
    if skipped:
        table += ["", "Skipped: " + "; ".join(f"{c} {p} compile={m} ({why})" for c, p, m, why in skipped) + "."]
    from modalities import markdown_section  # text and audio records (samples_per_s), written by modalities.py

    table += markdown_section(merged)
    out.with_suffix(".md").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
