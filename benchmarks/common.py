"""Shared benchmark plumbing: run CLI commands in parallel processes, write results.json + results.md.

Every benchmark writes ``benchmarks/<area>/results.json`` — a list of records with at least task,
method, metric, mean, std, n_seeds, device, command, date — and a Markdown table made from it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REQUIRED = ("task", "method", "metric", "mean", "std", "n_seeds", "device", "command", "date")


def run_parallel(commands: list[list[str]], parallel: int, threads: int, log_dir: Path,
                 deadline: float | None = None) -> list[int | None]:
    """Run CLI commands, ``parallel`` at a time, each limited to ``threads`` CPU threads (0: as inherited);
    logs to log_dir. At ``deadline`` (a ``time.monotonic()`` value) no further command starts and running
    ones get SIGTERM, on which training writes a checkpoint and stops (``--resume`` continues it). Returns
    each command's exit code, ``None`` for commands never started."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))

    def one(item):
        index, cmd = item
        if deadline is not None and time.monotonic() >= deadline:
            return None
        with open(log_dir / f"{index:03d}.log", "w") as log:
            log.write(shlex.join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                code = proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    code = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
        config = next((Path(a).stem for a in cmd if a.endswith(".yaml")), shlex.join(cmd)[:60])
        seed = next((a for a in cmd if a.startswith("seed=")), "")
        print(f"[{'ok' if code == 0 else f'exit {code}'}] {config} {seed}", flush=True)
        return code

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, enumerate(commands)))


def timed_windows(advance, warmup: int, steps: int, windows: int, sync, images_per_step: int) -> dict:
    """The speed benchmark's timing: ``advance(n)`` trains n steps. After ``warmup`` steps (compilation
    happens there), ``steps`` timed steps are split into ``windows`` windows, each timed between
    ``sync()`` calls (a device synchronisation on CUDA). Returns warm-up seconds and, per window,
    ms/step, images/s and its step count."""
    started = time.perf_counter()
    if warmup > 0:
        advance(warmup)
    sync()
    warmup_s = time.perf_counter() - started
    windows = max(1, min(windows, steps))
    sizes = [round(steps * (i + 1) / windows) - round(steps * i / windows) for i in range(windows)]
    times = []
    for n in sizes:
        sync()
        t0 = time.perf_counter()
        advance(n)
        sync()
        times.append(time.perf_counter() - t0)
    return {"warmup_s": warmup_s, "step_ms": [1000 * t / n for t, n in zip(times, sizes)],
            "imgs_per_s": [images_per_step * n / t for t, n in zip(times, sizes)], "window_steps": sizes}


def summarize(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def relative_command(command: str) -> str:
    """A recorded command with this checkout's absolute path taken out (paths relative to the repository root), so
    no record names one machine's folders."""
    root = Path(__file__).resolve().parents[1]
    command = command.replace(f"{root}/", "").replace(str(root), ".")
    return command.replace(f"{root.parent}/", "../")  # e.g. the data root next to the checkout: ../shared/data


def write_results(area: Path, records: list[dict], table_header: str, row) -> None:
    """Write results.json (validated; commands made relative to the repository) and results.md (``row(record) ->
    list of cells``)."""
    for record in records:
        missing = [k for k in REQUIRED if k not in record]
        assert not missing, f"record lacks {missing}: {record}"
        record["command"] = relative_command(record["command"])
    (area / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    lines = [table_header]
    lines += ["| " + " | ".join(str(c) for c in row(r)) + " |" for r in records]
    (area / "results.md").write_text("\n".join(lines) + "\n")


def today() -> str:
    return dt.date.today().isoformat()


def measured(path: Path) -> str:
    """The day a result file was written (records keep the date of their measurement, not of aggregation)."""
    return dt.date.fromtimestamp(Path(path).stat().st_mtime).isoformat()


def this_command() -> str:
    return shlex.join([Path(sys.executable).name] + sys.argv)
