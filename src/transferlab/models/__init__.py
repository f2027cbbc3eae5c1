"""Models: backbones by name, encoders with bottleneck, heads, the domain discriminator and the GRL."""

from .adapters import ResidualAdapter, insert_adapters, parameter_counts
from .backbones import BACKBONES, DTN, MLP, LeNet, create_backbone, load_weights_file
from .grl import GradientReversal, reverse_gradient
from .heads import DomainDiscriminator, Encoder

__all__ = [
    "BACKBONES", "DTN", "MLP", "LeNet", "create_backbone", "load_weights_file",
    "ResidualAdapter", "insert_adapters", "parameter_counts", "GradientReversal", "reverse_gradient", "DomainDiscriminator", "Encoder",
]
