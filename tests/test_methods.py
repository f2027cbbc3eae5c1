"""Method behaviour on tiny deterministic problems, through each method's own ``update``.

Each test pins a method's defining term: which parameters each optimizer step moves, which quantity it
lowers or raises, how each hyper-parameter enters, and what ``bn_mode`` changes in BatchNorm's batches.
The encoder here has BatchNorm (in its bottleneck) and no dropout, so repeated forwards are identical.
"""

import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from transferlab.config import OptimConfig
from transferlab.data import Batch
from transferlab.engine.trainer import build_optimizer
from transferlab.losses import binary_domain_loss, class_balance, classifier_discrepancy
from transferlab.methods import ADDA, METHODS
from transferlab.models import MLP, Encoder
from transferlab.schedules import Schedule

DA_METHODS = ["dann", "cdan", "cdan_e", "mcd", "adda"]


@dataclass
class Call:
    names: tuple[str, ...]
    loss: float
    changed: set[str]
    grads: dict[str, torch.Tensor]
    probes: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (before the step, after it)


class RecordingContext:
    """A StepContext for unit tests: real optimizers; records, for every ``backward_and_step``, the loss, the
    gradients, which parameters changed, and ``probes`` (functions of the model) before and after the step.
    ``scalars`` pins a schedule's value by name (e.g. the GRL λ); ``lr=0`` takes no optimizer step at all, so
    every call sees the initial weights."""

    def __init__(self, method, total_steps=10, lr=0.05, probes=None, scalars=None, optim=None):
        self.method = method
        self.frozen = lr == 0
        optim = optim or OptimConfig(lr=lr or 1.0)
        self.optimizers = {name: build_optimizer(req, optim, lambda p: 1.0) for name, req in method.optimizers().items()}
        self.step, self.total_steps, self.progress = 0, total_steps, 0.0
        self.probes = probes or {}
        self.fixed_scalars = scalars or {}
        self.calls: list[Call] = []
        self.scalars: list[tuple[str, Schedule, float]] = []

    def _probe(self):
        return {name: float(fn()) for name, fn in self.probes.items()}

    def backward_and_step(self, loss, *names):
        before = {n: p.detach().clone() for n, p in self.method.named_parameters()}
        probes_before = self._probe()
        self.method.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in self.method.named_parameters() if p.grad is not None}
        for name in names:
            if not self.frozen:
                self.optimizers[name].step()
        changed = {n for n, p in self.method.named_parameters() if not torch.equal(before[n], p.detach())}
        probes_after = self._probe()
        self.calls.append(Call(names, float(loss.detach()), changed, grads,
                               {k: (probes_before[k], probes_after[k]) for k in self.probes}))

    def scalar(self, name, schedule: Schedule):
        value = self.fixed_scalars.get(name, float(schedule(self.progress)))
        self.scalars.append((name, schedule, value))
        return value

    def gather(self, tensor):
        return tensor


class Trunk(nn.Module):
    """A deterministic backbone (no dropout) for an :class:`Encoder` with a BatchNorm bottleneck."""

    def __init__(self, d_in=8, d_out=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU())
        self.out_features = d_out

    def forward(self, x):
        return self.net(x)


