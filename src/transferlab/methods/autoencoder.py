"""Autoencoders for self-taught learning — Raina et al., "Self-taught Learning: Transfer Learning from
Unlabeled Data", ICML 2007; the UFLDL sparse autoencoder (Ng, CS294A notes 2011); the denoising
autoencoder (Vincent et al., ICML 2008).

    h = σ(W_c F(x̃) + b_c)            code (sigmoid units)
    x̂ = G(h)                          decoder: MLP back to the input's shape
    L = 1/B Σ_i ½‖x̂_i − x_i‖² + β Σ_j KL(ρ ‖ ρ̂_j)

x̃ = x for the plain and sparse autoencoders; the denoising autoencoder corrupts x with masking
noise (a fraction of the pixels set to black) or Gaussian noise and reconstructs the clean x.
The encoder F is what transfers (``model.encoder_init``); the code layer and decoder, like
SimCLR's projection head, are pretext-only parts.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import nn

from ..errors import ConfigError
from ..losses import kl_sparsity
from .base import METHODS, Method, MethodConfig


@METHODS.register("autoencoder")
class Autoencoder(Method):
    """Reconstruct unlabelled inputs through a sigmoid code layer: ½‖x̂ − x‖² (Raina et al. 2007)."""

    inputs = {"source": False}

    class Config(MethodConfig):
        code_dim: PositiveInt = 256
        decoder_hidden: PositiveInt = 512
        noise: Literal["none", "mask", "gaussian"] = "none"
        """Input corruption of the denoising autoencoder."""
        noise_level: float = Field(0.0, ge=0.0)
        """Masking: fraction of pixels set to black; Gaussian: the noise's std in normalised units."""
        sparsity_weight: NonNegativeFloat = 0.0
        """β of the KL sparsity penalty (0: no penalty)."""
        sparsity_target: float = Field(0.05, gt=0.0, lt=1.0)
        """ρ, the target mean activation of each code unit."""

    def __init__(self, encoder: nn.Module, num_classes: int, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        h, spec = self.hparams, self.input_spec
        if spec is None:
            raise ConfigError(f"{h.name} needs the input shape to build its decoder (pass input_spec=InputSpec(...))")
        self.code = nn.Sequential(nn.Linear(encoder.out_features, h.code_dim), nn.Sigmoid())
        self.decoder = nn.Sequential(nn.Linear(h.code_dim, h.decoder_hidden), nn.ReLU(inplace=True),
                                     nn.Linear(h.decoder_hidden, math.prod(spec.shape)))
        # Black (0 in pixel space) in normalised units: the value masking noise writes.
        black = [-m / s for m, s in zip(spec.mean, spec.std)] if spec.kind == "image" else [0.0]
        self.register_buffer("black", torch.tensor(black).view(1, -1, *([1] * (len(spec.shape) - 1))),
                             persistent=False)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x̃: masking noise drops whole pixels of an image (every channel) or single entries of a feature vector."""
        h = self.hparams
        if h.noise == "mask":
            shape = (x.shape[0], 1, *x.shape[2:]) if self.input_spec.kind == "image" else x.shape
            dropped = torch.rand(shape, device=x.device) < h.noise_level
            return torch.where(dropped, self.black.to(x.dtype), x)
        if h.noise == "gaussian":
            return x + h.noise_level * torch.randn_like(x)
        return x

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂ in the input's shape, code activations h)."""
        code = self.code(self.encoder(self.corrupt(x) if self.training else x))
        return self.decoder(code).view(x.shape), code

    def update(self, source, ctx):
        x = source.x
        x_hat, code = self.reconstruct(x)
        recon = 0.5 * (x_hat.float() - x.float()).pow(2).flatten(1).sum(1).mean()
        losses = {"recon_loss": recon.detach()}
        loss = recon
        if self.hparams.sparsity_weight > 0:
            sparsity = kl_sparsity(code, self.hparams.sparsity_target)
            loss = loss + self.hparams.sparsity_weight * sparsity
            losses["sparsity"] = sparsity.detach()
            losses["mean_activation"] = code.detach().float().mean()
        ctx.backward_and_step(loss, "main")
        return losses



@METHODS.register("denoising_autoencoder")
class DenoisingAutoencoder(Autoencoder):
    """Reconstruct x from a copy with 30% of its pixels masked (Vincent et al. 2008)."""

    class Config(Autoencoder.Config):
        noise: Literal["none", "mask", "gaussian"] = "mask"
        noise_level: float = Field(0.3, ge=0.0)


@METHODS.register("sparse_autoencoder")
class SparseAutoencoder(Autoencoder):
    """Reconstruction + β·Σ KL(ρ‖ρ̂_j) with UFLDL's self-taught-learning values β = 3, ρ = 0.1."""

    class Config(Autoencoder.Config):
        sparsity_weight: NonNegativeFloat = 3.0
        sparsity_target: float = Field(0.1, gt=0.0, lt=1.0)
