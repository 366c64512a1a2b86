"""Deletion / insertion and the pointing game against values worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rtsal.metrics.faithfulness import (
    PointingGame,
    baseline_image,
    box_distance,
    chunk_ends,
    deletion_curve,
    insertion_curve,
    max_point,
    pointing_game,
    pointing_hit,
    saliency_ranks,
)
from rtsal.registry.blackbox import BlackBox


class Brightness(nn.Module):
    """p(class 0) = mean intensity of the (un-normalised) image, so the curves are linear."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([m.log(), (1 - m).log()], dim=1)


def brightness_box(mean: float = 0.0) -> BlackBox:
    return BlackBox(
        Brightness(),
        name="brightness",
        class_names=["bright", "dark"],
        mean=(mean,),
        std=(1.0,),
        input_size=(2, 2),
    )


# one grey-level 2 x 2 image, pixel values 0.8, 0.4 / 0.2, 0.6 (mean 2.0/4 = 0.5); the saliency
# map is the image itself, so the order of removal is 0.8, 0.6, 0.4, 0.2
IMAGE = torch.tensor([[[[0.8, 0.4], [0.2, 0.6]]]])  # (1, 1, 2, 2)
CLS = torch.tensor([0])


def test_ranks_follow_saliency_with_ties_in_raster_order():
    assert saliency_ranks(IMAGE, (2, 2)).tolist() == [[0, 2, 3, 1]]
    assert saliency_ranks(torch.ones(1, 1, 2, 2), (2, 2)).tolist() == [[0, 1, 2, 3]]
    assert chunk_ends(4, 4) == [0, 1, 2, 3, 4]
    assert chunk_ends(4, 3) == [0, 1, 2, 4]  # floor(k * 4 / 3)


