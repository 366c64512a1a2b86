"""Where rtsal keeps what it derives once and reuses: decoded data sets, photo indexes, exported
models (``$RTSAL_CACHE``, else ``$XDG_CACHE_HOME/rtsal``, else ``~/.cache/rtsal``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("RTSAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rtsal"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