def blobs(n=64, shift=0.0, seed=0):
    """Two Gaussian classes in 8-d; ``shift`` moves the whole domain."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 8, generator=g) + (y[:, None].float() * 2 - 1) * 1.5 + shift
    return x, y


def make(name, seed=0, encoder=None, **hparams):
    torch.manual_seed(seed)
    return METHODS.get(name)(encoder or Encoder(Trunk(), bottleneck_dim=8), 2, **hparams)


def domains(shift=1.0, n=32):
    xs, ys = blobs(n, seed=1)
    xt, _ = blobs(n, shift=shift, seed=2)
    return Batch(xs, ys), Batch(xt)


@torch.no_grad()
def in_eval(method, fn):
    """``fn()`` with the method in eval mode (BatchNorm on running statistics), the mode restored after."""
    was = method.training
    method.eval()
    try:
        return fn()
    finally:
        method.train(was)


# --- every method ------------------------------------------------------------------------------

def test_paper_defaults():
    """The defaults the docs promise: the papers' (and TLlib's) values."""
    dann, cdan, mcd, adda = (METHODS.get(n).Config(name=n) for n in ("dann", "cdan", "mcd", "adda"))
    assert (dann.trade_off, dann.grl_gamma, dann.grl_max, dann.discriminator_hidden, dann.bn_mode) == (1.0, 10.0, 1.0, 1024, "joint")
    assert (cdan.randomized, cdan.randomize_above, cdan.randomized_dim) == ("auto", 4096, 1024)
    assert (mcd.num_k, mcd.head_hidden, mcd.entropy_weight) == (4, 256, 0.0)
    assert (adda.pretrain_fraction, adda.discriminator_hidden, adda.adversarial_optimizer, adda.adversarial_lr,
            adda.adversarial_betas, adda.adversarial_lr_schedule) == (0.5, 500, "adam", 2e-4, (0.5, 0.999), "constant")
    assert not METHODS.get("cdan").entropy_conditioning and METHODS.get("cdan_e").entropy_conditioning


# --- bn_mode ------------------------------------------------------------------------------------

def batchnorm_batches(method, run):
    """The batch sizes the encoder's BatchNorm normalised together during ``run()`` (train-mode forwards only)."""
    sizes = []
    bn = method.encoder.bottleneck[1]
    handle = bn.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])) if module.training else None)
    try:
        run()
    finally:
        handle.remove()
    return sizes


@pytest.mark.parametrize("bn_mode", ["joint", "separate"])
def test_features_normalise_the_domains_together_only_in_joint_mode(bn_mode):
    method = make("dann", bn_mode=bn_mode)
    (source, target), other_target = domains(), blobs(32, shift=-2.0, seed=3)[0]
    f_s, f_t = method.features(source.x, target.x)
    if bn_mode == "joint":
        joint = method.encoder(torch.cat([source.x, target.x]))
        assert torch.allclose(f_s, joint[:32]) and torch.allclose(f_t, joint[32:])
        # the source's features depend on the target batch it was normalised with
        assert not torch.allclose(method.features(source.x, other_target)[0], f_s)
    else:
        assert torch.allclose(f_s, method.encoder(source.x)) and torch.allclose(f_t, method.encoder(target.x))
        assert torch.allclose(method.features(source.x, other_target)[0], f_s)


@pytest.mark.parametrize("name, joint, separate", [
    ("dann", [64], [32, 32]),
    ("cdan", [64], [32, 32]),
    ("cdan_e", [64], [32, 32]),
    # steps A and B forward both domains; step C (num_k = 2) too, jointly or the target alone
    ("mcd", [64, 64, 64, 64], [32, 32, 32, 32, 32, 32]),
])
def test_bn_mode_decides_which_samples_batchnorm_normalises_together(name, joint, separate):
    for bn_mode, expected in (("joint", joint), ("separate", separate)):
        method = make(name, bn_mode=bn_mode, **({"num_k": 2} if name == "mcd" else {}))
        ctx = RecordingContext(method)
        assert batchnorm_batches(method, lambda: method.update(*domains(), ctx)) == expected, bn_mode


# --- DANN / CDAN / CDAN+E -----------------------------------------------------------------------

def transfer_gradients(name, trade_off, grl_lambda, encoder_only=True, **hparams):
    """Gradients of one update's loss from a fixed initialisation, with λ pinned."""
    method = make(name, trade_off=trade_off, **hparams)
    ctx = RecordingContext(method, lr=0.0, scalars={"grl_lambda": grl_lambda})
    method.update(*domains(), ctx)
    (call,) = ctx.calls
    prefix = "encoder." if encoder_only else "domain_loss."
    return {n: g for n, g in call.grads.items() if n.startswith(prefix)}


