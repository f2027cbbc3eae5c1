"""Methods: one file each, one contract (:class:`Method`), looked up by name in :data:`METHODS`."""

from .adda import ADDA
from .base import METHODS, Method, MethodConfig, OptimizerRequest, StepContext
from .cdan import CDAN, CDANE
from .dann import DANN
from .mcd import MCD
from .source_only import SourceOnly

__all__ = [
    "METHODS", "Method", "MethodConfig", "OptimizerRequest", "StepContext",
    "ADDA", "CDAN", "CDANE", "DANN", "MCD", "SourceOnly",
]
