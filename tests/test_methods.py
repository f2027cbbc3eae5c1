"""Method behaviour on tiny deterministic problems."""

import pytest
import torch

from transferlab.config import OptimConfig
from transferlab.data import Batch
from transferlab.engine.trainer import build_optimizer
from transferlab.methods import ADDA, METHODS
from transferlab.models import Encoder, MLP
from transferlab.schedules import Schedule


class RecordingContext:
    """A StepContext for unit tests: real optimizers; records which parameters each step changed."""

    def __init__(self, method, total_steps=10, lr=0.05):
        self.method = method
        self.optimizers = {name: build_optimizer(req, OptimConfig(lr=lr), lambda p: 1.0)
                           for name, req in method.optimizers().items()}
        self.step, self.total_steps, self.progress = 0, total_steps, 0.0
        self.calls = []  # (optimizer names, names of parameters that changed)

    def backward_and_step(self, loss, *names):
        before = {n: p.detach().clone() for n, p in self.method.named_parameters()}
        self.method.zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.optimizers[name].step()
        changed = {n for n, p in self.method.named_parameters() if not torch.equal(before[n], p.detach())}
        self.calls.append((names, changed))

    def scalar(self, name, schedule: Schedule):
        return float(schedule(self.progress))


def blobs(n=64, shift=0.0, seed=0):
    """Two Gaussian classes in 8-d; ``shift`` moves the whole domain."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 8, generator=g) + (y[:, None].float() * 2 - 1) * 1.5 + shift
    return x, y


def make(name, **hparams):
    torch.manual_seed(0)
    return METHODS.get(name)(Encoder(MLP(8, hidden=16), bottleneck_dim=0), 2, **hparams)


@pytest.mark.parametrize("name", ["source_only", "dann", "cdan", "cdan_e", "mcd", "adda"])
def test_update_reduces_classification_loss(name):
    method = make(name)
    xs, ys = blobs(seed=1)
    xt, _ = blobs(shift=0.5, seed=2)
    ctx = RecordingContext(method, total_steps=200)
    first_key = {"mcd": "loss_a", "adda": "cls_loss"}.get(name, "cls_loss")
    history = []
    for step in range(60):  # ADDA's stage 1 covers these steps (pretrain_fraction 0.5 of 200)
        ctx.step, ctx.progress = step, step / 200
        batches = [Batch(xs, ys), Batch(xt)][: len(method.inputs)]
        history.append(method.update(*batches, ctx)[first_key].item())
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:10]) / 10
    method.eval()
    accuracy = (method.predict(xs).argmax(1) == ys).float().mean().item()
    assert accuracy > 0.9


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e"])
def test_discriminator_separates_shifted_domains_but_not_identical_ones(name):
    """With the encoder frozen, the discriminator is trained by the same update: it must tell a shifted
    target from the source, and must not separate a target drawn from the source distribution."""

    def final_domain_accuracy(shift):
        method = make(name, trade_off=1.0)
        for p in method.encoder.parameters():
            p.requires_grad_(False)
        xs, ys = blobs(seed=1)
        xt, _ = blobs(shift=shift, seed=2)
        ctx = RecordingContext(method, total_steps=100)
        accs = []
        for step in range(60):
            ctx.step, ctx.progress = step, 1.0
            accs.append(method.update(Batch(xs, ys), Batch(xt), ctx)["domain_acc"].item())
        return sum(accs[-10:]) / 10

    assert final_domain_accuracy(3.0) > 0.7
    assert final_domain_accuracy(0.0) < 0.65


def test_mcd_three_steps_update_the_right_parameters():
    method = make("mcd", num_k=3)
    xs, ys = blobs(seed=1)
    xt, _ = blobs(shift=1.0, seed=2)
    ctx = RecordingContext(method)
    out = method.update(Batch(xs, ys), Batch(xt), ctx)
    assert set(out) == {"loss_a", "discrepancy_b", "discrepancy_c"}
    names = [names for names, _ in ctx.calls]
    assert names == [("generator", "classifiers"), ("classifiers",)] + [("generator",)] * 3
    generator = {n for n, _ in method.named_parameters() if n.startswith("encoder.")}
    classifiers = {n for n, _ in method.named_parameters() if n.startswith(("head_1.", "head_2."))}
    step_a, step_b, *steps_c = (changed for _, changed in ctx.calls)
    assert step_a == generator | classifiers
    assert step_b == classifiers           # G fixed in step B
    for changed in steps_c:
        assert changed == generator          # F1, F2 fixed in step C


def test_mcd_step_b_increases_discrepancy():
    method = make("mcd", num_k=1)
    xs, ys = blobs(seed=1)
    xt, _ = blobs(shift=1.0, seed=2)
    ctx = RecordingContext(method, lr=0.5)
    method.train()
    with torch.no_grad():
        f_t = method.encoder(xt)
    from transferlab.losses import classifier_discrepancy

    method.eval()
    before = classifier_discrepancy(method.head_1(f_t), method.head_2(f_t)).item()
    method.train()
    # Only step B: maximise discrepancy with the classifiers.
    loss_b = method._source_loss(method.encoder(xs).detach(), ys) - classifier_discrepancy(
        method.head_1(f_t), method.head_2(f_t))
    ctx.backward_and_step(loss_b, "classifiers")
    method.eval()
    after = classifier_discrepancy(method.head_1(f_t), method.head_2(f_t)).item()
    assert after > before


def test_adda_target_encoder_is_separate_and_initialised_from_source():
    method: ADDA = make("adda", pretrain_fraction=0.5)
    assert method.target_encoder is not method.encoder
    assert not any(p1 is p2 for p1, p2 in zip(method.target_encoder.parameters(), method.encoder.parameters()))
    xs, ys = blobs(seed=1)
    xt, _ = blobs(shift=1.0, seed=2)
    ctx = RecordingContext(method, total_steps=10)
    for step in range(5):  # stage 1: only the source encoder and the classifier move
        ctx.step = step
        method.update(Batch(xs, ys), Batch(xt), ctx)
        assert all(n.startswith(("encoder.", "head.")) for n in ctx.calls[-1][1])
    assert not method.adapted
    source_state = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    ctx.step = 5  # first stage-2 step: M_t <- M_s, then D and M_t are updated, M_s and C never again
    method.update(Batch(xs, ys), Batch(xt), ctx)
    assert bool(method.adapted)
    (d_names, d_changed), (t_names, t_changed) = ctx.calls[-2:]
    assert d_names == ("discriminator",) and all(n.startswith("discriminator.") for n in d_changed)
    assert t_names == ("target_encoder",) and all(n.startswith("target_encoder.") for n in t_changed) and t_changed
    for key, value in method.encoder.state_dict().items():
        assert torch.equal(value, source_state[key]), key
    # The target encoder started from M_s: one Adam step (lr 2e-4) moves it only slightly.
    drift = max((a - source_state[k]).abs().max().item() for k, a in method.target_encoder.state_dict().items()
                if a.is_floating_point())
    assert 0 < drift < 1e-2
    assert ctx.optimizers["target_encoder"].__class__.__name__ == "Adam"


def test_unknown_hyper_parameter_is_a_clear_error():
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="trade_of: unknown key. Did you mean 'trade_off'"):
        make("dann", trade_of=0.5)
    with pytest.raises(ConfigError, match="num_k"):
        make("mcd", num_k=0)
