"""Worker processes of `transferlab grid` / `analyze layers` exit when the launcher is killed."""

import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = '''
import os, sys, time
from transferlab.engine.pool import process_pool

def work(path):
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    pool = process_pool(1)
    pool.submit(work, sys.argv[1])
    time.sleep(120)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead for our purpose
        return handle.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_workers_exit_when_the_launcher_is_killed(tmp_path):
    script, marker = tmp_path / "launch.py", tmp_path / "worker.pid"
    script.write_text(SCRIPT)
    launcher = subprocess.Popen([sys.executable, str(script), str(marker)])
    try:
        deadline = time.time() + 60
        while not marker.is_file() or not marker.read_text():
            assert time.time() < deadline, "the worker never started"
            time.sleep(0.2)
        worker = int(marker.read_text())
        assert _alive(worker)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.time() + 10
        while _alive(worker):
            assert time.time() < deadline, "the worker outlived its launcher"
            time.sleep(0.2)
    finally:
        launcher.kill()


def test_the_first_failure_cancels_the_runs_not_started():
    import operator

    from transferlab.engine.pool import run_in_pool

    results = []
    tasks = [("fails", operator.truediv, (1, 0))] + [(f"slow{i}", time.sleep, (10,)) for i in range(3)]
    started = time.time()
    with pytest.raises(ZeroDivisionError):
        run_in_pool(tasks, 1, lambda key, value: results.append(key))
    assert results == []
    assert time.time() - started < 25, "the queued runs were not cancelled (3 x 10 s)"
