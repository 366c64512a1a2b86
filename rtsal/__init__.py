"""rtsal: real-time saliency for black-box image classifiers (Dabkowski & Gal, 2017).

``rtsal.Explainer()`` is the shipped masking model, ready to explain images (docs/api.md).

The names below are imported on first use (most of them pull in torch), so ``import rtsal``,
``rtsal --version`` and ``rtsal --help`` stay fast, and the package root imports nothing of rtsal
itself: it is part of the foundation every package may import (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {  # public name -> the module that defines it
    "BlackBox": "rtsal.registry.blackbox",
    "ClassResolver": "rtsal.registry.classes",
    "Explainer": "rtsal.inference.explainer",
    "RtsalError": "rtsal.errors",
    "create_black_box": "rtsal.registry.blackbox",
    "explain_func": "rtsal.integrations.quantus",
    "hookimpl": "rtsal.registry.hookspecs",
    "is_black_box": "rtsal.registry.blackbox",
    "keep_freed_memory": "rtsal.allocator",
    "list_black_boxes": "rtsal.registry.blackbox",
    "load_state_dict": "rtsal.registry.weights",
    "timm_black_box": "rtsal.registry.providers.timm_provider",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these
    from rtsal.allocator import keep_freed_memory
    from rtsal.errors import RtsalError
    from rtsal.inference.explainer import Explainer
    from rtsal.integrations.quantus import explain_func
    from rtsal.registry.blackbox import BlackBox, create_black_box, is_black_box, list_black_boxes
    from rtsal.registry.classes import ClassResolver
    from rtsal.registry.hookspecs import hookimpl
    from rtsal.registry.providers.timm_provider import timm_black_box
    from rtsal.registry.weights import load_state_dict

__all__ = [
    "__version__",
    "hookimpl",
    "BlackBox",
    "ClassResolver",
    "Explainer",
    "RtsalError",
    "create_black_box",
    "explain_func",
    "is_black_box",
    "keep_freed_memory",
    "list_black_boxes",
    "load_state_dict",
    "timm_black_box",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtsal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next look-up does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
