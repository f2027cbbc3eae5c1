"""Medical multi-hop transfer (GitHub issue #16), through the project's commands.

    TRANSFERLAB_DATA=../shared/data python benchmarks/medical/run.py --seeds 0 1 2 --parallel 2 --threads 1
    (rerunning skips finished runs and cells, and re-aggregates; --aggregate-only only re-aggregates)

1. **PneumoniaMNIST** (chest X-ray, 28 px grey; train 4,708 / val 524 / test 624), ResNet-18 (torchvision, 11 M
   parameters), 600 iterations of batch 64, per seed:
   * ``scratch``: ``transferlab train configs/medical/xray.yaml`` (random initialisation);
   * ``natural_hop``: ``transferlab chain configs/medical/natural_xray.yaml``: first 600 iterations on natural photos
     (Office-Caltech10 "caltech", 1,123 RGB images, 10 objects, 28 px: the offline stand-in for ImageNet), then the
     same X-ray training from that encoder (first convolution summed from RGB to grey).
   Test AUC / accuracy / ECE / NLL of the final model, before and after a temperature fitted on the val split.
2. **Brain MRI** (253 slices, 32 px grey, percentile intensity mapping), ``transferlab cv configs/medical/mri.yaml``:
   stratified 5-fold cross-validation with duplicate groups kept in one fold, fold i+1 held out for the temperature,
   3 seeds (partition and run), 150 iterations of batch 32 per cell. Strategies (``--set`` on that config):
   ``scratch``; ``xray_all`` / ``xray_freeze`` (from the seed's X-ray scratch run: fine-tune everything / freeze
   conv1 + layer1, BatchNorm statistics included); ``hop_all`` / ``hop_freeze`` (from the seed's natural -> X-ray
   chain); ``adapter`` (the X-ray encoder frozen, a zero-initialised residual adapter on its features + a new head);
   ``adapter_dann`` (the same, plus DANN's domain discriminator through the GRL aligning the MRI features with the
   X-ray training images' features); added after that grid, to test whether the pretrained strategies only needed a
   gentler schedule: ``xray_all_lr0.001`` / ``hop_all_lr0.001`` (a 10x smaller lr) and ``hop_gradual`` (layer3, layer2,
   layer1 unfrozen at steps 40, 80, 120; conv1 frozen). Paired per-cell differences against ``scratch``.
3. The proxy A-distance between the modalities' features at each hop (natural vs X-ray in the natural encoder; X-ray
   vs MRI in the X-ray encoders), a reliability diagram and a Grad-CAM sheet.

Nothing is selected on test data: every run is scored once, at its last step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import measured, run_parallel, summarize, this_command, write_results  # noqa: E402

STRATEGIES = {
    "scratch": lambda seed, runs: [],
    "xray_all": lambda seed, runs: [f"model.encoder_init={runs / 'xray_scratch' / f'seed{seed}'}"],
    "xray_freeze": lambda seed, runs: [f"model.encoder_init={runs / 'xray_scratch' / f'seed{seed}'}",
                                       "model.freeze=[conv1,layer1]"],
    "hop_all": lambda seed, runs: [f"model.encoder_init={runs / 'hop' / f'seed{seed}' / 'xray'}"],
    "hop_freeze": lambda seed, runs: [f"model.encoder_init={runs / 'hop' / f'seed{seed}' / 'xray'}",
                                      "model.freeze=[conv1,layer1]"],
    # added after the grid above was measured, to test whether the pretrained strategies only lacked a smaller
    # learning rate or a gentler schedule (reported whatever they give; nothing is picked by the test folds)
    "xray_all_lr0.001": lambda seed, runs: [f"model.encoder_init={runs / 'xray_scratch' / f'seed{seed}'}",
                                            "optim.lr=0.001"],
    "hop_all_lr0.001": lambda seed, runs: [f"model.encoder_init={runs / 'hop' / f'seed{seed}' / 'xray'}",
                                           "optim.lr=0.001"],
    "hop_gradual": lambda seed, runs: [f"model.encoder_init={runs / 'hop' / f'seed{seed}' / 'xray'}",
                                       "model.freeze=[conv1,layer1,layer2,layer3]",
                                       "model.unfreeze={layer3: 40, layer2: 80, layer1: 120}"],
    "adapter": lambda seed, runs: [f"model.encoder_init={runs / 'xray_scratch' / f'seed{seed}'}",
                                   "model.adapter={bottleneck: 64, train: adapters+heads}"],
    "adapter_dann": lambda seed, runs: [f"model.encoder_init={runs / 'xray_scratch' / f'seed{seed}'}",
                                        "model.adapter={bottleneck: 64, train: adapters+heads}", "method.name=dann",
                                        "data.target={name: pneumoniamnist, part: train}"],
}
METRICS = ("auc", "acc", "ece", "nll")
LAYER = "encoder.backbone.model.layer2.1.conv2"  # 4x4 maps at 28-32 px (the default, layer3, gives 2x2)


def _with_root(cmd: list[str], data_root: str | None) -> list[str]:
    return cmd + (["--data-root", data_root] if data_root else [])


def xray_commands(runs: Path, seeds: list[int], data_root: str | None) -> list[list[str]]:
    out = []
    for seed in seeds:
        scratch = runs / "xray_scratch" / f"seed{seed}"
        if not (scratch / "result.json").is_file():
            resume = ["--resume"] if (scratch / "config.json").is_file() else []
            out.append(_with_root(["transferlab", "train", "configs/medical/xray.yaml", "--out", str(scratch),
                                   "--set", f"seed={seed}", "--no-progress", *resume], data_root))
        hop = runs / "hop" / f"seed{seed}"
        if not (hop / "chain.json").is_file():
            out.append(_with_root(["transferlab", "chain", "configs/medical/natural_xray.yaml", "--out", str(hop),
                                   "--set", f"seed={seed}", "--no-progress"], data_root))
    return out


def mri_commands(runs: Path, seeds: list[int], data_root: str | None) -> list[list[str]]:
    out = []
    for name, overrides in STRATEGIES.items():
        for seed in seeds:
            folder = runs / "mri" / name / f"seed{seed}"
            if (folder / "cv.json").is_file():
                continue
            sets = [a for o in overrides(seed, runs) for a in ("--set", o)]
            out.append(_with_root(["transferlab", "cv", "configs/medical/mri.yaml", "--seeds", str(seed), "--folds", "5",
                                   "--out", str(folder), "--no-progress", *sets], data_root))
    return out


# --- aggregation -----------------------------------------------------------------------------------------------------


def xray_rows(runs: Path, data_root: str | None) -> dict[str, list[dict]]:
    """Per X-ray run: its test metrics before/after a temperature fitted on pneumoniamnist/val, by
    ``transferlab analyze calibration`` (kept in ``<run>/calibration``)."""
    rows: dict[str, list[dict]] = {"scratch": [], "natural_hop": []}
    for name, pattern in (("scratch", "xray_scratch/seed*"), ("natural_hop", "hop/seed*/xray")):
        for run in sorted(runs.glob(pattern)):
            if not (run / "result.json").is_file():
                continue
            report = run / "calibration" / "calibration.json"
            if not report.is_file():
                subprocess.run(_with_root(["transferlab", "analyze", "calibration", str(run), "--val",
                                           "pneumoniamnist:val", "--out", str(report.parent)], data_root), check=True)
            result = json.loads((run / "result.json").read_text())
            rows[name].append({**json.loads(report.read_text()), "device": result["device"],
                               "date": measured(run / "result.json"), "parameters": result.get("parameters")})
    return rows


def mri_rows(runs: Path) -> dict[str, list[dict]]:
    out = {}
    for name in STRATEGIES:
        rows = []
        for path in sorted((runs / "mri" / name).glob("seed*/cv.json")):
            cv = json.loads(path.read_text())
            rows += [{**r, "date": measured(path)} for r in cv["rows"]]
        if rows:
            out[name] = rows
    return out


def hop_distances(runs: Path, data_root: str | None, seeds: list[int]) -> list[dict]:
    """Proxy A-distance (linear domain classifier, 2 x 600 images) between two modalities' features in one encoder."""
    from transferlab.analysis.divergence import proxy_a_distance
    from transferlab.analysis.features import extract, sample
    from transferlab.config import DomainConfig
    from transferlab.experiment import load_domain, load_for_eval

    natural = DomainConfig(name="office_caltech10_images", part="amazon")
    xray = DomainConfig(name="pneumoniamnist", part="test")
    mri = DomainConfig(name="brain_tumor_mri", part="all_64")
    pairs = [("natural->xray", "natural encoder (hop stage 1)", "hop/seed{s}/natural", natural, xray),
             ("xray->mri", "X-ray encoder, from scratch", "xray_scratch/seed{s}", xray, mri),
             ("xray->mri", "X-ray encoder, via the natural hop", "hop/seed{s}/xray", xray, mri)]
    out = []
    for hop, encoder, pattern, a, b in pairs:
        values = []
        for seed in seeds:
            run = runs / pattern.format(s=seed)
            if not (run / "model.safetensors").is_file():
                continue
            experiment = load_for_eval(run, data_root)
            root, prep = data_root or experiment.config.data.root, experiment.modality.prepare
            fa = extract(experiment.method, sample(prep(load_domain(a, root, seed)), 600, seed), experiment.transform)
            fb = extract(experiment.method, sample(prep(load_domain(b, root, seed)), 600, seed), experiment.transform)
            values.append(proxy_a_distance(fa["features"], fb["features"], seed=seed)["a_distance"])
        if values:
            mean, std = summarize(values)
            out.append({"hop": hop, "encoder": encoder, "a_distance_mean": round(mean, 3), "a_distance_std": round(std, 3),
                        "n_seeds": len(values)})
    return out


