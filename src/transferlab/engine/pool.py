"""Several independent runs at once in worker processes (the grid of the transfer protocol, the
layer-transferability experiment): spawned workers, each limited to its share of CPU threads, that
exit when the launching process dies (so killing a grid never leaves orphans training on)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def worker_threads(jobs: int) -> int:
    """CPU threads per worker: the machine's cores shared by ``jobs`` workers, never more than this
    process may use (``OMP_NUM_THREADS`` / ``torch.set_num_threads``): oversubscribed cores make small
    models many times slower."""
    import torch

    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // max(jobs, 1)))


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def process_pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max(jobs, 1), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def run_in_pool(tasks, jobs: int, on_result) -> None:
    """Run ``tasks`` — ``(key, function, args)`` with a picklable top-level function — ``jobs`` at a
    time, calling ``on_result(key, result)`` in submission order. The first failure stops the workers
    and cancels every task not finished (no hours of work after a crash), then is raised."""
    pool = process_pool(jobs)
    futures = [(key, pool.submit(function, *args)) for key, function, args in tasks]
    try:
        for key, future in futures:
            on_result(key, future.result())
    except BaseException:
        workers = list(getattr(pool, "_processes", {}).values())  # tasks already handed to a worker
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        raise
    pool.shutdown(wait=True)
