"""The black box a command explains or scores: ``--blackbox NAME`` (default: the one the
masking-model checkpoint names), built with ``--weights FILE`` or ``--no-pretrained`` when
given, so that every command works offline as ``rtsal train`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def chosen_black_box(
    name: str | None,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    pretrained: bool = True,
) -> Any:
    """The black box ``name`` with ``weights`` (a safetensors or tensor file) or, with
    ``pretrained=False``, random weights. Without a name, the checkpoint's black box (the
    shipped model's by default) with those weights; ``None`` when nothing is asked beyond the
    checkpoint's own black box, which the explainer then builds itself."""
    from rtsal.registry.blackbox import create_black_box

    given: dict[str, Any] = {}
    if weights is not None:
        given["weights"] = str(Path(weights).expanduser())
    if not pretrained:
        given["pretrained"] = False
    if name is not None:
        return create_black_box(name, **given)
    if not given:
        return None
    from rtsal.engine.checkpoint import checkpoint_black_box, default_checkpoint, read_meta

    meta, where = read_meta(checkpoint if checkpoint is not None else default_checkpoint())
    options = {**meta.get("black_box_options", {}), **given}
    return checkpoint_black_box({**meta, "black_box_options": options}, where)
