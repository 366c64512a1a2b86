"""Explanation methods behind one interface, fed by the ``register_methods`` hook.

A method is built for one black box: ``create_method(name, black_box, **options)``; then
``method.explain(images, classes)`` takes images in [0, 1] (B, C, H, W) and class ids (B,) and
returns masks in [0, 1] (B, 1, H, W); :func:`check_method_output` holds every method (a
plugin's too) to that. Every metric works on every method.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from rtsal.errors import RtsalError, UnknownNameError
from rtsal.registry.plugins import cached_registry, collect


class ExplanationMethod(Protocol):
    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor: ...


@dataclass
class MethodEntry:
    name: str
    factory: Callable[..., ExplanationMethod]
    summary: str
    plugin: str


def _collect() -> dict[str, MethodEntry]:
    found: dict[str, MethodEntry] = {}

    def add(
        plugin: str, name: str, factory: Callable[..., ExplanationMethod], *, summary: str = ""
    ) -> None:
        found.setdefault(name.lower(), MethodEntry(name, factory, summary, plugin))

    collect("register_methods", add)
    return found


def _registry() -> dict[str, MethodEntry]:
    """Lower-cased name -> method; built once per plugin manager."""
    return cached_registry("methods", _collect)


def list_methods(pattern: str = "*") -> list[MethodEntry]:
    return [e for e in _registry().values() if fnmatch.fnmatch(e.name, pattern)]


def create_method(name: str, black_box: Any, **options: Any) -> ExplanationMethod:
    entries = _registry()
    entry = entries.get(name.lower())
    if entry is None:
        raise UnknownNameError("method", name, [e.name for e in entries.values()])
    try:
        return entry.factory(black_box, **options)
    except TypeError as exc:  # an option the method does not take
        raise RtsalError(f"method {entry.name!r}: {exc}") from None


def check_method_output(
    maps: Any, batch: int, size: tuple[int, int] | torch.Size, name: str
) -> torch.Tensor:
    """A method's ``explain`` output as masks (``batch``, 1, *size) in [0, 1], or an error
    naming the method.

    Maps of shape (B, 1, h, w) or (B, h, w) at any resolution are resized to ``size``
    (bilinearly) and clamped to [0, 1]; a wrong batch size, another number of dimensions, more
    than one channel or non-finite values raise :class:`RtsalError`.
    """
    expected = "expected (B, 1, H, W) or (B, H, W) with finite values"
    if not isinstance(maps, torch.Tensor):
        raise RtsalError(f"method {name!r} returned a {type(maps).__name__}: {expected}")
    shape = tuple(maps.shape)
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() != 4 or maps.shape[0] != batch or maps.shape[1] != 1 or 0 in maps.shape[2:]:
        raise RtsalError(
            f"method {name!r} returned shape {shape} for a batch of {batch}: {expected}"
        )
    maps = maps.float()
    bad = int((~torch.isfinite(maps)).sum())
    if bad:
        raise RtsalError(f"method {name!r} returned {bad} non-finite values: {expected}")
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps.clamp(0, 1)


def parse_method_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["steps=50", "target_layer=layer4"]`` -> ``{"steps": 50, "target_layer": "layer4"}``;
    values are read as JSON when they parse (numbers, booleans), else kept as strings."""
    import json

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RtsalError(f"--method-option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options
