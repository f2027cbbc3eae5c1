"""transferlab: transfer learning and domain adaptation, with diagnostics.

Layers, bottom-up (imports only point down; tests/test_layers.py enforces it): :mod:`transferlab.errors`,
:mod:`transferlab.validation` -> :mod:`transferlab.registry` -> :mod:`transferlab.config`, :mod:`transferlab.schedules` ->
:mod:`transferlab.data` -> :mod:`transferlab.models` -> :mod:`transferlab.losses` (and the pure
diagnostics, :mod:`transferlab.analysis`) -> :mod:`transferlab.methods` -> :mod:`transferlab.engine` ->
:mod:`transferlab.experiment` -> :mod:`transferlab.protocol` -> :mod:`transferlab.reports` -> the CLI.
"""

from . import data, losses, methods, models, schedules
from .config import Config
from .engine import Trainer
from .errors import TransferlabError
from .experiment import load_config

__version__ = "0.1.0"
__all__ = ["data", "losses", "methods", "models", "schedules", "Config", "load_config", "Trainer", "TransferlabError"]
