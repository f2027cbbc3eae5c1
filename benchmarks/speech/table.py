"""The one results.md table of benchmarks/speech (whisper_gap.py, run.py and speaker_type.py all write it)."""

from __future__ import annotations

HEADER = ("| task | method | metric | mean ± std | uncertainty | change vs none [95 % CI] "
          "| utterances / speakers | trainable params | loops re-decoded | without loop guard |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def row(r: dict) -> list:
    rel = r.get("relative_change_vs_none")
    ci = r.get("relative_change_ci95")
    change = "—" if rel is None else f"{rel:+.1f} % [{ci[0]:+.1f}, {ci[1]:+.1f}]"
    if rel is not None and not r.get("audio_changed", True):
        change = "audio unchanged"
    if "n_utterances" in r:
        sizes = f"{r['n_utterances']} / {r['n_speakers']}"
    elif "utterances" in r:
        sizes = f"{r['utterances']} / {r.get('speakers', '—')}"
    else:
        sizes = "—"
    plain = r.get(f"{r['metric']}_without_loop_guard")
    return [r["task"], r["method"], r["metric"].upper(), f"{r['mean']:.1f} ± {r['std']:.1f}",
            r.get("uncertainty", f"std over {r['n_seeds']} seeds"), change, sizes, r.get("trainable_params", "—"),
            r.get("loops_redecoded", "—"), "—" if plain is None else f"{plain:.1f}"]
