"""Boxes (rtsal.boxes): area, IoU, resizing, and every way from a mask to a box, against values
worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtsal.boxes import (
    box_area,
    box_iou,
    component_boxes,
    mask_array,
    mask_box,
    mask_boxes,
    resize_box,
    salient_box,
)


def test_box_area_and_iou_by_hand():
    assert box_area((1, 2, 4, 6)) == 12 and box_area((3, 3, 2, 5)) == 0
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_mask_box_is_the_tightest_box_around_every_pixel_above_the_threshold():
    m = torch.zeros(6, 8)
    assert mask_box(m) is None
    m[1, 2] = 0.9
    m[4, 5] = 0.6
    m[3, 7] = 0.5  # not above 0.5
    assert mask_box(m) == (2, 1, 6, 5)
    assert mask_box(m, 0.7) == (2, 1, 3, 2)
    # the same box from an array, from (1, H, W), and from a batch (B, 1, H, W)
    assert mask_box(m.numpy()) == mask_box(m[None]) == (2, 1, 6, 5)
    assert mask_boxes(torch.stack([m[None], torch.zeros(1, 6, 8)])) == [(2, 1, 6, 5), None]
    # a boolean mask: its true pixels
    assert mask_box(np.array([[False, True], [False, False]])) == (1, 0, 2, 1)


def test_thresholds_are_compared_in_float32():
    # 0.6 in float64 is just below float32's 0.6; in float32 they are equal, so not above
    m = np.zeros((3, 3))
    m[1, 1] = np.float32(0.6)
    assert float(m[1, 1]) > 0.6  # above in float64 ...
    assert mask_box(m, 0.6) is None  # ... but not in float32, the masks' precision
    assert mask_box(torch.from_numpy(m), 0.6) is None


def test_the_largest_component_option_and_the_components():
    m = torch.zeros(6, 6)
    m[0, 0] = m[1, 1] = 1.0  # diagonal neighbours: one 8-connected component of 2 px
    m[3:6, 3:6] = 1.0  # 9 px
    assert component_boxes(m, 0.5) == [(3, 3, 6, 6), (0, 0, 2, 2)]
    assert mask_box(m, 0.5, largest=True) == (3, 3, 6, 6)
    assert mask_box(m, 0.5) == (0, 0, 6, 6)  # all pixels: the box spans both
    assert mask_box(torch.zeros(6, 6), 0.5, largest=True) is None
    assert component_boxes(torch.zeros(6, 6), 0.5) == []
    # equal sizes: the first in raster order
    e = torch.zeros(5, 5)
    e[4, 0] = e[0, 4] = 1.0
    assert mask_box(e, 0.5, largest=True) == (4, 0, 5, 1)


def test_salient_box_is_tight_and_falls_back_to_the_maximum():
    m = torch.zeros(10, 10)
    m[3:7, 2:6] = 0.9
    assert salient_box(m) == (2, 3, 6, 7)
    m = torch.zeros(10, 10)
    m[4, 8] = 0.3
    assert salient_box(m) == (8, 4, 9, 5)
    assert salient_box(m[None].numpy()) == (8, 4, 9, 5)


def test_resize_box_and_mask_array():
    # from (H, W) = (100, 200) to (50, 100): every edge halves
    assert resize_box((10, 20, 30, 40), (100, 200), (50, 100)) == (5, 10, 15, 20)
    # (1, 1, 2, 2) at 10 px to 5 px: edges 0.5 -> 1 (half up) and 1.0 -> 1; kept 1 px wide
    assert resize_box((1, 1, 2, 2), (10, 10), (5, 5)) == (1, 1, 2, 2)
    assert mask_array(torch.ones(1, 3, 4)).shape == (3, 4)
    assert mask_array(torch.ones(3, 4), np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="expected a map"):
        mask_array(torch.ones(2, 3, 4))