def _close(a, b, atol=1e-6):
    return all(torch.allclose(a[k], b[k], atol=atol) for k in a)


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e"])
def test_trade_off_scales_the_transfer_term(name):
    """Encoder gradient = ∇CE + trade_off · ∇L_transfer: linear in trade_off, and not constant."""
    g0, g1, g25 = (transfer_gradients(name, t, 0.7) for t in (0.0, 1.0, 2.5))
    assert not _close(g1, g0)
    assert _close({k: g25[k] - g0[k] for k in g0}, {k: 2.5 * (g1[k] - g0[k]) for k in g0}, atol=1e-5)
    # the discriminator learns from the transfer term only
    d1, d25 = (transfer_gradients(name, t, 0.7, encoder_only=False) for t in (1.0, 2.5))
    assert d1 and _close(d25, {k: 2.5 * v for k, v in d1.items()}, atol=1e-5)


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e"])
def test_grl_lambda_scales_only_what_reaches_the_encoder(name):
    """λ multiplies the (reversed) gradient into the encoder; the discriminator's own gradient ignores it."""
    ce = transfer_gradients(name, 1.0, 0.0)  # λ = 0: the encoder sees the classification loss only
    t3, t9 = ({k: v - ce[k] for k, v in transfer_gradients(name, 1.0, lam).items()} for lam in (0.3, 0.9))
    assert not _close(t3, {k: torch.zeros_like(v) for k, v in t3.items()})
    assert _close(t9, {k: 3.0 * v for k, v in t3.items()}, atol=1e-5)
    assert _close(transfer_gradients(name, 1.0, 0.3, encoder_only=False), transfer_gradients(name, 1.0, 0.9, encoder_only=False))


