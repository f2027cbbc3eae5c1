"""In a 2-process gloo run, one rank failing ends the whole job promptly with that rank's message."""

import pytest

from conftest import torchrun


@pytest.mark.slow
def test_one_failing_rank_ends_the_job_promptly_with_its_message(tmp_path):
    import time

    started = time.perf_counter()
    done = torchrun(tmp_path, "dann", FAIL_RANK="1", FAIL_STEP="3")
    elapsed = time.perf_counter() - started
    assert done.returncode != 0
    assert "injected failure on rank 1 at step 3" in done.stdout + done.stderr
    assert elapsed < 120, f"the job took {elapsed:.0f}s to end after one rank failed"
    assert not (tmp_path / "run" / "model.safetensors").exists()
