"""Engine: the training loop, checkpoints and metrics."""

from .checkpoint import CheckpointManager, prepare_run_dir
from .trainer import Trainer, TrainingDiverged, device_description

__all__ = ["CheckpointManager", "prepare_run_dir", "Trainer", "TrainingDiverged", "device_description"]
