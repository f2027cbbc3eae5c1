"""Where prepared datasets live.

The data root is, in order: an explicit argument (the CLI's ``--data-root``), the environment
variable ``TRANSFERLAB_DATA``, or ``~/.cache/transferlab/data``. Its layout is one folder per
dataset, ``<root>/<name>/<part>.npz`` (see docs/data.md), the same layout that downloads write.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TRANSFERLAB_DATA"
DEFAULT_ROOT = Path("~/.cache/transferlab/data")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data root from an explicit value, ``$TRANSFERLAB_DATA`` or the default cache."""
    if root is None or str(root) == "":
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser()
