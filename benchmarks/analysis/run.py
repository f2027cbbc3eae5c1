"""Diagnostics evidence (`transferlab analyze ...` on the project's own saved runs).

  divergence  proxy A-distance, joint error λ and errors of every digits-benchmark run
              (runs/bench_digits, made by benchmarks/digits/run.py): does adaptation align the domains?
  features    t-SNE of source-only vs DANN features (seed 0, MNIST->USPS)
  scores      LogME / H-score / TransRate of 10 candidate encoders on USPS: the self-taught benchmark's
              6 (runs/bench_selftaught, made by benchmarks/selftaught/run.py) and 4 more pretrained here
              (shorter SimCLR and DAE, plain and sparse autoencoders), against the accuracy fine-tuning
              reached with 10 labels per class (3 seeds each)
  landscape   loss from initialisation to solution and sharpness: SimCLR-pretrained fine-tuning vs
              training from scratch, USPS with 10 labels per class, 3 seeds
  layers      Yosinski et al.'s AnB/BnB(+) curves, MNIST digits 0-4 (A) vs 5-9 (B), LeNet, 3 seeds
  task2vec    Task2Vec distances between digit, photo and X-ray tasks with a SimCLR-pretrained LeNet probe
  transfer    negative-transfer check: every method vs source-only vs a target-only LeNet trained on
              10 labelled target images per class (3 seeds), on both digits tasks
  cka         linear CKA layer by layer: source-only vs DANN (MNIST->USPS, seed 0), and a fine-tuned
              encoder (USPS, k = 10) vs the SimCLR encoder it started from
  sources     source selection: 7 supervised LeNets (configs/analysis/sources/: MNIST, USPS, MNIST-M,
              the embedded digits pair, PneumoniaMNIST, Office-Caltech Amazon), each fine-tuned on
              MNIST, USPS and MNIST-M with 10 labels per class (3 seeds) against scratch; LogME,
              H-score, TransRate, LEEP and NCE rank them per target; Task2Vec distance vs the gain

    python benchmarks/analysis/run.py [--parts divergence features scores landscape] [--parallel 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import measured, this_command, today, write_results  # noqa: E402

DIGITS = REPO / "runs" / "bench_digits"
SELFTAUGHT = REPO / "runs" / "bench_selftaught"
OUT = REPO / "runs" / "bench_analysis"
METHODS = ["source_only", "dann", "adda", "cdan", "cdan_e", "mcd"]
TASKS = {"mnist_usps": "mnist->usps", "usps_mnist": "usps->mnist"}
EXTRA_CANDIDATES = [("simclr", 300), ("denoising_autoencoder", 300), ("autoencoder", 1200), ("sparse_autoencoder", 1200)]
TASK2VEC = ["mnist", "usps", "mnist_m", "digits", "digits_m", "office_caltech10_images:amazon",
            "office_caltech10_images:webcam", "office_caltech10_images:caltech", "pneumoniamnist"]
SOURCES = {"mnist": "mnist", "usps": "usps", "mnist_m": "mnist_m", "digits": "digits", "digits_m": "digits_m",
           "pneumoniamnist": "pneumoniamnist", "amazon": "office_caltech10_images:amazon"}  # config -> task
SOURCE_TARGETS = ["mnist", "usps", "mnist_m"]


def cli(*args: str) -> None:
    print("$ transferlab", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "transferlab.cli", *args], check=True, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["divergence", "features", "scores", "landscape", "layers", "task2vec", "cka", "transfer", "sources"])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    if not args.aggregate_only:
        jobs = []
        if "divergence" in args.parts:
            for task in TASKS:
                for method in METHODS:
                    out = OUT / "divergence" / task / method
                    runs = sorted(str(p.parent) for p in (DIGITS / task / method).glob("seed*/model.safetensors"))
                    if runs and not (out / "divergence.json").is_file():
                        jobs.append(("analyze", "divergence", *runs, "--out", str(out)))
        if "features" in args.parts:
            for method in ("source_only", "dann"):
                run = DIGITS / "mnist_usps" / method / "seed0"
                jobs.append(("analyze", "features", str(run), "--out", str(OUT / "features" / method)))
        if "landscape" in args.parts:
            for seed in (0, 1, 2):
                pretrained = SELFTAUGHT / "mnist_usps" / "simclr" / f"seed{seed}"
                for name, extra in (("finetune", ()), ("scratch", ("--from-scratch",))):
                    out = OUT / "landscape" / f"{name}_seed{seed}"
                    if not (out / "model.safetensors").is_file():
                        cli("finetune", str(pretrained), "--labels-per-class", "10", "--seed", str(seed), *extra,
                            "--out", str(out), "--overwrite", "--no-progress")
                    jobs.append(("analyze", "landscape", str(out), "--out", str(OUT / "landscape" / "analysis")))
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda job: cli(*job), jobs))
        if "scores" in args.parts:
            # candidates: the self-taught benchmark's 6 encoders, plus 4 more pretrained differently (seed 0)
            extra = []
            for method, iterations in EXTRA_CANDIDATES:
                out = OUT / "candidates" / f"{method}_{iterations}"
                if not (out / "model.safetensors").is_file():
                    cli("pretrain", str(REPO / "configs/selftaught" / f"mnist_usps_{method}.yaml"), "--out", str(out),
                        "--set", f"train.iterations={iterations}", "--overwrite", "--no-progress")
                extra.append(str(out))
            cli("grid", *extra, "--strategies", "finetune", "--labels-per-class", "10", "--seeds", "0", "1", "2",
                "--jobs", str(args.parallel), "--out", str(OUT / "candidates" / "grid"))
            candidates = sorted(str(p.parent) for p in (SELFTAUGHT / "mnist_usps").glob("*/seed*/model.safetensors"))
            cli("analyze", "scores", *candidates, *extra, "--accuracies-from", str(SELFTAUGHT / "mnist_usps" / "grid"),
                str(OUT / "candidates" / "grid"), "--labels-per-class", "10", "--out", str(OUT / "scores"))
        if "layers" in args.parts:
            cli("analyze", "layers", "--task-a", str(REPO / "configs/analysis/digits04.yaml"), "--task-b",
                str(REPO / "configs/analysis/digits59.yaml"), "--seeds", "0", "1", "2", "--jobs", str(args.parallel),
                "--out", str(OUT / "layers"))
        if "task2vec" in args.parts:
            cli("analyze", "task2vec", str(SELFTAUGHT / "mnist_usps" / "simclr" / "seed0"), "--tasks", *TASK2VEC,
                "--max-samples", "300", "--out", str(OUT / "task2vec"))
        if "cka" in args.parts:
            cli("analyze", "cka", str(DIGITS / "mnist_usps" / "source_only" / "seed0"),
                str(DIGITS / "mnist_usps" / "dann" / "seed0"), "--out", str(OUT / "cka" / "source_only_vs_dann"))
            finetuned = OUT / "landscape" / "finetune_seed0"  # made by the landscape part
            cli("analyze", "cka", str(finetuned), str(SELFTAUGHT / "mnist_usps" / "simclr" / "seed0"),
                "--out", str(OUT / "cka" / "finetuned_vs_pretrained"))
        if "transfer" in args.parts:
            for task in TASKS:
                runs = sorted(str(p.parent) for p in (DIGITS / task).glob("*/seed*/model.safetensors"))
                cli("analyze", "transfer", *runs, "--out", str(OUT / "transfer" / task))
        if "sources" in args.parts:
            src = OUT / "sources"
            pending = [name for name in SOURCES if not (src / "models" / name / "model.safetensors").is_file()]
            with ThreadPoolExecutor(args.parallel) as pool:
                list(pool.map(lambda name: cli("train", str(REPO / "configs/analysis/sources" / f"{name}.yaml"), "--out",
                                               str(src / "models" / name), "--overwrite", "--no-progress"), pending))
            for target in SOURCE_TARGETS:
                candidates = [str(src / "models" / name) for name in SOURCES if name != target]
                cli("grid", *candidates, "--target", target, "--labels-per-class", "10", "--strategies", "finetune",
                    "scratch", "--seeds", "0", "1", "2", "--jobs", str(args.parallel), "--out", str(src / f"grid_{target}"))
                cli("analyze", "scores", *candidates, "--target", target, "--accuracies-from", str(src / f"grid_{target}"),
                    "--labels-per-class", "10", "--out", str(src / f"scores_{target}"))
            cli("analyze", "task2vec", str(SELFTAUGHT / "mnist_usps" / "simclr" / "seed0"), "--tasks",
                *dict.fromkeys(list(SOURCES.values()) + SOURCE_TARGETS), "--max-samples", "300",
                "--gains-from", *[str(src / f"grid_{t}") for t in SOURCE_TARGETS], "--labels-per-class", "10",
                "--out", str(src / "task2vec"))
        with open(OUT / "command.txt", "a") as handle:  # every invocation that contributed, in order
            handle.write(this_command() + "\n")
    aggregate()


def plot_all_divergence(task: str) -> None:
    """One divergence figure per task over every method's runs."""
    sys.path.insert(0, str(REPO / "src"))
    from transferlab.reports.divergence import plot_divergence

    reports = [r for m in METHODS if (OUT / "divergence" / task / m / "divergence.json").is_file()
               for r in json.loads((OUT / "divergence" / task / m / "divergence.json").read_text())]
    plot_divergence(reports, HERE / f"divergence_{task}.png")


