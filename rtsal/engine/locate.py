"""Where a masking model comes from: a folder, ``hf:ORG/NAME`` on the Hugging Face Hub, or the
model rtsal ships for a black box, opened once as a :class:`~rtsal.engine.checkpoint.Checkpoint`
(description read and checked; nothing built, no other file opened)."""

from __future__ import annotations

from pathlib import Path

from rtsal.engine.checkpoint import (
    MASKER_FORMAT,
    Checkpoint,
    expect_format,
    read_checkpoint_folder,
    shipped_checkpoint,
)
from rtsal.engine.hub import download_checkpoint, is_hub_id
from rtsal.errors import CheckpointError

DEFAULT_BLACK_BOX = "efficientnet_lite0"  # the black box of Explainer() with no arguments


def open_checkpoint(
    location: str | Path | Checkpoint | None = None,
    *,
    black_box: str | None = None,
    expected_format: str = MASKER_FORMAT,
) -> Checkpoint:
    """The checkpoint at ``location``; None is the masking model rtsal ships for ``black_box``
    (a registered name; default EfficientNet-Lite0), refused in one line when there is none."""
    if isinstance(location, Checkpoint):
        return expect_format(location, expected_format)
    if location is None:
        name = black_box or DEFAULT_BLACK_BOX
        folder = shipped_checkpoint(name)
        if folder is None:
            raise CheckpointError(
                f"rtsal ships no masking model for black box {name!r}: train one (rtsal train "
                f"--blackbox {name} --data PHOTOS --out DIR) and pass --checkpoint DIR"
            )
        ckpt = read_checkpoint_folder(folder, location=str(folder))
    elif is_hub_id(location):
        folder = download_checkpoint(str(location))
        # Hub files in the local cache are links into the repository's blobs folder
        root = folder.parents[1] if folder.parent.name == "snapshots" else folder
        ckpt = read_checkpoint_folder(folder, location=str(location), root=root)
    else:
        ckpt = read_checkpoint_folder(location)
    return expect_format(ckpt, expected_format)


__all__ = ["DEFAULT_BLACK_BOX", "open_checkpoint"]
