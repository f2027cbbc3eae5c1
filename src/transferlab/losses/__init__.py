"""Stand-alone losses: each is an ``nn.Module`` or function that works in any training loop."""

from .adversarial import (
    ConditionalDomainAdversarialLoss, DomainAdversarialLoss, MultilinearMap, binary_domain_loss,
    classifier_discrepancy, entropy,
)

__all__ = [
    "ConditionalDomainAdversarialLoss", "DomainAdversarialLoss", "MultilinearMap", "binary_domain_loss",
    "classifier_discrepancy", "entropy",
]
