"""The benchmark tooling: parallel launcher with a deadline, digits aggregation, whole-card throughput."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(path: Path, name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_parallel_stops_at_the_deadline(tmp_path):
    common = load(BENCH / "common.py", "bench_common")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    quick = [sys.executable, "-c", "pass"]
    started = time.monotonic()
    codes = common.run_parallel([quick, sleeper, sleeper], 1, 1, tmp_path / "logs", deadline=time.monotonic() + 3)
    assert time.monotonic() - started < 30, "the running command must be stopped at the deadline"
    assert codes[0] == 0
    assert codes[1] not in (0, None)  # terminated (SIGTERM)
    assert codes[2] is None  # never started
    assert (tmp_path / "logs" / "000.log").read_text().startswith(sys.executable)


def fake_run(folder: Path, seed: int, acc: float | None, iterations: int, steps: int, device: str = "NVIDIA H100",
             cuda_graph: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed, "train": {"iterations": iterations, "cuda_graph": cuda_graph},
                                                    "data": {"batch_size": 128}, "model": {"backbone": "lenet"}}))
    if acc is None:  # stopped: only its metrics log says how far it got
        (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "kind": "train"}) + "\n"
                                                      for s in range(100, steps + 1, 100)))
    else:
        (folder / "result.json").write_text(json.dumps({"step": steps, "target_test/acc": acc, "train_seconds": 10.0,
                                                        "device": device}))


def test_digits_aggregate_over_gpu_and_cpu_folders(tmp_path):
    digits = load(BENCH / "digits" / "run.py", "bench_digits")
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    for seed, acc in enumerate([92.0, 93.0, 94.0]):
        fake_run(gpu / "mnist_usps" / "adda" / f"seed{seed}", seed, acc, 10_000, 10_000)
        fake_run(cpu / "mnist_usps" / "adda" / f"seed{seed}", seed, acc - 5, 2000, 2000, device="cpu")
    fake_run(gpu / "mnist_usps" / "mcd" / "seed0", 0, None, 10_000, 8400)  # stopped: not a result
    graph = tmp_path / "graph"
    for seed, acc in enumerate([91.0, 93.0, 95.0]):
        fake_run(graph / "mnist_usps" / "adda" / f"seed{seed}", seed, acc, 10_000, 10_000, cuda_graph=True)
    for d in (gpu, cpu, graph):
        (d / "mnist_usps" / "command.txt").write_text(f"python benchmarks/digits/run.py --runs {d}\n")
    digits.aggregate([gpu, cpu, graph], tmp_path / "out")
    records = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["method"], r["iterations"], r["engine"]) for r in records] == [
        ("adda", 10_000, "eager"), ("adda", 10_000, "CUDA graph"), ("adda", 2000, "eager")]
    assert records[1]["mean"] == 93.0 and records[1]["std"] == 2.0
    assert "| CUDA graph |" in (tmp_path / "out" / "results.md").read_text()
    full = records[0]
    assert full["mean"] == 93.0 and full["std"] == 1.0 and full["n_seeds"] == 3
    assert full["protocol"] == "full (10,000 iterations)" and records[2]["protocol"].startswith("shortened")
    assert {p["source"] for p in full["published"]} == {"TLlib", "ADDA paper"}
    assert full["command"] == f"python benchmarks/digits/run.py --runs {gpu}"


def test_digits_aggregate_of_a_subset_keeps_the_rest_of_the_table(tmp_path):
    digits = load(BENCH / "digits" / "run.py", "bench_digits")
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    for seed in range(3):
        fake_run(gpu / "mnist_usps" / "adda" / f"seed{seed}", seed, 90.0 + seed, 10_000, 10_000)
        fake_run(cpu / "mnist_usps" / "dann" / f"seed{seed}", seed, 80.0 + seed, 2000, 2000, device="cpu")
    for d in (gpu, cpu):
        (d / "mnist_usps" / "command.txt").write_text(f"python benchmarks/digits/run.py --runs {d}\n")
    out = tmp_path / "out"
    digits.aggregate([gpu], out)
    digits.aggregate([cpu], out)  # a CPU run of another method: the GPU record stays
    records = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["device"], r["mean"]) for r in records] == [("adda", "NVIDIA H100", 91.0), ("dann", "cpu", 81.0)]
    for seed in range(3):  # the same runs measured again replace their record, not duplicate it
        (gpu / "mnist_usps" / "adda" / f"seed{seed}" / "result.json").write_text(json.dumps(
            {"step": 10_000, "target_test/acc": 95.0, "train_seconds": 10.0, "device": "NVIDIA H100"}))
    digits.aggregate([gpu], out)
    records = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["mean"]) for r in records] == [("adda", 95.0), ("dann", 81.0)]
    # The same method run with a --set override is another record, and the table says which setting.
    tuned = tmp_path / "tuned"
    for seed in range(3):
        fake_run(tuned / "mnist_usps" / "dann" / f"seed{seed}", seed, 70.0 + seed, 2000, 2000, device="cpu")
    (tuned / "mnist_usps" / "command.txt").write_text("python benchmarks/digits/run.py --set method.grl_gamma=1\n")
    (tuned / "mnist_usps" / "overrides.json").write_text(json.dumps(["method.grl_gamma=1"]))
    digits.aggregate([tuned], out)
    records = json.loads((out / "results.json").read_text())
    assert [(r["method"], r.get("overrides"), r["mean"]) for r in records] == [
        ("adda", None, 95.0), ("dann", None, 81.0), ("dann", ["method.grl_gamma=1"], 71.0)]
    assert "| dann `method.grl_gamma=1` | 71.0 ± 1.0 |" in (out / "results.md").read_text()
    digits.aggregate([cpu], out, keep_others=False)
    assert [r["method"] for r in json.loads((out / "results.json").read_text())] == ["dann"]


def test_sweep_throughput_counts_finished_and_stopped_runs(tmp_path):
    speed = load(BENCH / "speed" / "run.py", "bench_speed")
    fake_run(tmp_path / "mnist_usps" / "dann" / "seed0", 0, 90.0, 10_000, 10_000)
    fake_run(tmp_path / "mnist_usps" / "mcd" / "seed0", 0, None, 10_000, 8400)
    record = speed.sweep_record(tmp_path, 100.0, "test", parallel=2)
    assert record["images"] == 2 * 128 * (10_000 + 8400)
    assert record["mean"] == pytest.approx(2 * 128 * 18_400 / 100.0)
    assert record["runs"] == 2 and record["runs_finished"] == 1 and record["parallel"] == 2
    with pytest.raises(SystemExit, match="sweep.json"):
        speed.sweep_record(tmp_path, None, "")


def test_timed_windows_splits_the_timed_steps():
    common = load(BENCH / "common.py", "bench_common")
    calls, syncs = [], []
    timing = common.timed_windows(calls.append, 3, 10, 4, lambda: syncs.append(1), images_per_step=256)
    assert calls == [3, 2, 3, 3, 2] and timing["window_steps"] == [2, 3, 3, 2]  # warm-up, then 4 windows of 10
    assert len(syncs) == 1 + 2 * 4 and len(timing["step_ms"]) == len(timing["imgs_per_s"]) == 4
    for ms, rate, n in zip(timing["step_ms"], timing["imgs_per_s"], timing["window_steps"]):
        assert rate == pytest.approx(256 * 1000 / ms)  # both from the same window time


def test_speed_cuda_graph_case_runs_the_engine_graph_without_compile():
    speed = load(BENCH / "speed" / "run.py", "bench_speed")
    spec = {"case": "digits_dann", "precision": "fp32", "compile": speed.GRAPH, "device": "cpu", "batch_size": 128}
    config = speed._config(spec)
    assert config.train.cuda_graph and config.train.compile == "none"
    eager = speed._config({**spec, "compile": "none"})
    assert not eager.train.cuda_graph and eager.train.compile == "none"


def test_speed_overrides_reach_the_config_and_keep_their_own_records():
    speed = load(BENCH / "speed" / "run.py", "bench_speed")
    spec = {"case": "digits_dann", "precision": "fp32", "compile": "none", "device": "cpu", "batch_size": 128,
            "overrides": ["train.cudnn_benchmark=true"]}
    assert speed._config(spec).train.cudnn_benchmark
    plain = {"case": "digits_dann", "precision": "fp32", "compile": "none", "device": "cpu", "metric": "imgs_per_s",
             "mean": 1.0}
    tuned = {**plain, "overrides": ["train.cudnn_benchmark=true"], "mean": 2.0}
    assert speed._merge([plain], [tuned]) == [plain, tuned]
    assert speed._merge([plain, tuned], [{**plain, "mean": 3.0}]) == [tuned, {**plain, "mean": 3.0}]


@pytest.mark.parametrize("area", sorted(p.parent.name for p in BENCH.glob("*/results.json")))
def test_committed_results_have_the_required_fields_and_relative_commands(area):
    """Every committed benchmark record names task, method, metric, mean, std, n_seeds, device, command and date,
    and its command holds no machine's absolute path (DEVELOPERS: relative paths such as ../shared/data)."""
    required = load(BENCH / "common.py", "bench_common").REQUIRED
    records = json.loads((BENCH / area / "results.json").read_text())
    assert records
    for record in records:
        missing = [k for k in required if k not in record]
        assert not missing, f"{area}: {record.get('task')} / {record.get('method')} lacks {missing}"
        assert "/work/" not in record["command"] and "/home/" not in record["command"], record["command"]
