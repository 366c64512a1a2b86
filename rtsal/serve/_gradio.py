"""Gradio, the demo's one optional dependency (rtsal's ``serve`` extra): found without being
imported (importing it takes seconds), or imported; missing, it is one line either way."""

from __future__ import annotations

from typing import Any

from rtsal.errors import RtsalError

GRADIO_MISSING = "rtsal serve needs Gradio: pip install 'rtsal[serve]'"


def check_gradio() -> None:
    """Gradio is installed (found, not imported)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RtsalError(GRADIO_MISSING)


def import_gradio() -> Any:
    """The ``gradio`` module."""
    try:
        import gradio
    except ImportError:
        raise RtsalError(GRADIO_MISSING) from None
    return gradio
