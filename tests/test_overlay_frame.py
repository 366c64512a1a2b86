"""The overlay video and the camera view draw every frame (``overlay_frame``, look-up tables at
the mask's 256 levels) is the picture ``rtsal explain`` writes for a photo
(``visualize.overlay``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.inference.video import overlay_frame
from rtsal.inference.visualize import overlay

skdata = pytest.importorskip("skimage.data")


def ramp(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return xx * yy  # every level from 0 to 1


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_the_frame_overlay_is_the_photo_overlay(alpha):
    frame = np.asarray(Image.fromarray(skdata.chelsea()).convert("RGB")).copy()
    mask = ramp(*frame.shape[:2])
    fast = overlay_frame(frame, mask, alpha=alpha)
    want = np.asarray(overlay(torch.from_numpy(frame).permute(2, 0, 1) / 255, mask[None], alpha))
    assert fast.dtype == np.uint8 and fast.shape == frame.shape
    diff = np.abs(fast.astype(int) - want.astype(int))
    # 256 mask levels (the square root of the mask is steep near 0), rounding down
    assert diff.max() <= 10 and diff.mean() <= 1.0


def test_the_ends_of_the_mask_give_the_frame_and_half_the_heat_colour():
    frame = np.full((4, 4, 3), 200, dtype=np.uint8)
    out = overlay_frame(frame, torch.zeros(4, 4))
    assert np.array_equal(out, frame)  # mask 0: the frame untouched
    full = overlay_frame(np.zeros((4, 4, 3), dtype=np.uint8), torch.ones(4, 4))
    top = np.asarray(overlay(torch.zeros(3, 4, 4), torch.ones(1, 4, 4)))
    assert np.abs(full.astype(int) - top.astype(int)).max() <= 1  # half of the hottest colour
    # a white frame under the hottest level: nothing clips or wraps around
    white = overlay_frame(np.full((2, 2, 3), 255, dtype=np.uint8), torch.ones(2, 2))
    want = np.asarray(overlay(torch.ones(3, 2, 2), torch.ones(1, 2, 2)))
    assert np.abs(white.astype(int) - want.astype(int)).max() <= 2
