"""The demo's benchmark: what ``transferlab demo --seeds 5`` shows, measured through the demo's own code.

    python benchmarks/demo/run.py                      # final: seeds 0-4 on the target *test* split + CLI timing
    python benchmarks/demo/run.py --search             # the selection: every SEARCH candidate, seeds 0-4, validation
    python benchmarks/demo/run.py --search --only base lr03 --parallel 2 --threads 1
    python benchmarks/demo/run.py --aggregate-only     # rebuild results.md from results.json

The final measurement calls :func:`transferlab.demo.run_demo` (what ``transferlab demo`` runs) for seeds 0-4,
then times the default ``transferlab demo`` itself (one seed, t-SNE included) as a user starts it.

The search chooses the settings without looking at the target *test* split: each candidate is the packaged config
plus overrides, evaluated on the target's *train* split (``data.test: {name: <target>, part: train}``; its labels are
never used in training, only to compare candidates). Candidates that change the target's recipe
(``photo_scale``) register that variant of ``digits_m`` under its own name in each process; ``photo_scale=1.0`` is
the recipe ``digits_m`` had before this benchmark (Ganin & Lempitsky's MNIST-M formula unchanged).

Records of the other protocol already in results.json are kept (``--search`` keeps the final records and the
other way round; a candidate measured again replaces its records).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import summarize, this_command, today, write_results  # noqa: E402

TARGET_SCALES = (1.0, 0.7, 0.5, 0.4)
# tag -> (what the candidate changes, method, overrides of the packaged config, digits_m photo_scale)
SEARCH: dict[str, tuple[str, str, list[str], float]] = {
    # the former recipe (photo_scale 1.0): config levers and every adaptation method
    "old/base": ("former default: 600 it, lr 0.01, batch 64, LeNet 16 px, bottleneck 256", "dann", [], 1.0),
    "old/lr03": ("lr 0.03", "dann", ["optim.lr=0.03"], 1.0),
    "old/trade3": ("DANN trade_off 3", "dann", ["method.trade_off=3"], 1.0),
    "old/trade03": ("DANN trade_off 0.3", "dann", ["method.trade_off=0.3"], 1.0),
    "old/grl_const": ("constant GRL λ = 1", "dann", ["method.grl_schedule=constant"], 1.0),
    "old/disc256": ("discriminator 256 wide", "dann", ["method.discriminator_hidden=256"], 1.0),
    "old/joint": ("bn_mode joint", "dann", ["method.bn_mode=joint"], 1.0),
    "old/bneck64": ("bottleneck 64", "dann", ["model.bottleneck_dim=64"], 1.0),
    "old/img28": ("image size 28", "dann", ["data.image_size=28"], 1.0),
    "old/grey": ("grey input (channels 1)", "dann", ["data.channels=1"], 1.0),
    "old/it1500": ("1,500 it, lr 0.03, trade_off 3, discriminator 256", "dann",
                   ["train.iterations=1500", "optim.lr=0.03", "method.trade_off=3", "method.discriminator_hidden=256"], 1.0),
    "old/cdan": ("CDAN", "cdan", [], 1.0),
    "old/cdan_e": ("CDAN+E", "cdan_e", [], 1.0),
    "old/mcd": ("MCD", "mcd", [], 1.0),
    # the target's recipe: photo dimmed so strokes stay brighter than the background (scale <= 0.5)
    "s0.7/base": ("photo_scale 0.7", "dann", [], 0.7),
    "s0.5/base": ("photo_scale 0.5", "dann", [], 0.5),
    "s0.4/base": ("photo_scale 0.4", "dann", [], 0.4),
    "s0.5/lr03": ("photo_scale 0.5, lr 0.03", "dann", ["optim.lr=0.03"], 0.5),
    "s0.5/it400": ("photo_scale 0.5, 400 it", "dann", ["train.iterations=400"], 0.5),
    "s0.5/it1000": ("photo_scale 0.5, 1,000 it", "dann", ["train.iterations=1000"], 0.5),
    "s0.5/cdan": ("photo_scale 0.5, CDAN", "cdan", [], 0.5),
    "s0.4/lr03": ("photo_scale 0.4, lr 0.03", "dann", ["optim.lr=0.03"], 0.4),
}
SEEDS = [0, 1, 2, 3, 4]
TASK = "digits->digits_m"


def target_name(scale: float) -> str | None:
    """The registered name of digits_m at ``scale`` (None: digits_m itself)."""
    from transferlab.data.embedded import PHOTO_SCALE

    return None if scale == PHOTO_SCALE else f"digits_m_scale{scale:g}"


def register_targets() -> None:
    import functools

    from transferlab.data import register_embedded
    from transferlab.data.embedded import _halves, _split, blend_with_photos

    for scale in TARGET_SCALES:
        name = target_name(scale)
        if name is None:
            continue

        @functools.cache
        def make(scale=scale):
            _, (x, y) = _halves()
            return blend_with_photos(x, photo_scale=scale), y

        register_embedded(name, lambda part, make=make: _split(*make(), part), num_classes=10,
                          description=f"digits_m with photo_scale {scale:g} (benchmarks/demo search)")


def candidate_overrides(tag: str) -> list[str]:
    _, _, overrides, scale = SEARCH[tag]
    name = target_name(scale) or "digits_m"
    return overrides + [f"data.target={{name: {name}, part: train}}", f"data.test={{name: {name}, part: train}}"]


def _init(threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    register_targets()


def _one(job: tuple[str, str, int]) -> dict:
    from transferlab.demo import demo_config
    from transferlab.experiment import resolved_config, train

    tag, method, seed = job
    config = demo_config(method, seed=seed, overrides=candidate_overrides(tag))
    result = train(config, None, progress=False)
    return {"tag": tag, "method": method, "seed": seed, "acc": result["target_test/acc"],
            "train_seconds": result["train_seconds"], "device": result["device"], "config": resolved_config(config)}


def search(tags: list[str], parallel: int, threads: int) -> list[dict]:
    """Each candidate's method and source-only (once per distinct source-only config), seeds 0-4, on validation."""
    from multiprocessing import get_context

    jobs, baseline_of, seen = [], {}, {}
    _init(0)
    from transferlab.demo import demo_config
    from transferlab.experiment import resolved_config

    for tag in tags:
        method = SEARCH[tag][1]
        key = json.dumps(resolved_config(demo_config("source_only", overrides=candidate_overrides(tag))), sort_keys=True)
        baseline_of[tag] = seen.setdefault(key, tag)
        if seen[key] == tag:
            jobs += [(tag, "source_only", s) for s in SEEDS]
        jobs += [(tag, method, s) for s in SEEDS]
    started = time.time()
    with get_context("fork").Pool(parallel, initializer=_init, initargs=(threads,)) as pool:
        done = []
        for record in pool.imap_unordered(_one, jobs):
            done.append(record)
            print(f"  {record['tag']:<14} {record['method']:<12} seed {record['seed']}  {record['acc']:.1f}%  "
                  f"({record['train_seconds']:.1f} s)", flush=True)
    print(f"search: {len(jobs)} runs in {time.time() - started:.0f} s")
    records = []
    for tag in tags:
        description, method, _, scale = SEARCH[tag]
        runs = {m: sorted((r for r in done if r["tag"] == t and r["method"] == m), key=lambda r: r["seed"])
                for m, t in ((method, tag), ("source_only", baseline_of[tag]))}
        adapted, base = [r["acc"] for r in runs[method]], [r["acc"] for r in runs["source_only"]]
        gains = [a - b for a, b in zip(adapted, base)]
        mean, std = summarize(gains)
        records.append({
            "task": TASK, "method": method, "metric": "val_gain", "mean": round(mean, 2), "std": round(std, 2),
            "n_seeds": len(gains), "seeds": SEEDS, "protocol": "search", "tag": tag, "candidate": description,
            "photo_scale": scale, "overrides": SEARCH[tag][2],
            "validation": f"{(target_name(scale) or 'digits_m')}/train",
            "values": [round(g, 2) for g in gains], "adapted": [round(a, 2) for a in adapted],
            "source_only": [round(b, 2) for b in base],
            "train_seconds_mean": {method: round(statistics.fmean(r["train_seconds"] for r in runs[method]), 1),
                                   "source_only": round(statistics.fmean(r["train_seconds"] for r in runs["source_only"]), 1)},
            "threads_per_run": threads or "default", "parallel": parallel,
            "device": runs[method][0]["device"], "command": this_command(), "date": today(),
        })
    return records


