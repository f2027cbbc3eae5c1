"""``transferlab demo``: source-only vs DANN on the embedded digits -> digits_m shift (no download).

Source: scikit-learn's grey 8x8 digits. Target: *other* digits blended with colour photos, the
MNIST-M recipe. Both upsampled to 16x16 RGB, LeNet + 256-d bottleneck, batch 64+64, same seed and
iterations for both methods, so the only difference is the adversarial alignment.
"""

from __future__ import annotations

from typing import Any

from .config import Config, load_config

DEMO_CONFIG: dict[str, Any] = {
    "seed": 0,
    "data": {
        "source": {"name": "digits", "part": "train"},
        "target": {"name": "digits_m", "part": "train"},
        "test": {"name": "digits_m", "part": "test"},
        "image_size": 16,
        "channels": 3,
        "batch_size": 64,
    },
    "model": {"backbone": "lenet", "bottleneck_dim": 256},
    "method": {"name": "source_only", "bn_mode": "separate"},
    "optim": {"lr": 0.01},
    "train": {"iterations": 600, "eval_every": 0, "checkpoint_every": 0, "log_every": 50},
}


def demo_config(method: str, iterations: int, seed: int = 0) -> Config:
    return load_config(raw=DEMO_CONFIG, overrides=[f"method.name={method}", f"train.iterations={iterations}",
                                                   f"seed={seed}"])