def figures(runs: Path, data_root: str | None) -> None:
    """The reliability diagram of :func:`xray_rows` (PneumoniaMNIST test, seed 0, before/after a temperature fitted on
    val) and Grad-CAM sheets at layer2 (X-ray seed 0; MRI hop_all seed 0 fold 0), copied next to results.md."""
    import shutil

    jobs = []
    scratch = runs / "xray_scratch" / "seed0"
    cell = runs / "mri" / "hop_all" / "seed0" / "seed0" / "fold0"
    if (scratch / "calibration" / "reliability.png").is_file() and not (HERE / "reliability_pneumonia.png").is_file():
        shutil.copyfile(scratch / "calibration" / "reliability.png", HERE / "reliability_pneumonia.png")  # xray_rows'
    if (scratch / "result.json").is_file():
        jobs.append((["transferlab", "analyze", "gradcam", str(scratch), "--n", "16", "--layer", LAYER], "gradcam_xray", "gradcam.png",
                     "gradcam_pneumonia.png"))
    if (cell / "result.json").is_file():
        jobs.append((["transferlab", "analyze", "gradcam", str(cell), "--n", "16", "--layer", LAYER], "gradcam_mri", "gradcam.png",
                     "gradcam_mri.png"))
    for cmd, folder, made, name in jobs:
        if (HERE / name).is_file():
            continue
        out = runs / "figures" / folder
        subprocess.run(_with_root(cmd + ["--out", str(out)], data_root), check=True)
        shutil.copyfile(out / made, HERE / name)


