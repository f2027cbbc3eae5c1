"""Stand-alone losses: each is an ``nn.Module`` or function that works in any training loop."""

from .adversarial import (
    ConditionalDomainAdversarialLoss, DomainAdversarialLoss, MultilinearMap, binary_domain_loss, class_balance,
    classifier_discrepancy, entropy,
)
from .selfsupervised import NTXentLoss, kl_sparsity, nt_xent

__all__ = [
    "NTXentLoss", "kl_sparsity", "nt_xent",
    "ConditionalDomainAdversarialLoss", "DomainAdversarialLoss", "MultilinearMap", "binary_domain_loss",
    "class_balance", "classifier_discrepancy", "entropy",
]
