"""What the library's calls take: images (PIL images, files, tensors in [0, 1]) and targets
(class indices, names, synsets, tensors), checked with one clear error each, and the resize
mode of a black box."""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rtsal.data.images import _to_rgb, load_image
from rtsal.errors import RtsalError

ImageLike = Image.Image | str | Path | torch.Tensor  # one image (a tensor: one or a batch)
Target = int | str | Sequence[int | str] | torch.Tensor | None  # None: each image's top-1

# Tensors are images in [0, 1]; values well outside (normalised or 0-255 images) are refused,
# while the small overshoot of a bicubic resize is let through.
_RANGE_SLACK = 0.25


class InputChecks:
    """Checks images and targets for a black box (its channels and classes)."""

    def __init__(self, black_box: Any, resolver: Any):
        self.black_box = black_box
        self.resolver = resolver

    def target_classes(self, target: Target, n: int) -> torch.Tensor | None:
        """``target`` (see :meth:`rtsal.Explainer.__call__`) as ``n`` class indices, or
        ``None`` for each image's top-1 class."""
        if target is None:
            return None
        if isinstance(target, torch.Tensor):
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise RtsalError(
                    f"target: a tensor of class indices must be integer; got {target.dtype}"
                )
            wanted = [self.class_index(t) for t in target.detach().reshape(-1).tolist()]
            if len(wanted) == 1:
                wanted *= n
        elif isinstance(target, (list, tuple)):
            wanted = [self.class_index(t) for t in target]
        else:
            wanted = [self.class_index(target)] * n
        if len(wanted) != n:
            raise RtsalError(
                f"target: {len(wanted)} classes for {n} images; give one class for all of them, "
                "or one per image"
            )
        return torch.tensor(wanted, dtype=torch.long)

    def class_index(self, selector: Any) -> int:
        if isinstance(selector, str):
            return self.resolver.resolve(selector)
        try:
            index = None if isinstance(selector, bool) else operator.index(selector)
        except TypeError:
            index = None
        if index is None:
            raise RtsalError(f"target: a class is an index, a name or a synset; got {selector!r}")
        return self.resolver.resolve(index)

    def picture(self, item: Any, name: str) -> Image.Image | torch.Tensor:
        """One image given to :meth:`__call__`: an RGB PIL image, or a checked (C, H, W)."""
        if isinstance(item, Image.Image):
            return _to_rgb(item)  # prepare() makes it grey for a one-channel black box
        if isinstance(item, (str, os.PathLike)):
            return load_image(item)  # a missing or broken file: DataError naming it
        if isinstance(item, torch.Tensor):
            return self.check_images(item, name, dims=(3,))[0]
        hint = (
            " (an (H, W, C) array: Image.fromarray(array), or a tensor via torch.from_numpy)"
            if type(item).__module__ == "numpy"
            else ""
        )
        raise RtsalError(
            f"{name}: an image is a PIL image, a file path or a float tensor (C, H, W); got "
            f"{type(item).__name__}{hint}"
        )

    def check_images(self, x: Any, name: str, dims: tuple[int, ...]) -> torch.Tensor:
        """``x`` as (B, C, H, W), or an RtsalError saying what is wrong with it."""
        c = self.black_box.in_channels
        shape = " or ".join({3: "(C, H, W)", 4: "(B, C, H, W)"}[d] for d in dims)
        if not isinstance(x, torch.Tensor):
            raise RtsalError(f"{name} must be a tensor {shape}; got {type(x).__name__}")
        if x.dim() not in dims or x.shape[-3] != c or min(x.shape[-2:]) < 1:
            raise RtsalError(
                f"{name} must have shape {shape} with C = {c} for black box "
                f"{self.black_box.name!r}; got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise RtsalError(
                f"{name} must be a float tensor in [0, 1]; got {x.dtype} (divide 8-bit images "
                "by 255)"
            )
        if x.numel():
            # one pass: min and max propagate NaN and hold any infinity, so finite bounds mean
            # finite values (NaN would slip through the range check below: every comparison
            # with it is false); the count is made only to say what is wrong
            lo, hi = (float(v) for v in torch.aminmax(x.detach()))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                bad = int(x.numel() - torch.isfinite(x).sum())
                raise RtsalError(
                    f"{name} must hold images in [0, 1]; got {bad} non-finite values (NaN or "
                    f"infinity) among {x.numel()}"
                )
            if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
                raise RtsalError(
                    f"{name} must hold images in [0, 1] (the black box normalises them itself); "
                    f"got values from {lo:.3g} to {hi:.3g}"
                )
        return x if x.dim() == 4 else x[None]


def resize_mode(resize: str, black_box: Any) -> str:
    """``auto`` made concrete; ``fit`` refused for a black box that takes one size only."""
    fixed = getattr(black_box, "fixed_input_size", False)
    if resize == "auto":
        return "square" if fixed else "fit"
    if resize == "fit" and fixed:
        h, w = black_box.input_size
        raise RtsalError(
            f"black box {black_box.name!r} takes {h} x {w} images only: use --resize square "
            "(or auto)"
        )
    return resize


def height_width(picture: Image.Image | torch.Tensor) -> tuple[int, int]:
    if isinstance(picture, Image.Image):
        return picture.height, picture.width
    return int(picture.shape[-2]), int(picture.shape[-1])
