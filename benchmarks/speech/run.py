"""Children's speech, part (b) of GitHub issue #17: the training path on real speech, through the project's commands.

    TRANSFERLAB_DATA=../shared/data python benchmarks/speech/run.py --seeds 0 1 2 --parallel 2 --threads 1
    (rerunning skips every run whose result.json exists, and re-aggregates)

1. ``transferlab train configs/speech/fsdd_ctc.yaml`` — a small wav2vec2-style CTC model (0.6 M parameters) from scratch
   on four FSDD speakers, with and without adult->child augmentation (``fsdd_ctc_child_aug.yaml``), scored on the two
   held-out speakers (``held_out``), on the training speakers' unseen utterances (``seen_speakers``) and on the held-out
   speakers shifted toward child pitch and formants (``held_out@child``: +4 semitones, VTLP 1.15).
2. ``transferlab train configs/speech/fsdd_adapt_speaker.yaml`` — each held-out speaker's 50 fsdd/test utterances adapt
   the step-1 model (without augmentation) of the same seed: residual adapters only (everything else frozen) vs full
   fine-tuning; scored on that speaker's 450 fsdd/train utterances, next to the unadapted model on the same utterances.

WER of a one-word utterance is its word error (0 or 100 %); CER is also reported. Every run is scored once, at its last
step; nothing is selected on test utterances.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import measured, run_parallel, summarize, this_command, write_results  # noqa: E402
import table  # noqa: E402  (benchmarks/speech/table.py)

TRAIN = {"ctc_scratch": "configs/speech/fsdd_ctc.yaml", "ctc_scratch_child_aug": "configs/speech/fsdd_ctc_child_aug.yaml"}
SETS = {"target_test": "held-out speakers", "seen_speakers": "seen speakers, unseen utterances",
        "held_out@child": "held-out speakers shifted to child range"}
SPEAKERS = ["theo", "yweweler"]
ADAPT = {"adapter": [], "finetune": ["--set", "model.adapter=null"]}
OWN_TASKS = ("fsdd",)  # records of this script: their task starts with this


def train_command(config: str, out: Path, seed: int, extra: list[str], data_root: str | None) -> list[str]:
    cmd = ["transferlab", "train", config, "--out", str(out), "--set", f"seed={seed}", "--no-progress", *extra]
    return cmd + (["--data-root", data_root] if data_root else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, help="override train.iterations of the step-1 runs")
    parser.add_argument("--adapt-iterations", type=int, help="override train.iterations of the step-2 runs")
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench_speech"))
    parser.add_argument("--data-root", help="default: $TRANSFERLAB_DATA")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not args.aggregate_only:
        first = []
        for seed in args.seeds:
            for name, config in TRAIN.items():
                out = runs / "fsdd" / name / f"seed{seed}"
                if not (out / "result.json").is_file():
                    extra = ["--set", f"train.iterations={args.iterations}"] if args.iterations else []
                    extra += ["--resume"] if (out / "checkpoints").is_dir() else []
                    first.append(train_command(config, out, seed, extra, args.data_root))
        run_parallel(first, args.parallel, args.threads, runs / "logs")
        second = []
        for seed in args.seeds:
            base = runs / "fsdd" / "ctc_scratch" / f"seed{seed}"
            if not (base / "result.json").is_file():
                continue
            for speaker in SPEAKERS:
                for mode, extra in ADAPT.items():
                    out = runs / "fsdd_adapt" / speaker / mode / f"seed{seed}"
                    if (out / "result.json").is_file():
                        continue
                    extra = extra + ["--set", f"model.init={base}", "--set", f"task.vocab={base}",
                                     "--set", f"data.source.where.speaker=[{speaker}]",
                                     "--set", f"data.test.where.speaker=[{speaker}]"]
                    extra += ["--set", f"train.iterations={args.adapt_iterations}"] if args.adapt_iterations else []
                    second.append(train_command("configs/speech/fsdd_adapt_speaker.yaml", out, seed, extra,
                                                args.data_root))
        run_parallel(second, args.parallel, args.threads, runs / "logs_adapt")
        (runs / "command.txt").write_text(this_command() + "\n")
    aggregate(runs)


def _results(paths: list[Path]) -> list[dict]:
    return [json.loads(p.read_text()) for p in paths]


def aggregate(runs: Path) -> None:
    command_file = runs / "command.txt"
    command = command_file.read_text().strip() if command_file.is_file() else this_command()
    records = []

    def record(task, method, metric, values, device, date, **extra):
        mean, std = summarize(values)
        records.append({"task": task, "method": method, "metric": metric, "mean": round(mean, 2),
                        "std": round(std, 2), "n_seeds": len(values), "device": device, "command": command,
                        "date": date, **extra})

    for name in TRAIN:
        paths = sorted((runs / "fsdd" / name).glob("seed*/result.json"))
        if not paths:
            continue
        results = _results(paths)
        date, device = max(measured(p) for p in paths), results[0]["device"]
        params = results[0]["parameters"]["trainable"]
        for key, label in SETS.items():
            for metric in ("wer", "cer"):
                record(f"fsdd ({label})", name, metric, [r[f"{key}/{metric}"] for r in results], device, date,
                       trainable_params=params, iterations=results[0]["step"],
                       utterances=results[0][f"{key}/utterances"])
    base_paths = sorted((runs / "fsdd" / "ctc_scratch").glob("seed*/result.json"))
    base = {p.parent.name: json.loads(p.read_text()) for p in base_paths}
    for mode in ("none", *ADAPT):
        per_seed: dict[str, list[float]] = {}
        per_seed_cer: dict[str, list[float]] = {}
        params, dates, device = None, [], None
        for speaker in SPEAKERS:
            for seed, result in base.items():
                if mode == "none":
                    wer, cer = result.get(f"target_test/wer_{speaker}"), result.get(f"target_test/cer_{speaker}")
                    dates.append(measured(runs / "fsdd" / "ctc_scratch" / seed / "result.json"))
                    device = result["device"]
                else:
                    path = runs / "fsdd_adapt" / speaker / mode / seed / "result.json"
                    if not path.is_file():
                        continue
                    adapted = json.loads(path.read_text())
                    wer, cer = adapted["target_test/wer"], adapted["target_test/cer"]
                    params, device = adapted["parameters"]["trainable"], adapted["device"]
                    dates.append(measured(path))
                if wer is not None:
                    per_seed.setdefault(seed, []).append(wer)
                    per_seed_cer.setdefault(seed, []).append(cer)
        complete = {s: v for s, v in per_seed.items() if len(v) == len(SPEAKERS)}
        if not complete:
            continue
        for metric, by_seed in (("wer", per_seed), ("cer", per_seed_cer)):
            values = [sum(by_seed[s]) / len(SPEAKERS) for s in sorted(complete)]  # mean over the two speakers, per seed
            record("fsdd adapt to a held-out speaker (50 utterances; mean of 2 speakers)", f"adapt:{mode}", metric,
                   values, device, max(dates), trainable_params=params if params is not None else 0,
                   note="none: the unadapted ctc_scratch model on the same utterances")
    write_results(HERE, merge(HERE / "results.json", records), table.HEADER, table.row)


def merge(path: Path, records: list[dict]) -> list[dict]:
    """This script's records replace its own earlier ones; records of the other speech benchmarks stay."""
    kept = [r for r in (json.loads(path.read_text()) if path.is_file() else [])
            if not r["task"].startswith(OWN_TASKS)]
    return kept + records


if __name__ == "__main__":
    main()