def aggregate(runs: Path, data_root: str | None, seeds: list[int]) -> None:
    from transferlab.crossval import paired_comparison

    command_file = runs / "command.txt"
    command = command_file.read_text().strip() if command_file.is_file() else this_command()
    records = []

    def record(task, method, metric, values, device, date, **extra):
        mean, std = summarize(values)
        records.append({"task": task, "method": method, "metric": metric, "mean": round(mean, 4), "std": round(std, 4),
                        "n_seeds": len(values), "device": device, "command": command, "date": date, **extra})

    for name, rows in xray_rows(runs, data_root).items():
        if not rows:
            continue
        for stage in ("before", "after"):
            for metric in METRICS:
                record("pneumoniamnist (test)", name, metric, [r[stage][metric] for r in rows], rows[0]["device"],
                       max(r["date"] for r in rows), calibration="none" if stage == "before" else "temperature (val split)",
                       trainable_params=rows[0]["parameters"]["trainable"], iterations=600,
                       temperature=round(summarize([r["temperature"] for r in rows])[0], 3) if stage == "after" else None)
    mri = mri_rows(runs)
    comparisons = []
    for name, rows in mri.items():
        device = json.loads((runs / "mri" / name / "seed0" / "seed0" / "fold0" / "result.json").read_text())["device"] \
            if (runs / "mri" / name / "seed0" / "seed0" / "fold0" / "result.json").is_file() else "?"
        n_seeds = len({r["seed"] for r in rows})
        for stage in ("before", "after"):
            for metric in METRICS:
                values = [r[stage][metric] for r in rows if r[stage] and r[stage][metric] is not None]
                record("brain_tumor_mri (5-fold CV)", name, metric, values, device, max(r["date"] for r in rows),
                       calibration="none" if stage == "before" else "temperature (validation fold)", n_cells=len(values),
                       n_seeds=n_seeds, trainable_params=(rows[0]["parameters"] or {}).get("trainable"))
        if name != "scratch" and "scratch" in mri:
            for metric in ("auc", "acc", "nll", "ece", "after.nll", "after.ece"):
                try:
                    comparison = paired_comparison(rows, mri["scratch"], metric)
                except Exception as exc:  # noqa: BLE001  (an incomplete grid: say so in the table)
                    comparison = {"error": str(exc)}
                comparisons.append({"strategy": name, "versus": "scratch", "metric": metric, **comparison})
    (HERE / "comparisons.json").write_text(json.dumps(comparisons, indent=2) + "\n")
    hops_file = HERE / "hops.json"
    if not hops_file.is_file():
        hops_file.write_text(json.dumps(hop_distances(runs, data_root, seeds), indent=2) + "\n")
    write_results(HERE, records, "| task | method | metric | calibration | mean | std | n | trainable params |\n"
                  "|---|---|---|---|---|---|---|---|",
                  lambda r: [r["task"], r["method"], r["metric"], r["calibration"], f"{r['mean']:.3f}",
                             f"{r['std']:.3f}", r.get("n_cells", r["n_seeds"]), f"{r['trainable_params']:,}"
                             if r.get("trainable_params") else "?"])
    (HERE / "results.md").write_text(summary_markdown(records, comparisons, json.loads(hops_file.read_text()), command)
                                     + "\n## Every record\n\n" + (HERE / "results.md").read_text())
    figures(runs, data_root)


