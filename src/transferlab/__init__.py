"""transferlab: transfer learning and domain adaptation, with diagnostics.

Layers, bottom-up: :mod:`transferlab.data` -> :mod:`transferlab.models` -> :mod:`transferlab.losses` /
:mod:`transferlab.methods` -> :mod:`transferlab.engine` -> :mod:`transferlab.experiment` and the CLI.
"""

from . import data, losses, methods, models, schedules
from .config import Config, load_config
from .engine import Trainer
from .errors import TransferlabError

__version__ = "0.1.0"
__all__ = ["data", "losses", "methods", "models", "schedules", "Config", "load_config", "Trainer", "TransferlabError"]
