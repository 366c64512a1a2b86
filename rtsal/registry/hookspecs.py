"""Hook specifications: the contract between rtsal and its plugins.

Plugins implement these with ``@rtsal.hookimpl`` (the ``hookimpl`` marker defined here, re-exported
by the package) and are found through the ``rtsal`` entry-point group. rtsal's own providers
(timm, user code, classifier checkpoints) are plugins registered through the very same hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rtsal")
hookimpl = pluggy.HookimplMarker("rtsal")


@hookspec
def register_black_boxes(register: Any) -> None:
    """Register concrete, named black boxes.

    Call ``register(name, factory, *, aliases=(), summary="", input_size=None, num_classes=None)``
    once per black box. ``factory(**options)`` returns a :class:`rtsal.BlackBox`; options are
    ``pretrained: bool`` and ``weights: str | None``. Nothing is built until the box is asked for.
    """


@hookspec
def register_black_box_providers(register: Any) -> None:
    """Register a family of black boxes resolved by name pattern.

    Call ``register(provider)`` with an object that has ``prefix: str`` (``"timm"`` answers to
    ``timm:NAME``), ``claims(name) -> bool`` for unprefixed names it recognises,
    ``create(name, **options) -> BlackBox`` and ``names(pattern) -> list[str]`` for listings;
    optionally ``listings(pattern) -> list[BlackBoxListing]`` for richer rows.
    """


@hookspec
def register_methods(register: Any) -> None:
    """Register explanation methods.

    Call ``register(name, factory, *, summary="")``; ``factory(black_box, **options)`` returns an
    object whose ``explain(images, classes) -> masks`` takes images in [0, 1] of shape
    (B, C, H, W) and class ids (B,) and returns masks in [0, 1] of shape (B, 1, H, W). (B, H, W)
    and maps at a lower resolution are accepted (resized bilinearly, clamped to [0, 1]); any
    other shape, or a non-finite value, is one error line naming the method.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add sub-commands to the ``rtsal`` command line; ``app`` is the root ``typer.Typer``."""