def test_dann_reverses_the_discriminators_gradient_into_the_encoder():
    """The transfer part of the encoder's gradient is −λ times the gradient that would *lower* the domain loss:
    the encoder is trained to confuse the discriminator."""
    lam = 0.6
    ce = transfer_gradients("dann", 1.0, 0.0)
    transfer = {k: v - ce[k] for k, v in transfer_gradients("dann", 1.0, lam).items()}
    method = make("dann")  # the same initialisation
    source, target = domains()
    f_s, f_t = method.features(source.x, target.x)
    d = method.domain_loss.discriminator
    logits = d(torch.cat([f_s, f_t]))  # one discriminator batch, as in the loss
    plain, _ = binary_domain_loss(logits[:32], logits[32:])  # no reversal
    method.zero_grad()
    plain.backward()
    expected = {n: -lam * p.grad for n, p in method.named_parameters() if n.startswith("encoder.")}
    assert _close(transfer, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e"])
def test_grl_follows_its_schedule(name):
    method = make(name, grl_gamma=5.0, grl_max=0.4)
    ctx = RecordingContext(method, total_steps=10)
    ctx.progress = 0.3
    method.update(*domains(), ctx)
    (label, schedule, value), = ctx.scalars
    assert label == "grl_lambda" and value == pytest.approx(0.4 * (2 / (1 + math.exp(-5.0 * 0.3)) - 1))
    assert schedule(1.0) == pytest.approx(0.4 * (2 / (1 + math.exp(-5.0)) - 1))


def test_cdan_e_weights_by_confidence_and_equals_cdan_when_all_are_equally_confident():
    def transfer_loss(name, source, target):
        method = make(name)
        method.head.weight.data.mul_(30)  # confident, unequally so: weights 1 + e^-H differ from sample to sample
        ctx = RecordingContext(method, lr=0.0, scalars={"grl_lambda": 1.0})
        return method.update(source, target, ctx)["transfer_loss"].item()

    source, target = domains()
    assert transfer_loss("cdan_e", source, target) != pytest.approx(transfer_loss("cdan", source, target), rel=1e-4)
    # A zero head makes every prediction uniform: all entropies equal, all weights 1, CDAN+E = CDAN.
    def zero_head(name):
        method = make(name)
        nn.init.zeros_(method.head.weight), nn.init.zeros_(method.head.bias)
        ctx = RecordingContext(method, lr=0.0, scalars={"grl_lambda": 1.0})
        return method.update(source, target, ctx)["transfer_loss"].item()

    assert zero_head("cdan_e") == pytest.approx(zero_head("cdan"), rel=1e-6)


# --- MCD ----------------------------------------------------------------------------------------

def test_mcd_three_steps_update_the_right_parameters():
    method = make("mcd", num_k=3)
    ctx = RecordingContext(method)
    out = method.update(*domains(), ctx)
    assert set(out) == {"loss_a", "discrepancy_b", "discrepancy_c"}
    assert [c.names for c in ctx.calls] == [("generator", "classifiers"), ("classifiers",)] + [("generator",)] * 3
    generator = {n for n, _ in method.named_parameters() if n.startswith("encoder.")}
    classifiers = {n for n, _ in method.named_parameters() if n.startswith(("head_1.", "head_2."))}
    step_a, step_b, *steps_c = (c.changed for c in ctx.calls)
    assert step_a == generator | classifiers
    assert step_b == classifiers           # G fixed in step B
    for changed in steps_c:
        assert changed == generator          # F1, F2 fixed in step C


def test_mcd_step_b_raises_the_discrepancy_and_step_c_lowers_it():
    method = make("mcd", num_k=3, head_hidden=0)
    source, target = domains()

    def discrepancy():
        return in_eval(method, lambda: classifier_discrepancy(*(h(method.encoder(target.x)) for h in (method.head_1, method.head_2))))

    def source_loss():
        return in_eval(method, lambda: method._source_loss(method.encoder(source.x), source.y))

    ctx = RecordingContext(method, lr=0.01, probes={"discrepancy": discrepancy, "source_loss": source_loss})
    out = method.update(source, target, ctx)
    step_a, step_b, *steps_c = ctx.calls
    assert step_a.probes["source_loss"][1] < step_a.probes["source_loss"][0]
    assert step_b.probes["discrepancy"][1] > step_b.probes["discrepancy"][0]
    for step in steps_c:
        assert step.probes["discrepancy"][1] < step.probes["discrepancy"][0]
    assert out["discrepancy_c"].item() == pytest.approx(steps_c[-1].loss)  # the last step C's, as logged


def test_mcd_step_b_loss_is_source_loss_minus_discrepancy():
    method = make("mcd", num_k=1, head_hidden=0)
    source, target = domains()
    ctx = RecordingContext(method, lr=0.0)
    out = method.update(source, target, ctx)
    f_s, f_t = method.features(source.x, target.x)  # lr 0: the same weights the step saw
    expected = method._source_loss(f_s, source.y) - classifier_discrepancy(method.head_1(f_t), method.head_2(f_t))
    assert ctx.calls[1].loss == pytest.approx(expected.item(), rel=1e-5)
    assert out["discrepancy_b"].item() > 0


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_mcd_entropy_weight_adds_tllibs_class_balance_to_steps_a_and_b(weight):
    """entropy_weight · (b(F1(G(x_t))) + b(F2(G(x_t)))) in steps A and B, b the class balance of the mean prediction."""
    source, target = domains()
    losses = {}
    for w in (0.0, weight):
        method = make("mcd", num_k=1, head_hidden=0, entropy_weight=w)
        ctx = RecordingContext(method, lr=0.0)
        method.update(source, target, ctx)
        losses[w] = [c.loss for c in ctx.calls]
    _, f_t = method.features(source.x, target.x)
    balance = (class_balance(method.head_1(f_t)) + class_balance(method.head_2(f_t))).item()
    assert losses[weight][0] - losses[0.0][0] == pytest.approx(weight * balance, abs=1e-5)   # step A
    assert losses[weight][1] - losses[0.0][1] == pytest.approx(weight * balance, abs=1e-5)   # step B
    assert losses[weight][2] == pytest.approx(losses[0.0][2])                                # step C: none


def test_mcd_predicts_with_the_average_of_both_classifiers():
    method = make("mcd", head_hidden=0)
    method.eval()
    x = blobs(8, seed=4)[0]
    f = method.encoder(x)
    p = 0.5 * (torch.softmax(method.head_1(f), 1) + torch.softmax(method.head_2(f), 1))
    assert torch.allclose(method.predict(x).exp(), p, atol=1e-6)


# --- ADDA ---------------------------------------------------------------------------------------

def test_adda_target_encoder_is_separate_and_initialised_from_source():
    method: ADDA = make("adda", pretrain_fraction=0.5)
    assert method.target_encoder is not method.encoder
    assert not any(p1 is p2 for p1, p2 in zip(method.target_encoder.parameters(), method.encoder.parameters()))
    source, target = domains()
    ctx = RecordingContext(method, total_steps=10)
    for step in range(5):  # stage 1: only the source encoder and the classifier move
        ctx.step = step
        method.update(source, target, ctx)
        assert ctx.calls[-1].names == ("source",)
        assert ctx.calls[-1].changed and all(n.startswith(("encoder.", "head.")) for n in ctx.calls[-1].changed)
    assert not method.adapted
    source_state = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    ctx.step = 5  # first stage-2 step: M_t <- M_s, then D and M_t are updated, M_s and C never again
    method.update(source, target, ctx)
    assert bool(method.adapted)
    d_call, t_call = ctx.calls[-2:]
    assert d_call.names == ("discriminator",) and all(n.startswith("discriminator.") for n in d_call.changed)
    assert t_call.names == ("target_encoder",) and t_call.changed and all(n.startswith("target_encoder.") for n in t_call.changed)
    for key, value in method.encoder.state_dict().items():
        assert torch.equal(value, source_state[key]), key
    # The target encoder started from M_s: one Adam step (lr 2e-4) moves it only slightly.
    drift = max((p - source_state[k]).abs().max().item() for k, p in method.target_encoder.named_parameters())
    assert 0 < drift < 1e-2
    assert ctx.optimizers["target_encoder"].__class__.__name__ == "Adam"


def test_adda_stage_2_discriminator_separates_and_target_encoder_fools_it():
    """min_D of the domain loss; min_Mt of −log D(M_t(x_t)) — the inverted label: M_t pushes D's target logit up."""
    method: ADDA = make("adda", pretrain_fraction=0.5)
    source, target = domains(shift=2.0)

    def d_loss():
        return in_eval(method, lambda: binary_domain_loss(method.discriminator(method.encoder(source.x)),
                                                          method.discriminator(method.target_encoder(target.x)))[0])

    def target_logit():
        return in_eval(method, lambda: method.discriminator(method.target_encoder(target.x)).mean())

    ctx = RecordingContext(method, total_steps=10, probes={"d_loss": d_loss, "target_logit": target_logit})
    for step in range(5, 8):
        ctx.step = step
        method.update(source, target, ctx)
        d_call, t_call = ctx.calls[-2:]
        assert d_call.probes["d_loss"][1] < d_call.probes["d_loss"][0]
        assert t_call.probes["target_logit"][1] > t_call.probes["target_logit"][0]


@pytest.mark.parametrize("fraction, total, first_stage_2", [(0.5, 10, 5), (0.3, 10, 3), (0.25, 10, 3), (0.9, 7, 7)])
def test_adda_pretrain_fraction_sets_where_stage_2_starts(fraction, total, first_stage_2):
    method = make("adda", pretrain_fraction=fraction)
    source, target = domains()
    ctx = RecordingContext(method, total_steps=total)
    stages = []
    for step in range(total):
        ctx.step = step
        method.update(source, target, ctx)
        stages.append(2 if ctx.calls[-1].names == ("target_encoder",) else 1)
        assert method.graph_phase(ctx) is (stages[-1] == 2)
    assert stages == [1] * first_stage_2 + [2] * (total - first_stage_2)


def test_adda_classifies_each_domain_through_its_own_encoder():
    method: ADDA = make("adda")
    method.eval()
    x = blobs(8, seed=4)[0]
    with torch.no_grad():
        for p in method.target_encoder.parameters():
            p.add_(1.0)
    assert not method.adapted  # before stage 2 both domains use the source encoder
    assert torch.allclose(method.predict_on(x, "target"), method.head(method.encoder(x)))
    method.adapted.fill_(True)
    assert torch.allclose(method.predict(x), method.head(method.target_encoder(x)))
    assert torch.allclose(method.predict_on(x, "source"), method.head(method.encoder(x)))
    assert method.encoder_for("target") is method.target_encoder and method.encoder_for("source") is method.encoder


# --- supervised ---------------------------------------------------------------------------------

def test_linear_probe_trains_only_the_head_and_keeps_batchnorm_statistics():
    method = make("linear_probe")
    method.train()
    stats = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    ctx = RecordingContext(method)
    method.update(domains()[0], ctx)
    assert ctx.calls[0].changed == {"head.weight", "head.bias"}
    for key, value in method.encoder.state_dict().items():
        assert torch.equal(value, stats[key]), key
    assert not method.encoder.training and method.head.training


def test_source_only_minimises_the_source_cross_entropy_over_every_parameter():
    assert METHODS.get("source_only").inputs == {"source": True}  # the target is for evaluation only
    method = make("source_only")
    source = domains()[0]
    ctx = RecordingContext(method, lr=0.0)
    method.update(source, ctx)
    assert ctx.calls[0].loss == pytest.approx(nn.functional.cross_entropy(method.predict(source.x), source.y).item(), rel=1e-5)
    ctx = RecordingContext(method)
    method.update(source, ctx)
    assert ctx.calls[0].changed == {n for n, _ in method.named_parameters()}


@pytest.mark.parametrize("name", ["supervised", "source_only", "linear_probe", "dann", "adda", "mcd", "cdan_e"])
def test_every_method_validates_its_hyper_parameters(name):
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="method.bn_mod: unknown key. Did you mean 'bn_mode'"):
        make(name, bn_mod="separate")
    assert make(name, bn_mode="separate").hparams.bn_mode == "separate"


