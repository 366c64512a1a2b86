"""``rtsal serve``: the web demo. A photo, or the browser's camera, explained as the user watches
(:mod:`~rtsal.serve.app`, what the page shows, as plain Python; :mod:`~rtsal.serve.page`, the
page; :mod:`~rtsal.serve.server`, serving it; :mod:`~rtsal.serve.uploads`, reading uploaded
files and deleting them after use). Gradio is imported when the page is built, not before
(``pip install 'rtsal[serve]'``); ``import rtsal.serve`` imports neither it nor torch.

It may import every package below the batch runs (foundation, engine, registry, data, methods,
metrics, inference, training, tools); only the command line imports it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "SaliencyDemo": "rtsal.serve.app",
    "build_app": "rtsal.serve.page",
    "serve": "rtsal.serve.server",
}

if TYPE_CHECKING:
    from rtsal.serve.app import SaliencyDemo
    from rtsal.serve.page import build_app
    from rtsal.serve.server import serve

__all__ = ["SaliencyDemo", "build_app", "serve"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtsal.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
