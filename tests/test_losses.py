import math

import pytest
import torch

from transferlab.losses import (
    ConditionalDomainAdversarialLoss, DomainAdversarialLoss, MultilinearMap, binary_domain_loss, class_balance,
    classifier_discrepancy, entropy,
)


def test_binary_domain_loss_hand_computed():
    # D outputs logit 0 everywhere -> p = 0.5 -> BCE = log 2 for both halves.
    loss, acc = binary_domain_loss(torch.zeros(4), torch.zeros(4))
    assert loss.item() == pytest.approx(math.log(2))
    # source logits +2 (right), target logits +2 (wrong): ½(log(1+e^-2) + log(1+e^2)).
    loss, acc = binary_domain_loss(torch.full((3,), 2.0), torch.full((3,), 2.0))
    assert loss.item() == pytest.approx(0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))))
    assert acc.item() == pytest.approx(0.5)


def test_entropy_of_uniform_and_one_hot():
    assert entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_classifier_discrepancy_hand_computed():
    a = torch.tensor([[0.0, 0.0]])          # softmax = (0.5, 0.5)
    b = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
    assert classifier_discrepancy(a, b).item() == pytest.approx(0.25)
    assert classifier_discrepancy(a, a).item() == 0.0


def test_multilinear_map_is_outer_product():
    f = torch.tensor([[1.0, 2.0]])
    g = torch.tensor([[0.25, 0.75, 0.0]])
    out = MultilinearMap(2, 3, randomized=False)(f, g)
    assert torch.allclose(out, torch.tensor([[0.25, 0.5, 0.75, 1.5, 0.0, 0.0]]))
    assert MultilinearMap(2, 3, randomized=True, randomized_dim=16)(f, g).shape == (1, 16)


def test_dann_loss_reverses_gradient_into_features():
    torch.manual_seed(0)
    disc = torch.nn.Linear(3, 1)
    loss_fn = DomainAdversarialLoss(lambda h: disc(h).squeeze(1))
    f_s = torch.randn(4, 3, requires_grad=True)
    f_t = torch.randn(4, 3, requires_grad=True)
    loss, _ = loss_fn(f_s, f_t, grl_coeff=0.7)
    loss.backward()
    # Same loss without reversal: gradients w.r.t. features must be exactly -1/0.7 times ours.
    f_s2, f_t2 = f_s.detach().clone().requires_grad_(), f_t.detach().clone().requires_grad_()
    logits = disc(torch.cat([f_s2, f_t2])).squeeze(1)
    plain, _ = binary_domain_loss(logits[:4], logits[4:])
    plain.backward()
    assert torch.allclose(f_s.grad, -0.7 * f_s2.grad, atol=1e-7)
    assert torch.allclose(f_t.grad, -0.7 * f_t2.grad, atol=1e-7)


def _discriminator_logits(n):
    """A stand-in discriminator that ignores its input and returns trainable logits, so the gradient of the loss
    with respect to each logit shows the weight the loss gives that sample."""
    z = torch.zeros(n, requires_grad=True)
    return z, lambda h: z + 0 * h.sum(1)


def test_cdan_e_weights_each_sample_by_one_plus_exp_minus_entropy_normalised_to_mean_one():
    torch.manual_seed(0)
    logits_s = torch.tensor([[10.0, -10.0], [0.0, 0.0]])  # confident, uncertain
    logits_t = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    f = torch.randn(2, 2)
    z, disc = _discriminator_logits(4)
    loss = ConditionalDomainAdversarialLoss(disc, MultilinearMap(2, 2, randomized=False), entropy_conditioning=True)
    value, _ = loss(logits_s, f, logits_t, f)
    value.backward()
    # With D's logits at 0, d loss / d z_i = w_i · (σ(0) − label_i) / (2 · 2): |grad_i| ∝ w_i.
    p = 1 / (1 + math.exp(-2.0))  # softmax([2, 0])[0]
    h = torch.tensor([0.0, math.log(2), -(p * math.log(p) + (1 - p) * math.log(1 - p)), math.log(2)])  # entropies, by hand
    w = 1 + torch.exp(-h)
    w = w / w.mean()
    assert torch.allclose(z.grad.abs(), w * 0.5 / 4, atol=1e-6)
    assert z.grad[0].abs() > z.grad[1].abs()  # the confident source sample counts more
    assert value.item() == pytest.approx(math.log(2), rel=1e-5)  # mean weight 1: at D = 0 the loss is still log 2


