"""Whole-step CUDA graphs (train.cuda_graph). On a CPU the capture is emulated (engine/graphs.py): every
"replay" runs the step with the step context frozen at capture and the per-step numbers (learning rates,
GRL λ) as device tensors updated in place, which is what a replayed graph sees. These tests check that
graph mode trains like eager mode; on a GPU, benchmarks/gpu_session.sh runs the real graphs."""

import warnings

import pytest
import torch

from transferlab.data.streams import Batch
from transferlab.engine import graphs
from transferlab.engine.metrics import MetricsLog
from transferlab.errors import ConfigError, TransferlabError
from transferlab.experiment import build, resolved_config, train

from conftest import tiny_config

TOTAL = 14  # ADDA switches to stage 2 at step 7: each phase has 3 warm-up steps, then its capture


def _fit(method, graph, **train_options):
    experiment = build(tiny_config(method, iterations=TOTAL, train={"cuda_graph": graph, **train_options}))
    trainer = experiment.trainer(None, progress=False, _emulate_graphs=graph)
    result = trainer.fit()
    return trainer, result


def _max_diff(a, b):
    a, b = a.method.state_dict(), b.method.state_dict()
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("method", ["dann", "cdan_e", "mcd", "adda", "denoising_autoencoder"])
def test_graph_mode_trains_like_eager(method):
    eager, eager_result = _fit(method, False)
    graph, graph_result = _fit(method, True)
    # fused optimizer kernels (graph mode) round differently from the multi-tensor ones: tiny differences
    assert _max_diff(eager, graph) < 1e-3
    assert graph_result.get("target_test/acc") == eager_result.get("target_test/acc")
    expected_phases = [False, True] if method == "adda" else [None]
    assert list(graph._graphs.captured) == expected_phases
    assert all(isinstance(g["lr"], torch.Tensor) for opt in graph.optimizers.values() for g in opt.param_groups)


def test_a_phase_change_the_method_does_not_declare_is_frozen_at_capture(monkeypatch):
    """Without ADDA's graph_phase the captured step stays in stage 1: the emulation shows it, as a GPU would."""
    from transferlab.methods.adda import ADDA

    eager, _ = _fit("adda", False)
    monkeypatch.setattr(ADDA, "graph_phase", lambda self, ctx: None)
    graph, _ = _fit("adda", True)
    assert _max_diff(eager, graph) > 1.0


def test_graph_mode_logs_what_eager_mode_logs(tmp_path):
    eager_cfg = tiny_config("dann", iterations=10, train={"log_every": 2})
    train(eager_cfg, tmp_path / "eager", progress=False)
    graph_cfg = tiny_config("dann", iterations=10, train={"log_every": 2, "cuda_graph": True})
    trainer = build(graph_cfg).trainer(tmp_path / "graph", progress=False, _emulate_graphs=True)
    trainer.fit()
    read = lambda run: [r for r in MetricsLog.read(tmp_path / run / "metrics.jsonl") if r["kind"] == "train"]  # noqa: E731
    eager, graph = read("eager"), read("graph")
    assert [r["step"] for r in graph] == [2, 4, 6, 8, 10]
    for e, g in zip(eager, graph):  # window means of losses a replay overwrites in place; last step's schedules
        assert g["grl_lambda"] == e["grl_lambda"] and g["lr"] == e["lr"]
        for key in ("cls_loss", "transfer_loss", "domain_acc"):
            assert g[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), key
    # the tensor the replayed step reads holds the last step's λ
    assert trainer._scalar_tensors["grl_lambda"][1].item() == pytest.approx(graph[-1]["grl_lambda"])


def test_graph_mode_checkpoint_and_resume(tmp_path):
    config = tiny_config("adda", iterations=TOTAL, train={"cuda_graph": True, "checkpoint_every": 5})
    from transferlab.engine import prepare_run_dir

    prepare_run_dir(tmp_path / "run", resolved_config(config), resume=False, overwrite=False)
    assert build(config).trainer(tmp_path / "run", progress=False, _emulate_graphs=True).fit(stop_at=6)["stopped_early"]
    trainer = build(config).trainer(tmp_path / "run", progress=False, resume=True, _emulate_graphs=True)
    result = trainer.fit()
    assert result["step"] == TOTAL
    groups = [g for opt in trainer.optimizers.values() for g in opt.param_groups]
    assert all(isinstance(g["lr"], torch.Tensor) for g in groups)  # restored as tensors the graph can read
    uninterrupted, _ = _fit("adda", True, checkpoint_every=5)
    assert _max_diff(uninterrupted, trainer) == 0.0  # resumed at step 5: warm-up and capture again, same training


def test_graph_mode_refusals_and_cpu_fallback():
    with pytest.raises(ConfigError, match="cannot be combined with train.compile: default"):
        tiny_config("dann", train={"cuda_graph": True, "compile": "default"})
    simclr = tiny_config("simclr", train={"cuda_graph": True})
    with pytest.raises(TransferlabError, match="simclr's update cannot be captured"):
        build(simclr).trainer(None, progress=False, _emulate_graphs=True)
    graph = build(tiny_config("dann", train={"cuda_graph": True})).trainer(None, progress=False, _emulate_graphs=True)
    graph.world = 2  # as under torchrun
    with pytest.raises(TransferlabError, match="runs on one process"):
        graph._setup_graphs(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = build(tiny_config("dann", iterations=3, train={"cuda_graph": True})).trainer(None, progress=False)
    assert trainer._graphs is None and any("ignored on CPU" in str(w.message) for w in caught)
    assert trainer.fit()["step"] == 3


def test_static_batches_must_keep_their_shape():
    static = Batch(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    graphs.copy_into(static, Batch(torch.ones(4, 3), torch.ones(4, dtype=torch.long)))
    assert static.x.sum() == 12 and static.y.sum() == 4
    with pytest.raises(TransferlabError, match=r"captured as \(4, 3\) torch.float32 but this step gives \(5, 3\)"):
        graphs.copy_into(static, Batch(torch.ones(5, 3), torch.ones(5, dtype=torch.long)))
    tokens = Batch({"input_ids": torch.zeros(2, 8, dtype=torch.long)})
    with pytest.raises(TransferlabError, match="fixed max_length"):
        graphs.copy_into(tokens, Batch({"input_ids": torch.zeros(2, 9, dtype=torch.long)}))


def test_reverse_gradient_takes_a_tensor_coefficient():
    from transferlab.models.grl import reverse_gradient

    coeff = torch.tensor(0.5)
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, coeff).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    coeff.fill_(2.0)  # the same tensor, a new value: what a replayed graph reads
    x.grad = None
    reverse_gradient(x, coeff).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))