def test_unknown_hyper_parameter_is_a_clear_error():
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="trade_of: unknown key. Did you mean 'trade_off'"):
        make("dann", trade_of=0.5)
    with pytest.raises(ConfigError, match="num_k"):
        make("mcd", num_k=0)



# --- the parts each method builds ---------------------------------------------------------------

@pytest.mark.parametrize("randomized, above, expect", [("auto", 4096, False), ("auto", 15, True), ("auto", 16, False),
                                                       ("yes", 4096, True), ("no", 1, False)])
def test_cdan_randomizes_the_multilinear_map_above_its_threshold(randomized, above, expect):
    """Features 8 × classes 2 = 16 dimensions: randomized when ``yes``, or ``auto`` and 16 > randomize_above."""
    method = make("cdan", randomized=randomized, randomize_above=above, randomized_dim=12, discriminator_hidden=7)
    multilinear = method.domain_loss.multilinear
    assert multilinear.randomized is expect
    assert multilinear.out_features == (12 if expect else 16)
    assert method.domain_loss.discriminator.net[0].in_features == multilinear.out_features
    assert method.domain_loss.discriminator.net[0].out_features == 7


def test_dann_builds_its_head_and_discriminator_from_the_encoder():
    method = make("dann", discriminator_hidden=5)
    assert (method.head.in_features, method.head.out_features) == (8, 2)
    first = method.domain_loss.discriminator.net[0]
    assert (first.in_features, first.out_features) == (8, 5)


