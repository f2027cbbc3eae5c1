"""``transferlab demo``: source-only vs DANN on the embedded digits -> digits_m shift (no download).

The config ships inside the package (``transferlab/configs/embedded_digits.yaml``), so the demo
runs from any install; ``configs/digits/digits_digits_m_<method>.yaml`` build on the same file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import Config
from .experiment import load_config

EMBEDDED_CONFIG = Path(str(resources.files("transferlab") / "configs" / "embedded_digits.yaml"))


def demo_config(method: str, iterations: int | None = None, seed: int = 0) -> Config:
    overrides = [f"method.name={method}", f"seed={seed}"]
    if iterations is not None:
        overrides.append(f"train.iterations={iterations}")
    return load_config(EMBEDDED_CONFIG, overrides)
