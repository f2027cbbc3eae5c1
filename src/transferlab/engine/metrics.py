"""Metrics as JSON lines: one record per log/eval event, ``{"step": ..., "kind": "train"|"eval", ...}``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text


class MetricsLog:
    def __init__(self, path: Path | None, resume_step: int | None = None) -> None:
        self.path = path
        if path is None:
            return
        if resume_step is not None and path.exists():
            # Drop records written after the checkpoint we resume from, so the log equals an uninterrupted run's.
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
