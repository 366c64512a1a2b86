"""rtsal: real-time saliency for black-box image classifiers (Dabkowski & Gal, 2017)."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("rtsal")

from rtsal.blackbox import (  # noqa: E402
    BlackBox,
    create_black_box,
    is_black_box,
    list_black_boxes,
)
from rtsal.classes import ClassResolver  # noqa: E402
from rtsal.errors import RtsalError  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "BlackBox",
    "ClassResolver",
    "RtsalError",
    "create_black_box",
    "is_black_box",
    "list_black_boxes",
]