def test_cdan_without_entropy_conditioning_weights_every_sample_equally():
    z, disc = _discriminator_logits(4)
    loss = ConditionalDomainAdversarialLoss(disc, MultilinearMap(2, 2, randomized=False))
    value, _ = loss(torch.tensor([[10.0, -10.0], [0.0, 0.0]]), torch.randn(2, 2), torch.zeros(2, 2), torch.randn(2, 2))
    value.backward()
    assert torch.allclose(z.grad.abs(), torch.full((4,), 0.5 / 4))


def test_cdan_loss_reverses_gradient_into_features_and_does_not_train_the_classifier():
    torch.manual_seed(0)
    disc = torch.nn.Linear(6, 1)
    multilinear = MultilinearMap(2, 3, randomized=False)
    loss_fn = ConditionalDomainAdversarialLoss(lambda h: disc(h).squeeze(1), multilinear)
    f_s, f_t = torch.randn(4, 2, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    logits_s, logits_t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    loss, _ = loss_fn(logits_s, f_s, logits_t, f_t, grl_coeff=0.4)
    loss.backward()
    assert logits_s.grad is None and logits_t.grad is None  # g = softmax(logits) is detached inside T
    f2 = torch.cat([f_s, f_t]).detach().requires_grad_()
    g = torch.softmax(torch.cat([logits_s, logits_t]).detach(), 1)
    d = disc(multilinear(f2, g)).squeeze(1)
    plain, _ = binary_domain_loss(d[:4], d[4:])
    plain.backward()
    assert torch.allclose(torch.cat([f_s.grad, f_t.grad]), -0.4 * f2.grad, atol=1e-7)


def test_weighted_binary_domain_loss_hand_computed():
    # source logit 0 (BCE log 2) weighted 3, target logit 0 weighted 1: ½(3 log 2 + log 2) = 2 log 2
    loss, acc = binary_domain_loss(torch.zeros(1), torch.zeros(1), torch.tensor([3.0]), torch.tensor([1.0]))
    assert loss.item() == pytest.approx(2 * math.log(2))
    # a target logit of exactly 0 counts as "target" (accuracy ≤ 0), a source logit of 0 does not
    assert acc.item() == pytest.approx(0.5)
    _, acc = binary_domain_loss(torch.tensor([1.0, -1.0]), torch.tensor([-3.0, 0.5]))
    assert acc.item() == pytest.approx(0.5 * (0.5 + 0.5))


def test_randomized_multilinear_map_is_the_scaled_product_of_two_random_projections():
    torch.manual_seed(0)
    m = MultilinearMap(3, 2, randomized=True, randomized_dim=5)
    f, g = torch.randn(4, 3), torch.softmax(torch.randn(4, 2), 1)
    assert torch.allclose(m(f, g), (f @ m.r_f) * (g @ m.r_g) / math.sqrt(5))
    assert m.out_features == 5 and MultilinearMap(3, 2, randomized=False).out_features == 6
    assert {"r_f", "r_g"} <= set(m.state_dict())  # saved with the model: a resumed run uses the same projections


def test_class_balance_is_log_k_for_a_balanced_batch_and_grows_as_it_collapses():
    balanced = torch.tensor([[5.0, -5.0, 0.0], [-5.0, 5.0, 0.0], [0.0, -5.0, 5.0]])
    b = class_balance(balanced).item()
    p_mean = torch.softmax(balanced, 1).mean(0)
    assert b == pytest.approx(-(torch.log(p_mean + 1e-6)).mean().item(), rel=1e-6)
    assert class_balance(torch.zeros(4, 3)).item() == pytest.approx(math.log(3), rel=1e-5)  # uniform mean
    collapsed = torch.tensor([[9.0, 0.0, 0.0]] * 3)
    assert class_balance(collapsed).item() > b > math.log(3) - 1e-3
    # per-sample confidence is not penalised: three confident predictions of different classes ≈ log K
    assert class_balance(torch.eye(3) * 30).item() == pytest.approx(math.log(3), rel=1e-4)


def test_nt_xent_module_uses_its_temperature_and_refuses_mismatched_views():
    from transferlab.losses import NTXentLoss, nt_xent

    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    assert NTXentLoss(0.2)(z1, z2).item() == pytest.approx(nt_xent(z1, z2, 0.2).item())
    assert NTXentLoss()(z1, z2).item() == pytest.approx(nt_xent(z1, z2, 0.5).item())
    assert nt_xent(z1, z2).item() == pytest.approx(nt_xent(z1, z2, 0.5).item())  # the paper's CIFAR-10 τ
    assert nt_xent(z1, z2, 0.2).item() != pytest.approx(nt_xent(z1, z2, 0.5).item())
    with pytest.raises(ValueError, match=r"two \(N, d\) views of equal shape; got \(6, 4\) and \(5, 4\)"):
        nt_xent(z1, z2[:5])
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(z1.flatten(), z2.flatten())


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1])
def test_kl_sparsity_refuses_a_target_outside_zero_one(target):
    from transferlab.losses import kl_sparsity

    with pytest.raises(ValueError, match=r"sparsity target must lie in \(0, 1\)"):
        kl_sparsity(torch.full((4, 3), 0.5), target)