def _summary(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate() -> None:
    lines = (OUT / "command.txt").read_text().split("\n") if (OUT / "command.txt").is_file() else [this_command()]
    command = "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip()))
    records = []
    base = {"command": command, "date": today()}
    for task, name in TASKS.items():
        for method in METHODS:
            path = OUT / "divergence" / task / method / "divergence.json"
            if not path.is_file():
                continue
            reports = json.loads(path.read_text())
            for metric in ("a_distance", "lambda", "source_error", "target_error"):
                mean, std = _summary([r[metric] for r in reports])
                records.append({"task": name, "method": method, "metric": metric, "mean": round(mean, 4),
                                "std": round(std, 4), "n_seeds": len(reports), "values": [r[metric] for r in reports],
                                "device": "Intel Xeon CPU, 1 thread (analysis); runs from benchmarks/digits",
                                "runs": [r["run"] for r in reports], "classifier": reports[0]["classifier"],
                                "n_samples": [reports[0]["n_source"], reports[0]["n_target"]], **base, "date": measured(path)})
    scores = OUT / "scores" / "scores.json"
    if scores.is_file():
        report = json.loads(scores.read_text())
        for key, corr in report["correlation"].items():
            records.append({"task": "mnist (unlabelled) -> usps, k=10 fine-tuning", "method": key,
                            "metric": "weighted_kendall_tau", "mean": round(corr["weighted_kendall_tau"], 4), "std": 0.0,
                            "n_seeds": 1, "kendall_tau": corr["kendall_tau"], "n_candidates": report["n_candidates"],
                            "candidates": [{k: c[k] for k in ("run", "pretraining", "finetuned_acc", key)}
                                           for c in report["candidates"]],
                            "device": "Intel Xeon CPU, 1 thread", **base, "date": measured(scores)})
    landscape = sorted((OUT / "landscape" / "analysis").glob("landscape_*.json"))
    for strategy in ("finetune", "scratch"):
        infos = [json.loads(p.read_text()) for p in landscape if p.stem.startswith(f"landscape_{strategy}")]
        if infos:
            for metric, values in (("sharpness", [i["sharpness"] for i in infos]),
                                   ("train_loss", [i["slice_center_loss"] for i in infos])):
                mean, std = _summary(values)
                records.append({"task": "usps, 10 labels/class (SimCLR-pretrained on MNIST vs scratch)",
                                "method": strategy, "metric": metric, "mean": mean, "std": std,
                                "n_seeds": len(values), "values": values, "radius": 0.1,
                                "device": "Intel Xeon CPU, 1 thread", **base, "date": measured(landscape[-1])})
    layers = OUT / "layers" / "layers.json"
    if layers.is_file():
        report = json.loads(layers.read_text())
        for condition, curve in [("baseA", {"0": report["baseA"]}), ("baseB", {"0": report["baseB"]}), *report["curves"].items()]:
            for n, value in curve.items():
                records.append({"task": "layer transfer: mnist digits 0-4 (A) -> 5-9 (B)", "method": condition,
                                "metric": "test_acc", "layers_copied": int(n), "mean": round(value["mean"], 2),
                                "std": round(value["std"], 2), "n_seeds": len(value["values"]), "values": value["values"],
                                "device": report["device"], **base, "date": measured(layers)})
        (HERE / "layers.png").write_bytes((OUT / "layers" / "layers.png").read_bytes())
    task2vec = OUT / "task2vec" / "task2vec.json"
    if task2vec.is_file():
        report = json.loads(task2vec.read_text())
        names = report["names"]
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if j > i:
                    records.append({"task": f"{a} <-> {b}", "method": "task2vec (probe: SimCLR LeNet, MNIST)",
                                    "metric": "task2vec_distance", "mean": round(report["distances"][i][j], 4),
                                    "std": 0.0, "n_seeds": 1, "device": "Intel Xeon CPU, 1 thread", **base, "date": measured(task2vec)})
        (HERE / "task2vec.png").write_bytes((OUT / "task2vec" / "task2vec.png").read_bytes())
    for task, name in TASKS.items():
        path = OUT / "transfer" / task / "transfer.json"
        if path.is_file():
            report = json.loads(path.read_text())
            for method, row in report["methods"].items():
                records.append({"task": f"{name} (negative-transfer check)", "method": method, "metric": "target_acc",
                                "mean": round(row["mean"], 2), "std": round(row["std"], 2), "n_seeds": len(row["values"]),
                                "values": row["values"], "negative_transfer": row.get("negative_transfer"),
                                "gain_vs_source_only": row.get("gain_vs_source_only"),
                                "gain_vs_target_scratch": row.get("gain_vs_target_scratch"),
                                "device": "Intel Xeon CPU, 1 thread", **base, "date": measured(path)})
    for pair in ("source_only_vs_dann", "finetuned_vs_pretrained"):
        path = OUT / "cka" / pair / "cka.json"
        if path.is_file():
            report = json.loads(path.read_text())
            for i, layer in enumerate(report["layers_a"]):
                records.append({"task": f"linear CKA, {pair.replace('_', ' ')}", "method": layer, "metric": "linear_cka",
                                "mean": round(report["cka"][i][i], 4), "std": 0.0, "n_seeds": 1,
                                "runs": [report["run_a"], report["run_b"]], "n_samples": report["n_samples"],
                                "device": "Intel Xeon CPU, 1 thread", **base, "date": measured(path)})
            (HERE / f"cka_{pair}.png").write_bytes((OUT / "cka" / pair / "cka.png").read_bytes())
    for name in ("landscape_finetune_seed0.png", "landscape_scratch_seed0.png"):
        if (OUT / "landscape" / "analysis" / name).is_file():
            (HERE / name).write_bytes((OUT / "landscape" / "analysis" / name).read_bytes())
    for name in ("features/source_only/tsne_seed0.png", "features/dann/tsne_seed0.png"):
        if (OUT / name).is_file():
            (HERE / f"tsne_{name.split('/')[1]}.png").write_bytes((OUT / name).read_bytes())
    for task in TASKS:
        path = OUT / "divergence" / task / "dann" / "divergence.png"
        if path.is_file():
            plot_all_divergence(task)
    records += sources_records(base)
    # records written by benchmarks/analysis/ntk_information.py (its own part) are kept as they are
    previous = HERE / "results.json"
    if previous.is_file():
        records += [r for r in json.loads(previous.read_text()) if r.get("part") == "ntk_information"]
    header = "| task | method | metric | mean ± std | seeds/runs |\n|---|---|---|---|---|"
    write_results(HERE, records, header, lambda r: [r["task"], r["method"], r["metric"],
                                                    f"{r['mean']:.4g} ± {r['std']:.2g}", r["n_seeds"]])
    print((HERE / "results.md").read_text())


def sources_records(base: dict) -> list[dict]:
    """The source-selection study: fine-tuned accuracy and gain per (source, target), score rankings per
    target, and Task2Vec distance vs gain."""
    src, records = OUT / "sources", []
    device = "Intel Xeon CPU, 1 thread per process"
    for target in SOURCE_TARGETS:
        grid = src / f"grid_{target}" / "results.json"
        if grid.is_file():
            for r in json.loads(grid.read_text()):
                records.append({"task": f"source selection -> {target}, k=10 fine-tuning", "method": r["method"],
                                "metric": "target_acc", "mean": round(r["mean"], 2), "std": round(r["std"], 2),
                                "n_seeds": r["n_seeds"], "values": r["values"],
                                "gain_vs_scratch": r.get("gain_vs_scratch"), "negative_transfer": r.get("negative_transfer"),
                                "device": r["device"], **base, "date": measured(grid)})
            (HERE / f"sources_{target}.png").write_bytes((src / f"grid_{target}" / "accuracy_vs_labels.png").read_bytes())
        scores = src / f"scores_{target}" / "scores.json"
        if scores.is_file():
            report = json.loads(scores.read_text())
            for key, corr in report["correlation"].items():
                records.append({"task": f"source selection -> {target}, k=10 fine-tuning", "method": key,
                                "metric": "weighted_kendall_tau", "mean": round(corr["weighted_kendall_tau"], 4),
                                "std": 0.0, "n_seeds": 1, "kendall_tau": corr["kendall_tau"],
                                "n_candidates": report["n_candidates"],
                                "candidates": [{k: c[k] for k in ("source", "finetuned_acc", key)} for c in report["candidates"]],
                                "device": device, **base, "date": measured(scores)})
    task2vec = src / "task2vec" / "task2vec.json"
    if task2vec.is_file():
        result = json.loads(task2vec.read_text())["distance_vs_gain"]
        for metric in ("spearman", "kendall_tau"):
            records.append({"task": "source selection: Task2Vec distance vs fine-tuning gain over scratch (k=10)",
                            "method": "task2vec (probe: SimCLR LeNet, MNIST)", "metric": metric,
                            "mean": round(result[metric], 4), "std": 0.0, "n_seeds": 1, "n_pairs": result["n_pairs"],
                            "spearman_per_target": result["spearman_per_target"], "pairs": result["pairs"],
                            "device": device, **base, "date": measured(task2vec)})
        (HERE / "sources_task2vec_vs_gain.png").write_bytes((src / "task2vec" / "task2vec_vs_gain.png").read_bytes())
    return records


if __name__ == "__main__":
    main()
