"""Self-supervised pretext losses, each stand-alone: SimCLR's NT-Xent and the sparse autoencoder's KL
sparsity penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent — Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are two views of sample ``i`` (the positive pair); every
    other of the 2N rows is a negative. With s = cosine similarity and τ the temperature,

        ℓ(i, j) = −log( exp(s(z_i, z_j)/τ) / Σ_{k≠i} exp(s(z_i, z_k)/τ) )
        L = 1/(2N) · Σ_i [ℓ(i, i+N) + ℓ(i+N, i)]

    Computed in float32. Pass the projections of the whole global batch (gathered across
    processes) to use every process's samples as negatives.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent needs two (N, d) views of equal shape; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # k ≠ i
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


class NTXentLoss(nn.Module):
    """:func:`nt_xent` as a module with a fixed temperature."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature)


def kl_sparsity(activations: torch.Tensor, target: float = 0.05, eps: float = 1e-6) -> torch.Tensor:
    """The sparse autoencoder's penalty (Ng, "Sparse autoencoder", CS294A lecture notes, 2011):

        Σ_j KL(ρ ‖ ρ̂_j) = Σ_j [ρ log(ρ/ρ̂_j) + (1−ρ) log((1−ρ)/(1−ρ̂_j))]

    with ρ̂_j the mean activation of hidden unit j over the batch (activations in (0, 1), e.g. sigmoid
    outputs) and ρ the target ``target``. Zero exactly when every unit's mean activation equals ρ.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"the sparsity target must lie in (0, 1); got {target}")
    rho_hat = activations.float().mean(dim=0).clamp(eps, 1 - eps)
    rho = target
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()
