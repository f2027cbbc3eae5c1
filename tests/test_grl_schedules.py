import math

import pytest
import torch

from transferlab.models import GradientReversal, reverse_gradient
from transferlab.schedules import Constant, CosineDecay, GaninSchedule, InverseDecay


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("coeff", [0.0, 0.25, 1.0, 3.0])
def test_grl_is_identity_forward_and_reverses_scaled_gradient(coeff, as_tensor):
    """λ as a number, or as the 0-dim tensor the engine passes under torch.compile and CUDA graphs."""
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = reverse_gradient(x, torch.tensor(coeff) if as_tensor else coeff)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -coeff * upstream)


def test_grl_defaults_to_lambda_one():
    x = torch.randn(4, 2, requires_grad=True)
    GradientReversal()(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(4, 2))
    x.grad = None
    reverse_gradient(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(4, 2))



def test_grl_module_inside_a_network_flips_only_the_branch_behind_it():
    torch.manual_seed(0)
    feature = torch.nn.Linear(4, 4)
    head = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    head(feature(x)).sum().backward()
    plain = feature.weight.grad.clone()
    feature.zero_grad()
    head.zero_grad()
    head(GradientReversal()(feature(x), 0.5)).sum().backward()
    assert torch.allclose(feature.weight.grad, -0.5 * plain)


def test_ganin_schedule_values():
    s = GaninSchedule()
    assert s(0.0) == 0.0
    assert s(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661...
    assert s(1.0) == pytest.approx(0.9999092042625951)
    assert GaninSchedule(gamma=10, hi=0.1)(1.0) == pytest.approx(0.09999092042625951)
    assert GaninSchedule(gamma=2.0)(0.5) == pytest.approx(2 / (1 + math.exp(-1.0)) - 1)
    values = [s(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_lr_schedules():
    assert InverseDecay()(0.0) == 1.0
    assert InverseDecay()(1.0) == pytest.approx(11 ** -0.75)  # 0.1656...
    assert InverseDecay(gamma=10, power=0.75)(0.5) == pytest.approx(6 ** -0.75)
    assert CosineDecay()(0.0) == 1.0 and CosineDecay()(1.0) == pytest.approx(0.0, abs=1e-12)
    assert Constant(0.3)(0.7) == 0.3 and Constant()(0.2) == 1.0
    assert InverseDecay(gamma=2.0, power=0.5)(0.5) == pytest.approx(2 ** -0.5)
    assert CosineDecay()(0.5) == pytest.approx(0.5) and CosineDecay()(0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_a_changing_grl_coefficient_does_not_recompile_every_step():
    """The GRL coefficient changes every step; under torch.compile it must become a dynamic input
    (at most one recompile), not a constant that recompiles each step until the cache limit."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from transferlab.losses import DomainAdversarialLoss
    from transferlab.models import DomainDiscriminator

    torch._dynamo.reset()
    counters.clear()
    loss = DomainAdversarialLoss(DomainDiscriminator(8, 16))
    loss.compile(backend="eager")  # dynamo's graph capture only: what decides recompiles
    f_s, f_t = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    for step in range(12):
        value, _ = loss(f_s, f_t, 0.1 * step)
        value.backward()
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])


def test_a_tensor_grl_coefficient_changed_in_place_is_one_graph():
    """What the engine passes under torch.compile: one device tensor, refilled each step; dynamo sees one graph."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from transferlab.losses import DomainAdversarialLoss
    from transferlab.models import DomainDiscriminator

    torch._dynamo.reset()
    counters.clear()
    loss = DomainAdversarialLoss(DomainDiscriminator(8, 16))
    loss.compile(backend="eager")
    f_s, f_t = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    coeff = torch.zeros(())
    for step in range(12):
        coeff.fill_(0.1 * step)
        f_s.grad = None
        value, _ = loss(f_s, f_t, coeff)
        value.backward()
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    # and the gradient still reverses with the last value: compare with the float path, uncompiled
    g_compiled = f_s.grad.clone()
    f_s.grad = None
    plain = DomainAdversarialLoss(loss.discriminator)
    plain(f_s, f_t, 1.1)[0].backward()
    assert torch.allclose(g_compiled, f_s.grad, atol=1e-6)


def test_the_engine_gives_tensor_scalars_under_compile():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny_config
    from transferlab.engine.trainer import _Context
    from transferlab.experiment import build

    eager = build(tiny_config("dann")).trainer(None, progress=False)
    assert _Context(eager, 0, 10, 0.5).scalar("grl_lambda", GaninSchedule()) == pytest.approx(GaninSchedule()(0.5))
    compiled = build(tiny_config("dann", train={"compile": "default"})).trainer(None, progress=False)
    first = _Context(compiled, 0, 10, 0.2).scalar("grl_lambda", GaninSchedule())
    second = _Context(compiled, 5, 10, 0.5).scalar("grl_lambda", GaninSchedule())
    assert second is first and first.item() == pytest.approx(GaninSchedule()(0.5))