def test_ranks_of_a_mask_smaller_than_the_image():
    # the scorer's masks are at the image's resolution, the black box's input at its own: the
    # ranks resize bilinearly (align_corners=False). A 1 x 2 mask [1, 0] to 2 x 4: column x
    # samples the mask at (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped to [0, 1]),
    # i.e. 1, 0.75, 0.25, 0 on both rows; ties in raster order
    ranks = saliency_ranks(torch.tensor([[[[1.0, 0.0]]]]), (2, 4))
    assert ranks.tolist() == [[0, 2, 4, 6, 1, 3, 5, 7]]
    # deletion on a white 2 x 4 image with that mask: 4 steps remove the columns left to right,
    # p = the mean of what is left: 1, 3/4, 1/2, 1/4, 0 -> AUC 0.25 * (1/2 + 3/2 + 0/2) = 0.5
    image = torch.ones(1, 1, 2, 4)
    res = deletion_curve(brightness_box(), image, torch.tensor([[[[1.0, 0.0]]]]), CLS, steps=4)
    torch.testing.assert_close(res.probabilities[0], torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert res.mean_auc == pytest.approx(0.5, abs=1e-5)


def test_deletion_to_zeros_by_hand():
    res = deletion_curve(brightness_box(), IMAGE, IMAGE, CLS, steps=4)
    # p after each step = (sum of the pixels left) / 4:
    #   2.0/4 = 0.5, (2.0 - 0.8)/4 = 0.3, (1.2 - 0.6)/4 = 0.15, (0.6 - 0.4)/4 = 0.05, 0
    torch.testing.assert_close(res.probabilities[0], torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]))
    torch.testing.assert_close(res.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    # trapezoid, h = 1/4: 0.25 * (0.5/2 + 0.3 + 0.15 + 0.05 + 0/2) = 0.25 * 0.75 = 0.1875
    assert res.mean_auc == pytest.approx(0.1875, abs=1e-5)
    # the reverse order (least salient first): 0.5, 0.45, 0.35, 0.2, 0
    #   0.25 * (0.25 + 0.45 + 0.35 + 0.2) = 0.3125, worse (higher) than the true order
    rev = deletion_curve(brightness_box(), IMAGE, 1 - IMAGE, CLS, steps=4)
    assert rev.mean_auc == pytest.approx(0.3125, abs=1e-5)


def test_insertion_from_zeros_mirrors_deletion():
    res = insertion_curve(brightness_box(), IMAGE, IMAGE, CLS, steps=4, baseline="zeros")
    # 0, 0.8/4 = 0.2, 1.4/4 = 0.35, 1.8/4 = 0.45, 2.0/4 = 0.5
    torch.testing.assert_close(res.probabilities[0], torch.tensor([0.0, 0.2, 0.35, 0.45, 0.5]))
    # 0.25 * (0/2 + 0.2 + 0.35 + 0.45 + 0.5/2) = 0.25 * 1.25 = 0.3125 (= 0.5 - deletion's 0.1875)
    assert res.mean_auc == pytest.approx(0.3125, abs=1e-5)


def test_chunks_and_uneven_steps_use_the_true_fraction():
    # 2 steps of 2 pixels: 0.5, (2.0 - 1.4)/4 = 0.15, 0 -> 0.5 * (0.25 + 0.15 + 0) = 0.2
    assert deletion_curve(brightness_box(), IMAGE, IMAGE, CLS, steps=2).mean_auc == pytest.approx(
        0.2, abs=1e-5
    )
    # 3 steps over 4 pixels change 1, 1, 2 pixels: fractions 0, 1/4, 1/2, 1; p 0.5, 0.3, 0.15, 0
    # 0.25 * (0.5 + 0.3)/2 + 0.25 * (0.3 + 0.15)/2 + 0.5 * (0.15 + 0)/2
    #   = 0.1 + 0.05625 + 0.0375 = 0.19375
    res = deletion_curve(brightness_box(), IMAGE, IMAGE, CLS, steps=3)
    torch.testing.assert_close(res.fractions, torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert res.mean_auc == pytest.approx(0.19375, abs=1e-5)


def test_baselines_blur_mean_and_batching():
    # a constant image is its own blur: inserting into it changes nothing, p = 0.7 throughout
    flat = torch.full((1, 1, 8, 8), 0.7)
    mask = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ins = insertion_curve(brightness_box(), flat, mask, CLS, steps=8)
    torch.testing.assert_close(ins.probabilities, torch.full((1, 9), 0.7))
    assert ins.mean_auc == pytest.approx(0.7, abs=1e-5)
    # the black box's mean colour (0.25) as the deletion baseline, RISE's zero after
    # normalisation: the stub sees x - 0.25, so p = 0.5 - 0.25 intact and 0 (clamped to 1e-6)
    # once every pixel is the mean colour
    box = brightness_box(mean=0.25)
    assert torch.equal(baseline_image(IMAGE, "mean", black_box=box), torch.full_like(IMAGE, 0.25))
    res = deletion_curve(box, IMAGE, IMAGE, CLS, steps=4, baseline="mean")
    assert res.probabilities[0, 0] == pytest.approx(0.25, abs=1e-5)
    assert res.probabilities[0, -1] == pytest.approx(0.0, abs=1e-5)
    # batching over steps changes nothing
    two = torch.cat([IMAGE, 1 - IMAGE])
    a = deletion_curve(brightness_box(), two, two, [0, 0], steps=4, batch_size=2)
    b = deletion_curve(brightness_box(), two, two, [0, 0], steps=4, batch_size=64)
    torch.testing.assert_close(a.probabilities, b.probabilities)
    with pytest.raises(ValueError, match="unknown baseline"):
        deletion_curve(brightness_box(), IMAGE, IMAGE, CLS, steps=4, baseline="noise")


def test_pointing_game_by_hand():
    gt = [(0, 0, 10, 10)]  # pixels x, y = 0..9

    def peak(x: int, y: int) -> torch.Tensor:
        m = torch.zeros(1, 40, 40)
        m[0, y, x] = 1.0
        return m

    assert max_point(peak(12, 5)) == (12, 5)
    # (12, 5): 12 - 9 = 3 px right of the box -> a miss without tolerance, a hit with 15 px
    assert box_distance(12, 5, gt[0]) == 3.0
    assert not pointing_hit(peak(12, 5), gt, tolerance=0)
    assert pointing_hit(peak(12, 5), gt)
    # (24, 5): 15 px away -> hit (<= 15); (25, 5): 16 px -> miss
    assert pointing_hit(peak(24, 5), gt) and not pointing_hit(peak(25, 5), gt)
    # (18, 21): dx = 9, dy = 12 -> sqrt(81 + 144) = 15 -> hit; (19, 21): sqrt(100 + 144) = 15.6
    assert pointing_hit(peak(18, 21), gt) and not pointing_hit(peak(19, 21), gt)
    # (5, 5) inside -> hit; 4 images: hits (5, 5), (24, 5); misses (25, 5), (19, 21) -> 2/4
    masks = [peak(5, 5), peak(24, 5), peak(25, 5), peak(19, 21)]
    res = pointing_game(masks, [gt] * 4)
    assert (res.hits, res.misses, res.accuracy) == (2, 2, 0.5)
    # without tolerance only (5, 5) hits -> 1/4; a second box can turn a miss into a hit
    assert pointing_game(masks, [gt] * 4, tolerance=0).accuracy == 0.25
    assert pointing_hit(peak(25, 5), [gt[0], (20, 0, 30, 10)], tolerance=0)


def test_pointing_game_one_image_at_a_time():
    gt = [(0, 0, 10, 10)]
    m = torch.zeros(40, 40)
    m[5, 24] = 1.0  # (24, 5): 15 px from the box -> hit
    game = PointingGame()
    assert game.update(m, gt) is True
    m = torch.zeros(40, 40)
    m[5, 25] = 1.0  # (25, 5): 16 px -> miss
    assert game.update(m, gt) is False
    assert game.compute().to_dict() == {"accuracy": 0.5, "hits": 1, "misses": 1}
    with pytest.raises(ValueError, match="no ground-truth box"):
        game.update(m, [])


def test_pointing_game_ties_and_inputs():
    m = torch.zeros(1, 4, 4)
    m[0, 1, 3] = m[0, 2, 0] = 1.0  # two maxima: (3, 1) first in raster order
    assert max_point(m) == (3, 1)
    with pytest.raises(ValueError, match="no ground-truth box"):
        pointing_game([m], [[]])
