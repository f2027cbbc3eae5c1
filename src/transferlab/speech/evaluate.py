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
