"""Children's speech, part (c) of GitHub issue #17: speaker type (adult vs child) on speechocean762 with
speaker-disjoint folds (scikit-learn's StratifiedGroupKFold: 5 folds, stratified by type, grouped by speaker; the fold
assignment is drawn by the seed), 3 seeds.

    TRANSFERLAB_DATA=../shared/data python benchmarks/speech/speaker_type.py --seeds 0 1 2 --parallel 2 --threads 1

Rows:
  wav2vec2_scratch   ``transferlab train configs/speech/speechocean_speaker_type.yaml`` per fold (the engine: a small
                     wav2vec2-style encoder from scratch, mean-pooled, linear head; ~130 training utterances)
  f0_logistic        a baseline without a network: each utterance's median f0 (``data.audio_augment.estimate_f0``),
                     log-scaled, and scikit-learn's logistic regression fitted on the training folds
  majority           the training folds' majority class (what accuracy means here: 63 % of utterances are children)

Accuracy and macro-F1 (%) pooled over the 5 held-out folds of a seed (every utterance scored once), mean ± std over
seeds. No fold's test speakers are seen in training; nothing is tuned on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import measured, run_parallel, summarize, this_command, today, write_results  # noqa: E402
import table  # noqa: E402  (benchmarks/speech/table.py)

CONFIG = "configs/speech/speechocean_speaker_type.yaml"
TASK = "speechocean762 speaker type (adult vs child), speaker-disjoint 5-fold"


def folds(speakers: np.ndarray, y: np.ndarray, seed: int) -> list[np.ndarray]:
    """Test indices of each fold: the library's own split (``data.splits``, what ``data.<set>.fold`` uses)."""
    from transferlab.data.splits import kfold_test_indices

    return kfold_test_indices(y, np.unique(speakers, return_inverse=True)[1], 5, seed)


def metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"acc": 100.0 * accuracy_score(y, predicted), "macro_f1": 100.0 * f1_score(y, predicted, average="macro")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench_speech" / "speaker_type"))
    parser.add_argument("--data-root", default=os.environ.get("TRANSFERLAB_DATA", "../shared/data"))
    parser.add_argument("--skip-training", action="store_true", help="only the baselines and the aggregation")
    args = parser.parse_args()
    runs = Path(args.runs)
    with np.load(Path(args.data_root) / "speechocean762" / "test.npz") as d:
        speakers, y = d["speaker"].astype(str), d["is_child"].astype(np.int64)
        audio, offsets, lengths, rate = d["audio"], d["offsets"], d["lengths"], int(d["sample_rate"])
    split = {seed: folds(speakers, y, seed) for seed in args.seeds}
    if not args.skip_training:
        commands = []
        for seed in args.seeds:
            for k, test in enumerate(split[seed]):
                out = runs / f"seed{seed}" / f"fold{k}"
                if (out / "result.json").is_file():
                    continue
                held = ", ".join(f"'{s}'" for s in sorted(set(speakers[test].tolist())))
                commands.append(["transferlab", "train", CONFIG, "--out", str(out), "--no-progress",
                                 "--data-root", args.data_root, "--set", f"seed={seed}",
                                 "--set", f"data.source.exclude.speaker=[{held}]",
                                 "--set", f"data.test.where.speaker=[{held}]"])
        run_parallel(commands, args.parallel, args.threads, runs / "logs")
        (runs / "command.txt").parent.mkdir(parents=True, exist_ok=True)
        (runs / "command.txt").write_text(this_command() + "\n")

    # --- baselines on the same folds ---
    import torch
    from sklearn.linear_model import LogisticRegression

    from transferlab.data.audio_augment import estimate_f0

    f0 = np.array([estimate_f0(torch.from_numpy(audio[o:o + n].astype(np.float32) / 32768.0), rate)
                   for o, n in zip(offsets, lengths)])
    feature = np.log(np.nan_to_num(f0, nan=np.nanmedian(f0)))[:, None]
    command_file = runs / "command.txt"
    command = command_file.read_text().strip() if command_file.is_file() else this_command()
    rows: dict[str, list[dict[str, float]]] = {"wav2vec2_scratch": [], "f0_logistic": [], "majority": []}
    dates, device, params = [], "CPU", None
    for seed in args.seeds:
        pred = {name: np.zeros_like(y) for name in rows}
        complete = True
        for k, test in enumerate(split[seed]):
            train = np.setdiff1d(np.arange(len(y)), test)
            pred["f0_logistic"][test] = LogisticRegression().fit(feature[train], y[train]).predict(feature[test])
            pred["majority"][test] = np.bincount(y[train]).argmax()
            result_path = runs / f"seed{seed}" / f"fold{k}" / "predictions.json"
            run = runs / f"seed{seed}" / f"fold{k}"
            if not (run / "result.json").is_file():
                complete = False
                continue
            if not result_path.is_file():  # the run's predictions on its held-out speakers, in the fold's row order
                subprocess.run(["transferlab", "predict", str(run), "speechocean762:test", "--out",
                                str(run / "all.jsonl"), "--data-root", args.data_root], check=True,
                               stdout=subprocess.DEVNULL)
                probs = [json.loads(line) for line in (run / "all.jsonl").read_text().splitlines()]
                predicted_all = np.array([1 if p["predicted"] in ("child", 1) else 0 for p in probs])
                result_path.write_text(json.dumps(predicted_all.tolist()))
            predicted_all = np.array(json.loads(result_path.read_text()))
            pred["wav2vec2_scratch"][test] = predicted_all[test]
            result = json.loads((run / "result.json").read_text())
            dates.append(measured(run / "result.json"))
            device, params = result["device"], result["parameters"]["trainable"]
        for name in rows:
            if name != "wav2vec2_scratch" or complete:
                rows[name].append(metrics(y, pred[name]))
    records = []
    for name, per_seed in rows.items():
        if not per_seed:
            continue
        for metric in ("acc", "macro_f1"):
            mean, std = summarize([m[metric] for m in per_seed])
            records.append({"task": TASK, "method": name, "metric": metric, "mean": round(mean, 2),
                            "std": round(std, 2), "n_seeds": len(per_seed),
                            "device": device if name == "wav2vec2_scratch" else "CPU (scikit-learn)",
                            "command": command, "date": max(dates) if dates and name == "wav2vec2_scratch" else today(),
                            "trainable_params": params if name == "wav2vec2_scratch" else (2 if name == "f0_logistic" else 0),
                            "utterances": int(len(y)), "speakers": int(len(set(speakers.tolist())))})
    path = HERE / "results.json"
    kept = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r["task"] != TASK]
    write_results(HERE, kept + records, table.HEADER, table.row)


if __name__ == "__main__":
    main()