def test_kl_sparsity_defaults_to_rho_0_05():
    from transferlab.losses import kl_sparsity

    a = torch.rand(16, 4)
    assert kl_sparsity(a).item() == pytest.approx(kl_sparsity(a, 0.05, 1e-6).item())
    assert kl_sparsity(torch.full((4, 3), 0.05)).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_sparsity_stays_finite_for_saturated_units():
    from transferlab.losses import kl_sparsity

    value = kl_sparsity(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), 0.05)
    rho, eps = 0.05, torch.tensor(1e-6)  # ρ̂ clamped to [eps, 1 − eps], in float32 as the loss computes it
    expected = sum(rho * math.log(rho / r) + (1 - rho) * math.log((1 - rho) / (1 - r)) for r in (eps.item(), (1 - eps).item()))
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_the_adversarial_losses_default_to_lambda_one_and_the_randomized_map_to_1024_dimensions():
    torch.manual_seed(0)
    disc = torch.nn.Linear(3, 1)
    loss = DomainAdversarialLoss(lambda h: disc(h).squeeze(1))
    f_s = torch.randn(4, 3, requires_grad=True)
    assert MultilinearMap(3, 2, randomized=True).out_features == 1024
    torch.manual_seed(1)
    f_t = torch.randn(4, 3)
    grads = []
    for args in ((), (1.0,)):
        f_s.grad = None
        loss(f_s, f_t, *args)[0].backward()
        grads.append(f_s.grad.clone())
    assert torch.allclose(grads[0], grads[1])
    cdan = ConditionalDomainAdversarialLoss(lambda h: disc(h[:, :3]).squeeze(1), MultilinearMap(3, 2, randomized=False))
    logits = torch.randn(4, 2)
    grads = []
    for args in ((), (1.0,)):
        f_s.grad = None
        cdan(logits, f_s, logits, f_t, *args)[0].backward()
        grads.append(f_s.grad.clone())
    assert torch.allclose(grads[0], grads[1])


def test_cdan_conditions_bf16_features_in_bf16():
    """Under bf16 autocast the features arrive in bf16: the softmax weights must follow, or T(f, g) fails."""
    torch.manual_seed(0)
    multilinear = MultilinearMap(3, 2, randomized=False)
    disc = torch.nn.Linear(6, 1).to(torch.bfloat16)
    loss = ConditionalDomainAdversarialLoss(lambda h: disc(h).squeeze(1), multilinear)
    f = torch.randn(4, 3, dtype=torch.bfloat16)
    value, _ = loss(torch.randn(4, 2), f, torch.randn(4, 2), f)
    assert torch.isfinite(value)