def summary_markdown(records: list[dict], comparisons: list[dict], hops: list[dict], command: str) -> str:
    """The tables people read: one row per method and task, mean ± std, before | after temperature scaling."""
    def cell(task, method, metric, calibrated):
        for r in records:
            if (r["task"], r["method"], r["metric"]) == (task, method, metric) and \
                    (r["calibration"] != "none") == calibrated:
                return f"{r['mean']:.3f} ± {r['std']:.3f}"
        return ""

    device = records[0]["device"] if records else "?"
    lines = ["# Medical imaging benchmark (issue #16)", "",
             f"Made by `{command}` (see `benchmarks/medical/run.py` for the protocol); {device}, CPU only.", ""]
    for task in dict.fromkeys(r["task"] for r in records):
        methods = list(dict.fromkeys(r["method"] for r in records if r["task"] == task))
        n = next(r.get("n_cells", r["n_seeds"]) for r in records if r["task"] == task)
        params = {r["method"]: r.get("trainable_params") for r in records if r["task"] == task}
        lines += [f"## {task}", "", f"mean ± std over {n} {'cells (5 folds x 3 seeds)' if 'CV' in task else 'seeds'}; "
                  "AUC, acc and ECE are fractions, NLL in nats; 'T' = after temperature scaling (fitted on validation "
                  "data only; it never changes acc or AUC)", "",
                  "| method | trainable params | AUC | acc | ECE | NLL | ECE (T) | NLL (T) |", "|---|---|---|---|---|---|---|---|"]
        for m in methods:
            lines.append(f"| {m} | {params[m]:,} | " + " | ".join(
                [cell(task, m, k, False) for k in ("auc", "acc", "ece", "nll")] +
                [cell(task, m, k, True) for k in ("ece", "nll")]) + " |")
        lines.append("")
    if comparisons:
        lines += ["## Paired against `scratch` (brain MRI, per cell: same seed, same fold)", "",
                  "A − scratch, mean ± std over the 15 cells; wins/losses count cells where A is better/worse; p: paired "
                  "t-test, p corr.: corrected resampled t-test (Nadeau & Bengio 2003), which allows for the training rows "
                  "cells share.", "", "| strategy | metric | A − scratch | wins/losses/ties | p | p corr. |",
                  "|---|---|---|---|---|---|"]
        fmt = lambda v: "" if v is None else f"{v:.3g}"  # noqa: E731
        for c in comparisons:
            if "error" in c:
                lines.append(f"| {c['strategy']} | {c['metric']} | {c['error']} | | | |")
                continue
            lines.append(f"| {c['strategy']} | {c['metric']} | {c['mean_diff']:+.3f} ± {c['std_diff']:.3f} | "
                         f"{c['wins']}/{c['losses']}/{c['ties']} | {fmt(c['p_value'])} | {fmt(c['p_value_corrected'])} |")
        lines.append("")
    if hops:
        lines += ["## Proxy A-distance between modalities at each hop", "",
                  "Features of one encoder (its test-time preprocessing) on 600 images of each modality; a linear "
                  "domain classifier; 2 = perfectly separable.", "", "| hop | encoder | A-distance | seeds |", "|---|---|---|---|"]
        lines += [f"| {h['hop']} | {h['encoder']} | {h['a_distance_mean']:.3f} ± {h['a_distance_std']:.3f} | {h['n_seeds']} |"
                  for h in hops]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench_medical"))
    parser.add_argument("--data-root", help="default: $TRANSFERLAB_DATA")
    parser.add_argument("--only", choices=["xray", "mri"], help="run one part only")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not args.aggregate_only:
        (runs).mkdir(parents=True, exist_ok=True)
        (runs / "command.txt").write_text(this_command() + "\n")
        if args.only in (None, "xray"):
            run_parallel(xray_commands(runs, args.seeds, args.data_root), args.parallel, args.threads, runs / "logs_xray")
        if args.only in (None, "mri"):
            run_parallel(mri_commands(runs, args.seeds, args.data_root), args.parallel, args.threads, runs / "logs_mri")
    aggregate(runs, args.data_root, args.seeds)


if __name__ == "__main__":
    main()