@pytest.mark.parametrize("hidden", [0, 6])
def test_mcd_classifiers_are_linear_or_one_hidden_layer(hidden):
    method = make("mcd", head_hidden=hidden)
    for head in (method.head_1, method.head_2):
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        widths = [(m.in_features, m.out_features) for m in linears]
        assert widths == ([(8, 2)] if hidden == 0 else [(8, hidden), (hidden, 2)])
        layout = ["Linear"] if hidden == 0 else ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]  # TLlib's MCD head
        assert [type(m).__name__ for m in (head.children() if hidden else [head])] == layout
        assert all(m.p == 0.5 for m in head.modules() if isinstance(m, nn.Dropout))
    assert set(method.optimizers()) == {"generator", "classifiers"}
    generator = {id(p) for group in method.optimizers()["generator"].groups for p in group[0]}
    assert generator == {id(p) for p in method.encoder.parameters()}
    classifiers = {id(p) for group in method.optimizers()["classifiers"].groups for p in group[0]}
    assert classifiers == {id(p) for p in [*method.head_1.parameters(), *method.head_2.parameters()]}
    assert all(scale == 1.0 for request in method.optimizers().values() for _, scale in request.groups)


def test_adda_optimizers_and_their_settings():
    method = make("adda", adversarial_lr=3e-4, adversarial_optimizer="sgd", adversarial_weight_decay=0.0,
                  adversarial_betas=(0.1, 0.2), adversarial_lr_schedule="cosine")
    requests = method.optimizers()
    assert set(requests) == {"source", "target_encoder", "discriminator"}
    source = {id(p) for group in requests["source"].groups for p in group[0]}
    assert source == {id(p) for p in [*method.encoder.parameters(), *method.head.parameters()]}
    assert all(scale == 1.0 for request in requests.values() for _, scale in request.groups)
    assert requests["source"].overrides == {}
    for name in ("target_encoder", "discriminator"):
        assert requests[name].overrides == {"name": "sgd", "lr": 3e-4, "betas": (0.1, 0.2), "weight_decay": 0.0,
                                            "lr_schedule": "cosine"}
    assert method.discriminator.net[1].__class__ is nn.Identity  # the paper's discriminator: no BatchNorm
    assert method.discriminator.net[0].out_features == 500


