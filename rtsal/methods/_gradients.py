"""Machinery shared by the methods that differentiate a black box with respect to its input.

Black boxes are frozen (their parameters never require gradients) and callers often run inside
``torch.inference_mode()``; these helpers turn autograd back on for the input only, release every
hook they register, and scale maps the same way for every method.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.hooks import RemovableHandle

from rtsal.errors import RtsalError


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on, even when the caller is inside ``inference_mode`` or ``no_grad``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def removing_hooks() -> Iterator[list[RemovableHandle]]:
    """A list to put hook handles in; every handle is removed on exit, error or not."""
    handles: list[RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def input_with_grad(images: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` that requires grad; the caller's tensor is left as it was.

    Call it inside :func:`gradients_enabled` (an inference tensor is copied to a normal one).
    """
    return images.detach().clone().requires_grad_(True)  # (B, C, H, W)


def check_inputs(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Validate ``images`` (B, C, H, W) and ``classes`` (B,); return the classes as a normal
    (not inference-mode) long tensor on the images' device, fit for autograd."""
    if images.dim() != 4:
        raise RtsalError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    with torch.inference_mode(False):
        classes = torch.as_tensor(classes, device=images.device).long().reshape(-1).clone()
    if classes.numel() != images.shape[0]:
        raise RtsalError(f"got {images.shape[0]} images but {classes.numel()} class ids")
    return classes  # (B,)


def class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``logit_c`` for each row: (B, K), (B,) -> (B,).

    Summing these over the batch and differentiating gives every image its own gradient: a black
    box in eval mode treats the images of a batch independently.
    """
    return logits.gather(1, classes[:, None]).squeeze(1)


def scale_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Non-negative maps (B, 1, H, W) divided by their per-image maximum, so each lies in [0, 1]
    with its largest value at 1 and zero evidence staying 0; an all-zero map stays all zero."""
    maps = maps.clamp(min=0).nan_to_num(0.0)
    peak = maps.flatten(1).amax(1).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), 0.0)