def final(runs: Path) -> list[dict]:
    """Seeds 0-4 through run_demo (the demo's code path), then the default CLI demo timed as a user runs it."""
    from transferlab.data.embedded import PHOTO_SCALE
    from transferlab.demo import BASELINE, demo_config, run_demo
    from transferlab.experiment import resolved_config

    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = run_demo(runs / "seeds", seeds=SEEDS, progress=False)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    adapted = summary["adaptation"]
    common = {"task": TASK, "n_seeds": len(SEEDS), "seeds": SEEDS, "protocol": "final", "device": summary["device"],
              "test_set": summary["test_set"], "n_test": summary["n_test"], "iterations": summary["iterations"],
              "photo_scale": PHOTO_SCALE, "command": this_command(), "date": today()}
    records = []
    for method in (BASELINE, adapted):
        values = summary["accuracy"][method]
        mean, std = summarize(values)
        records.append({**common, "method": method, "metric": "target_test/acc", "mean": round(mean, 2),
                        "std": round(std, 2), "values": [round(v, 2) for v in values],
                        "train_seconds": [round(s, 1) for s in summary["train_seconds"][method]],
                        "config": resolved_config(demo_config(method, seed=0))})
    mean, std = summarize(summary["gain"])
    records.append({**common, "method": f"{adapted} − {BASELINE}", "metric": "gain", "mean": round(mean, 2),
                    "std": round(std, 2), "values": [round(v, 2) for v in summary["gain"]],
                    "config": resolved_config(demo_config(adapted, seed=0)),
                    "five_seed_wall_seconds": round(wall, 1), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]})
    # the demo as a user runs it: `transferlab demo` (seed 0, t-SNE included), wall clock of the whole process
    out = runs / "cli"
    cmd = [sys.executable, "-m", "transferlab.cli", "demo", "--out", str(out), "--no-progress"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    cli = json.loads((out / "results.json").read_text())
    records.append({**common, "method": f"transferlab demo ({BASELINE} + {adapted}, seed 0, t-SNE)",
                    "metric": "wall_seconds", "mean": round(wall, 1), "std": 0.0, "n_seeds": 1, "seeds": [0],
                    "values": [round(wall, 1)], "device": cli["device"],
                    "train_seconds": {m: round(cli["train_seconds"][m][0], 1) for m in (BASELINE, adapted)},
                    "accuracy": {m: round(cli["accuracy"][m][0], 2) for m in (BASELINE, adapted)},
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "cpus": os.cpu_count(), "timed_command": "transferlab demo --no-progress"})
    (HERE / "tsne.png").write_bytes((runs / "seeds" / "tsne.png").read_bytes())
    return records


def _row(r: dict) -> list:
    if r["protocol"] == "final":
        if r["metric"] == "wall_seconds":
            return [r["method"], "wall s", f"{r['mean']:.1f}", "", f"{r['device']}, load {r['load_average_before'][0]:.1f}"
                    f" → {r['load_average_after'][0]:.1f}"]
        mean = f"{r['mean']:+.1f} ± {r['std']:.1f}" if r["metric"] == "gain" else f"{r['mean']:.1f} ± {r['std']:.1f}"
        fmt = "{:+.1f}" if r["metric"] == "gain" else "{:.1f}"
        return [r["method"], r["metric"], mean, ", ".join(fmt.format(v) for v in r["values"]), r["device"]]
    return [r["tag"], r["candidate"], r["method"], f"{statistics.fmean(r['source_only']):.1f}",
            f"{statistics.fmean(r['adapted']):.1f}", f"{r['mean']:+.1f} ± {r['std']:.1f}",
            f"{min(r['values']):+.1f}", ", ".join(f"{v:+.1f}" for v in r["values"]),
            f"{r['train_seconds_mean'][r['method']]:.0f}"]


NOTES = """
## How the settings were chosen

The former embedded default gave DANN a thin gain (issue #15: 52.6 vs 47.5 % over seeds 0-2, both near 50 %). The search below is on
validation only: the target's *train* split (its labels never reach training; DANN sees those images unlabelled),
seeds 0-4; the final table above is the only measurement on the target *test* split.

On the former recipe (`photo_scale 1.0`, rows `old/…`) no config lever and no adaptation method gained more than a
few points. The reason is in the data: MNIST-M's `|patch − digit|` makes a stroke *darker* than its background
wherever the photo patch is bright (38 % of the target's train digits). A DANN model of the former default (seed
0) classified 77 % of the bright-stroke digits of the target's train split right and 1 % of the dark-stroke ones, and no method learns that
inversion from ~670 unlabelled images. With the photo dimmed to half its brightness (`photo_scale 0.5`, the
largest scale at which every stroke, ≥ 127.5, stays brighter than its background, ≤ 127.5) the shift is colour and
texture, the kind adversarial alignment removes, and DANN gains decisively with the library defaults.

Rule, fixed before the final measurement: keep the recipe closest to MNIST-M (the largest photo_scale) at which
some candidate gains at least +8 points on mean validation with no seed below source-only; among that scale's
candidates whose two runs fit the time budget (under 60 s together on 2 cores), take the one with the largest
smallest per-seed gain (the demo shows one seed, so the worst seed matters); DANN with its library defaults is
preferred on a tie. The packaged config's method section may hold only hyper-parameters every method has
(bn_mode), because `configs/digits/digits_digits_m_<method>.yaml` build on it.

Columns: mean validation accuracy of source-only and of the method, the gain (mean ± std over seeds
0-4), the smallest per-seed gain, each seed's gain, and the method's mean train seconds per run (1 thread per run,
two runs at a time, on a machine shared with other work).
"""


def write(records: list[dict]) -> None:
    final_records = [r for r in records if r["protocol"] == "final"]
    search_records = [r for r in records if r["protocol"] == "search"]
    header = ("# transferlab demo: the embedded default, 5 seeds\n\n"
              "`python benchmarks/demo/run.py`: seeds 0-4 through `transferlab.demo.run_demo` (the demo's code), "
              "target accuracy % of the final model on the target test split, then the default `transferlab demo` "
              "timed as a whole process.\n\n"
              "| method | metric | mean ± std | per seed (0-4) | device / load |\n|---|---|---|---|---|")
    write_results(HERE, final_records + search_records, header, lambda r: _row(r) if r["protocol"] == "final" else [])
    lines = [header] + ["| " + " | ".join(str(c) for c in _row(r)) + " |" for r in final_records]
    if final_records:
        lines += ["", "t-SNE of source and target test features, seed 0, before adaptation (top: source-only) and after "
                  "(bottom: DANN); left by domain, right by class:", "", "![t-SNE before and after adaptation](tsne.png)"]
    lines += [NOTES, "| candidate | what changes | method | source-only val % | method val % | gain | min gain | "
                     "gain per seed (0-4) | train s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in _row(r)) + " |" for r in search_records]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", action="store_true", help="run the SEARCH candidates on validation")
    parser.add_argument("--only", nargs="+", choices=list(SEARCH), help="with --search: these candidates only")
    parser.add_argument("--parallel", type=int, default=2, help="with --search: runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="with --search: CPU threads per run (0: default)")
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench_demo"), help="where the final runs are stored")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    path = HERE / "results.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    if args.search:
        new = search(args.only or list(SEARCH), args.parallel, args.threads)
        tags = {r["tag"] for r in new}
        records = [r for r in records if not (r["protocol"] == "search" and r["tag"] in tags)] + new
        order = list(SEARCH)
        records.sort(key=lambda r: (r["protocol"] != "final", order.index(r["tag"]) if "tag" in r else 0))
    elif not args.aggregate_only:
        records = final(Path(args.runs)) + [r for r in records if r["protocol"] != "final"]
    write(records)
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
