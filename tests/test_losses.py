import math

import pytest
import torch

from transferlab.losses import (
    ConditionalDomainAdversarialLoss, DomainAdversarialLoss, MultilinearMap, binary_domain_loss,
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


def test_cdan_entropy_weights_favour_confident_samples():
    torch.manual_seed(0)

    def disc(h):
        return torch.zeros(len(h), requires_grad=True)

    loss = ConditionalDomainAdversarialLoss(disc, MultilinearMap(2, 2, randomized=False), entropy_conditioning=True)
    logits_s = torch.tensor([[10.0, -10.0], [0.0, 0.0]])  # confident, uncertain
    logits_t = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    f = torch.randn(2, 2)
    value, _ = loss(logits_s, f, logits_t, f)
    # All logits 0 -> each BCE term is log 2 whatever the weights (weights average to 1).
    assert value.item() == pytest.approx(math.log(2), rel=1e-5)
    w = 1 + torch.exp(-entropy(torch.cat([logits_s, logits_t])))
    w = w / w.sum() * 4
    assert w[0] > w[1] and w.mean().item() == pytest.approx(1.0)