def test_linear_probe_optimises_the_head_only():
    method = make("linear_probe")
    (params, scale), = method.optimizers()["main"].groups
    assert [id(p) for p in params] == [id(p) for p in method.head.parameters()] and scale == 1.0


def test_a_pretraining_method_has_no_classifier_and_says_what_to_do():
    from transferlab.errors import TransferlabError
    from transferlab.methods import InputSpec

    spec = InputSpec("features", (8,))
    method = METHODS.get("autoencoder")(Encoder(Trunk(), bottleneck_dim=8), 2, input_spec=spec)
    assert not METHODS.get("autoencoder").classifies() and METHODS.get("dann").classifies()
    with pytest.raises(TransferlabError, match="autoencoder learns a representation.*transferlab probe"):
        method.predict(torch.zeros(2, 8))


def test_the_default_method_contract():
    method = make("dann")
    x = blobs(4, seed=5)[0]
    method.eval()
    assert method.encoder_for("target") is method.encoder and method.encoder_for("source") is method.encoder
    assert torch.equal(method.representation(x, "target"), method.encoder(x))
    assert torch.equal(method.predict_on(x, "source"), method.predict(x))
    assert method.graph_phase(RecordingContext(method)) is None
    assert method.hparams.name == "dann"
    (params, scale), = make("source_only").optimizers()["main"].groups
    assert scale == 1.0 and len(list(params)) == len(list(make("source_only").parameters()))


def test_an_unregistered_method_is_named_after_its_class():
    from transferlab.methods import Method

    class MyMethod(Method):
        pass

    assert MyMethod(Encoder(Trunk(), 8), 2).hparams.name == "mymethod"


def test_features_split_dict_inputs_at_the_source_batch_size():
    class DictEncoder(nn.Module):
        out_features = 3

        def forward(self, inputs):
            return inputs["a"][:, :3] * inputs["mask"]

    method = METHODS.get("dann")(DictEncoder(), 2)
    x_s = {"a": torch.randn(5, 4), "mask": torch.ones(5, 1)}
    x_t = {"a": torch.randn(3, 4), "mask": torch.ones(3, 1)}
    f_s, f_t = method.features(x_s, x_t)
    assert torch.equal(f_s, x_s["a"][:, :3]) and torch.equal(f_t, x_t["a"][:, :3])


@pytest.mark.parametrize("name, stage, keys", [
    ("source_only", 1, {"cls_loss"}),
    ("dann", 1, {"cls_loss", "transfer_loss", "domain_acc"}),
    ("cdan", 1, {"cls_loss", "transfer_loss", "domain_acc"}),
    ("cdan_e", 1, {"cls_loss", "transfer_loss", "domain_acc"}),
    ("mcd", 1, {"loss_a", "discrepancy_b", "discrepancy_c"}),
    ("adda", 1, {"cls_loss"}),
    ("adda", 2, {"d_loss", "g_loss", "domain_acc"}),
])
def test_each_method_logs_the_terms_it_optimised(name, stage, keys):
    """The logged names are what metrics.jsonl and the docs use; the logged values are the steps' own losses."""
    method = make(name)
    ctx = RecordingContext(method, lr=0.0, total_steps=2)
    ctx.step = stage - 1  # ADDA: step 1 of 2 is stage 2
    source, target = domains()
    out = method.update(*[source, target][: len(method.inputs)], ctx)
    assert set(out) == keys and all(not v.requires_grad for v in out.values())
    losses = [c.loss for c in ctx.calls]
    if name == "mcd":
        assert [out["loss_a"].item(), out["discrepancy_c"].item()] == pytest.approx([losses[0], losses[-1]])
    elif stage == 2:
        assert [out["d_loss"].item(), out["g_loss"].item()] == pytest.approx(losses)
    else:
        total = out["cls_loss"].item() + (out["transfer_loss"].item() if "transfer_loss" in out else 0.0)
        assert losses == pytest.approx([total])  # trade_off 1
    assert method.num_classes == 2


