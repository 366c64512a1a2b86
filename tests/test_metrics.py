"""Metrics against values worked out by hand on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rtsal.metrics.saliency import (
    crop_resize,
    saliency_metric,
    saliency_score,
)
from rtsal.registry.blackbox import BlackBox


class Brightness(nn.Module):
    """p(class 0) = mean intensity of the (un-normalised) image."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([m.log(), (1 - m).log()], dim=1)


def brightness_box(size=(10, 10)) -> BlackBox:
    return BlackBox(
        Brightness(),
        name="brightness",
        class_names=["bright", "dark"],
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        input_size=size,
    )


def test_saliency_score_by_hand():
    assert saliency_score(0.25, 0.5) == pytest.approx(math.log(0.25) - math.log(0.5))
    assert saliency_score(0.01, 1.0) == pytest.approx(math.log(0.05))  # area floor
    assert saliency_score(1.0, 1.0) == 0.0


def test_crop_resize_keeps_the_cropped_quadrant():
    img = torch.zeros(3, 4, 4)
    img[:, :2, :2] = 0.25
    img[:, 2:, 2:] = 0.75
    out = crop_resize(img, (0, 0, 2, 2), (4, 4))
    torch.testing.assert_close(out, torch.full((3, 4, 4), 0.25))


def test_saliency_metric_on_a_white_square():
    img = torch.zeros(3, 10, 10)
    img[:, 3:7, 2:6] = 1.0  # 16 of 100 pixels
    res = saliency_metric(brightness_box(), img, (2, 3, 6, 7), class_index=0)
    assert res["area"] == pytest.approx(0.16)
    assert res["probability"] == pytest.approx(1.0, abs=1e-5)
    assert res["score"] == pytest.approx(math.log(0.16), abs=1e-5)
    whole = saliency_metric(brightness_box(), img, (0, 0, 10, 10), class_index=0)
    assert whole["probability"] == pytest.approx(0.16, abs=1e-4)  # mean of the full image
    assert whole["score"] == pytest.approx(-math.log(0.16), abs=1e-3)
