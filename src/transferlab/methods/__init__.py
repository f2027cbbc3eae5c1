"""Methods: one file each, one contract (:class:`Method`), looked up by name in :data:`METHODS`."""

from .adda import ADDA
from .autoencoder import Autoencoder, DenoisingAutoencoder, SparseAutoencoder
from .base import METHODS, InputSpec, Method, MethodConfig, OptimizerRequest, StepContext
from .cdan import CDAN, CDANE
from .ctc import CTC, CTCTask
from .dann import DANN
from .mcd import MCD
from .simclr import SimCLR
from .supervised import LinearProbe, SourceOnly, Supervised

__all__ = [
    "METHODS", "InputSpec", "Method", "MethodConfig", "OptimizerRequest", "StepContext",
    "ADDA", "Autoencoder", "DenoisingAutoencoder", "SparseAutoencoder", "SimCLR", "CDAN", "CDANE", "CTC", "CTCTask", "DANN", "LinearProbe", "MCD", "SourceOnly", "Supervised",
]