def test_adda_saves_whether_it_adapted_as_a_boolean():
    method = make("adda")
    assert method.state_dict()["adapted"].dtype == torch.bool and not method.state_dict()["adapted"]


# --- training curves (the slowest tests: last, so a mutation run stops at a cheaper failing test first) ---

@pytest.mark.parametrize("name", ["source_only", *DA_METHODS])
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
        torch.manual_seed(0)  # dropout in the MLP keeps the 1024-wide discriminator from memorising 128 samples
        method = make(name, encoder=Encoder(MLP(8, hidden=16), bottleneck_dim=0), trade_off=1.0)
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


# --- configurable discriminator and GRL schedule (issue #14) --------------------------------------

def discriminator_of(method):
    return method.discriminator if isinstance(method, ADDA) else method.domain_loss.discriminator


@pytest.mark.parametrize("name, d_in, batch_norm", [("dann", 8, True), ("cdan", 16, True), ("adda", 8, False)])
@pytest.mark.parametrize("hidden, widths", [
    ([], [1]),                # linear discriminator: Linear(in, 1), nothing else
    ([64, 32], [64, 32, 1]),  # one block per listed width, in order
    (16, [16, 16, 1]),        # an int is TLlib's two hidden layers of that width
])
def test_discriminator_hidden_is_an_int_or_a_list_of_widths(name, d_in, batch_norm, hidden, widths):
    discriminator = discriminator_of(make(name, discriminator_hidden=hidden))
    layers = list(discriminator.net)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip([d_in, *widths], widths))
    block = ["Linear", "BatchNorm1d" if batch_norm else "Identity", "ReLU"]
    assert [type(m).__name__ for m in layers] == block * (len(widths) - 1) + ["Linear"]
    if hidden == []:
        assert not any(isinstance(m, nn.BatchNorm1d) for m in discriminator.modules())
    assert discriminator(torch.randn(5, d_in)).shape == (5,)


def test_an_int_discriminator_keeps_the_old_state_dict_keys():
    """Checkpoints saved before the list form load: an int h is ``[h, h]`` under the same ``net.i`` keys."""
    from transferlab.models import DomainDiscriminator

    expected = {f"net.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    expected |= {f"net.{i}.{p}" for i in (1, 4) for p in ("weight", "bias", "running_mean", "running_var",
                                                            "num_batches_tracked")}
    assert set(DomainDiscriminator(8, 16).state_dict()) == expected
    assert DomainDiscriminator(8, [16, 16]).load_state_dict(DomainDiscriminator(8, 16).state_dict())


def logged_grl_lambda(method, progress):
    ctx = RecordingContext(method, lr=0.0)
    ctx.progress = progress
    method.update(*domains(), ctx)
    (label, _, value), = ctx.scalars
    assert label == "grl_lambda"
    return value


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e"])
def test_constant_grl_schedule_holds_lambda_at_grl_max(name):
    constant = make(name, grl_schedule="constant", grl_max=0.3)
    assert logged_grl_lambda(constant, 0.0) == pytest.approx(0.3)
    assert logged_grl_lambda(constant, 0.9) == pytest.approx(0.3)
    ramp = make(name, grl_schedule="ramp", grl_max=0.3)
    assert logged_grl_lambda(ramp, 0.0) == 0.0
    assert logged_grl_lambda(ramp, 0.9) == pytest.approx(0.3 * (2 / (1 + math.exp(-10 * 0.9)) - 1))
    assert make(name).hparams.grl_schedule == "ramp"


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e"])
def test_grl_schedule_and_discriminator_hidden_are_validated(name):
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method\.grl_schedule: Input should be 'ramp' or 'constant' \(got 'bogus'\)"):
        make(name, grl_schedule="bogus")
    with pytest.raises(ConfigError, match=r"method\.discriminator_hidden"):
        make(name, discriminator_hidden=[64, 0])
