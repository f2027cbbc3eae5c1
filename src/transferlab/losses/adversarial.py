"""Adversarial alignment losses, each a stand-alone module usable in any training loop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.grl import reverse_gradient


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy H(softmax(logits)) in nats."""
    log_p = logits.float().log_softmax(1)
    return -(log_p.exp() * log_p).sum(dim=1)


def binary_domain_loss(logit_s: torch.Tensor, logit_t: torch.Tensor, weight_s: torch.Tensor | None = None,
                       weight_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """½·[BCE(D(source), 1) + BCE(D(target), 0)] on logits, and the discriminator's accuracy.

    Per-sample weights (CDAN+E) are optional. Computed in float32 from logits, so bf16 autocast is safe.
    """
    logit_s, logit_t = logit_s.float(), logit_t.float()
    loss = 0.5 * (
        F.binary_cross_entropy_with_logits(logit_s, torch.ones_like(logit_s), weight=weight_s)
        + F.binary_cross_entropy_with_logits(logit_t, torch.zeros_like(logit_t), weight=weight_t)
    )
    accuracy = 0.5 * ((logit_s > 0).float().mean() + (logit_t <= 0).float().mean())
    return loss, accuracy.detach()


class DomainAdversarialLoss(nn.Module):
    """DANN's transfer loss (Ganin et al., JMLR 2016, eq. 18):

        L_d = ½ E_s[−log D(R_λ(f))] + ½ E_t[−log(1 − D(R_λ(f)))]

    where R_λ is gradient reversal, so minimising L_d trains D to separate the domains and the
    feature extractor to confuse it. Returns ``(loss, discriminator accuracy)``.
    """

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, grl_coeff: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.discriminator(reverse_gradient(torch.cat([f_s, f_t]), grl_coeff))
        logit_s, logit_t = logits.split([len(f_s), len(f_t)])
        return binary_domain_loss(logit_s, logit_t)


class MultilinearMap(nn.Module):
    """CDAN's conditioning T(f, g) (Long et al., NeurIPS 2018, sec. 3.1).

    Full map ``T⊗(f, g) = f ⊗ g`` (flattened outer product, dim F·C); randomized map
    ``T⊙(f, g) = (R_f f) ⊙ (R_g g) / √d`` with fixed Gaussian R_f (F×d), R_g (C×d), used when F·C is
    large. The random matrices are buffers, so they are saved with the model and a resumed run
    uses the same ones.
    """

    def __init__(self, features_dim: int, num_classes: int, randomized: bool, randomized_dim: int = 1024) -> None:
        super().__init__()
        self.randomized = randomized
        if randomized:
            self.register_buffer("r_f", torch.randn(features_dim, randomized_dim))
            self.register_buffer("r_g", torch.randn(num_classes, randomized_dim))
            self.out_features = randomized_dim
        else:
            self.out_features = features_dim * num_classes

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.out_features)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class ConditionalDomainAdversarialLoss(nn.Module):
    """CDAN / CDAN+E transfer loss (Long et al., NeurIPS 2018, eq. 7-8):

        L = ½ E_s[w · −log D(T(f, g))] + ½ E_t[w · −log(1 − D(T(f, g)))],  g = softmax(logits)

    with gradient reversal before D, g detached inside T (as in the authors' code), and for
    CDAN+E the entropy-aware weight w(H(g)) = 1 + e^{−H(g)}, normalised to mean 1 over the batch,
    which favours confident (easy-to-transfer) examples. Without entropy conditioning w = 1.
    """

    def __init__(self, discriminator: nn.Module, multilinear: MultilinearMap, entropy_conditioning: bool = False) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.multilinear = multilinear
        self.entropy_conditioning = entropy_conditioning

    def forward(self, logits_s: torch.Tensor, f_s: torch.Tensor, logits_t: torch.Tensor, f_t: torch.Tensor,
                grl_coeff: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.cat([logits_s, logits_t])
        g = logits.float().softmax(1).detach().to(f_s.dtype)
        h = self.multilinear(torch.cat([f_s, f_t]), g)
        d = self.discriminator(reverse_gradient(h, grl_coeff))
        d_s, d_t = d.split([len(f_s), len(f_t)])
        if not self.entropy_conditioning:
            return binary_domain_loss(d_s, d_t)
        weight = 1.0 + torch.exp(-entropy(logits.detach()))
        weight = weight / weight.sum() * len(weight)
        w_s, w_t = weight.split([len(f_s), len(f_t)])
        return binary_domain_loss(d_s, d_t, w_s, w_t)


def class_balance(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The class-balance term of TLlib's MCD (``tllib.alignment.mcd.entropy``), over a batch of N predictions:

        b(p_1..p_N) = −1/K Σ_k log( 1/N Σ_i p_ik + eps ),   p = softmax(logits)

    the cross-entropy from the uniform distribution to the batch's mean prediction: smallest (log K) when the
    batch's predictions average to uniform, large when the batch collapses onto few classes. Unlike the
    per-sample :func:`entropy`, it does not reward confident predictions; it keeps them spread over classes."""
    mean_p = logits.float().softmax(1).mean(0)
    return -torch.log(mean_p + eps).mean()


def classifier_discrepancy(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """MCD's discrepancy (Saito et al., CVPR 2018, eq. 1): mean over samples and classes of |p1 − p2|,
    with p = softmax(logits)."""
    return (logits_1.float().softmax(1) - logits_2.float().softmax(1)).abs().mean()
