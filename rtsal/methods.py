"""Explanation methods behind one interface, fed by the ``register_methods`` hook.

A method is built for one black box: ``create_method(name, black_box, **options)``; then
``method.explain(images, classes)`` takes images in [0, 1] (B, C, H, W) and class ids (B,) and
returns masks in [0, 1] (B, 1, H, W). Every metric works on every method.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rtsal.errors import UnknownNameError


class ExplanationMethod(Protocol):
    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor: ...


@dataclass
class MethodEntry:
    name: str
    factory: Callable[..., ExplanationMethod]
    summary: str
    plugin: str


def _collect() -> dict[str, MethodEntry]:
    from rtsal.plugins import get_plugin_manager

    found: dict[str, MethodEntry] = {}
    for impl in get_plugin_manager().hook.register_methods.get_hookimpls():

        def register(name: str, factory, *, summary: str = "", _plugin=impl.plugin_name) -> None:
            found.setdefault(name.lower(), MethodEntry(name, factory, summary, _plugin))

        impl.function(register=register)
    return found


def list_methods(pattern: str = "*") -> list[MethodEntry]:
    return [e for e in _collect().values() if fnmatch.fnmatch(e.name, pattern)]


def create_method(name: str, black_box: Any, **options: Any) -> ExplanationMethod:
    entries = _collect()
    entry = entries.get(name.lower())
    if entry is None:
        raise UnknownNameError("method", name, [e.name for e in entries.values()])
    return entry.factory(black_box, **options)
