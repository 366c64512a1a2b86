"""rtsal: real-time saliency for black-box image classifiers (Dabkowski & Gal, 2017)."""

from __future__ import annotations

from rtsal._weights import load_state_dict
from rtsal.allocator import keep_freed_memory
from rtsal.blackbox import (
    BlackBox,
    create_black_box,
    is_black_box,
    list_black_boxes,
)
from rtsal.classes import ClassResolver
from rtsal.errors import RtsalError
from rtsal.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "hookimpl",
    "BlackBox",
    "ClassResolver",
    "RtsalError",
    "create_black_box",
    "is_black_box",
    "keep_freed_memory",
    "list_black_boxes",
    "load_state_dict",
    "timm_black_box",
]


def __getattr__(name: str):
    if name == "timm_black_box":  # imported lazily: it pulls in timm
        from rtsal.providers.timm_provider import timm_black_box

        return timm_black_box
    raise AttributeError(f"module 'rtsal' has no attribute {name!r}")
