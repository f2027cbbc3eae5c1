"""Speech recognition scored per utterance, per speaker and per group: the transcripts of a trained CTC run (or of any
recogniser) and their WER/CER broken down by any per-utterance column (``speaker``, ``group``, ``age``).

The engine reports corpus-level WER/CER per evaluation set and per ``task.group`` while training; this module is what
``transferlab speech wer`` prints for a finished run, with the per-utterance transcripts kept for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..engine.metrics import edit_counts, error_rates
from ..experiment import transcribe_set  # noqa: F401  (the transcripts this module scores)


def error_table(references: Sequence[str], hypotheses: Sequence[str],
                columns: dict[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    """Corpus-level WER/CER (%) of all utterances and of each value of each column (``{"speaker": [...]}``): edits
    summed over the utterances of a value, divided by its reference words/characters."""
    def rates(rows: list[int]) -> dict[str, Any]:
        counts = edit_counts([references[i] for i in rows], [hypotheses[i] for i in rows])
        return {**{k: round(v, 3) for k, v in error_rates(counts).items()}, "utterances": len(rows),
                "words": int(counts[1])}

    table: dict[str, Any] = {"all": rates(list(range(len(references)))), "by": {}}
    for name, values in (columns or {}).items():
        if len(values) != len(references):
            raise ValueError(f"column {name} has {len(values)} values for {len(references)} utterances")
        index: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            index.setdefault(str(value), []).append(i)
        table["by"][name] = {value: rates(rows) for value, rows in sorted(index.items())}
    return table


def format_table(table: dict[str, Any]) -> str:
    """The table as aligned text lines: one per value of each column, then the whole set."""
    lines = [f"{'':24} {'WER %':>7} {'CER %':>7} {'utts':>6}"]
    for name, rows in table["by"].items():
        for value, r in rows.items():
            lines.append(f"{(name + '=' + value)[:24]:24} {r['wer']:7.2f} {r['cer']:7.2f} {r['utterances']:6d}")
    r = table["all"]
    lines.append(f"{'all':24} {r['wer']:7.2f} {r['cer']:7.2f} {r['utterances']:6d}")
    return "\n".join(lines)


def normalize_waves(waves: Sequence[Any], sample_rate: int, target_f0: float, *, speakers: Sequence[str] | None = None,
                    select: Sequence[bool] | None = None, formant_exponent: float = 1.0,
                    ) -> tuple[list[Any], list[dict[str, Any]]]:
    """Test-time normalisation: each selected utterance warped toward ``target_f0`` (``data.audio_augment.
    normalize_toward``), by its own f0, or, with ``speakers``, by its speaker's median f0 over their selected
    utterances. Returns the waves (numpy float32) and what was done to each (f0, factor; ``None`` when unchanged)."""
    import numpy as np
    import torch

    from ..data.audio_augment import estimate_f0, normalize_toward

    select = [True] * len(waves) if select is None else list(select)
    f0 = [estimate_f0(torch.as_tensor(w, dtype=torch.float32), sample_rate) if s else float("nan")
          for w, s in zip(waves, select)]
    if speakers is not None:
        by_speaker: dict[str, list[float]] = {}
        for value, speaker, chosen in zip(f0, speakers, select):
            if chosen and value == value:  # not NaN
                by_speaker.setdefault(str(speaker), []).append(value)
        f0 = [float(np.median(by_speaker[str(s)])) if chosen and str(s) in by_speaker else float("nan")
              for s, chosen in zip(speakers, select)]
    out, info = [], []
    for wave, value, chosen in zip(waves, f0, select):
        if not chosen or value != value:
            out.append(np.asarray(wave, dtype=np.float32))
            info.append(None)
            continue
        warped, done = normalize_toward(torch.as_tensor(wave, dtype=torch.float32), sample_rate, target_f0, f0=value,
                                        formant_exponent=formant_exponent)
        out.append(warped.numpy().astype(np.float32))
        info.append({k: float(v) for k, v in done.items() if isinstance(v, (int, float))})
    return out, info
