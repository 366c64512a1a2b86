"""PR curves, max F_β and MAE against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtsal.metrics.pixel import (
    PixelMaskEvaluation,
    evaluate_pixel_masks,
    f_measure,
    mean_absolute_error,
    plot_pr_curves,
    precision_recall_curve,
    quantise,
)

# a 2 x 2 map with levels 255, 170, 85, 0 (values 1, 2/3, 1/3, 0) against GT [[1, 0], [1, 0]]
MAP = torch.tensor([[1.0, 2 / 3], [1 / 3, 0.0]])
GT = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)


def f(p: float, r: float) -> float:
    return 1.3 * p * r / (0.3 * p + r)  # F_beta with beta^2 = 0.3


def test_quantisation_rounds_to_256_levels():
    np.testing.assert_array_equal(quantise(MAP), [[255, 170], [85, 0]])
    # min-max normalisation first: [0.2, 0.6] -> [0, 1]; without it 0.2 * 255 = 51, 0.6 -> 153
    np.testing.assert_array_equal(quantise(torch.tensor([[0.2, 0.6]])), [[0, 255]])
    np.testing.assert_array_equal(
        quantise(torch.tensor([[0.2, 0.6]]), normalize=False), [[51, 153]]
    )


def test_pr_curve_of_four_pixels_by_hand():
    p, r = precision_recall_curve(MAP, GT)
    assert p.shape == r.shape == (256,)
    # t = 0:         all 4 predicted, TP 2 -> P = 2/4, R = 2/2
    # t = 1..85:     levels {255, 170, 85}, TP 2 (255, 85) -> P = 2/3, R = 1
    # t = 86..170:   levels {255, 170}, TP 1 -> P = 1/2, R = 1/2
    # t = 171..255:  level {255}, TP 1 -> P = 1, R = 1/2
    expected_p = np.r_[0.5, np.full(85, 2 / 3), np.full(85, 0.5), np.full(85, 1.0)]
    expected_r = np.r_[1.0, np.full(85, 1.0), np.full(85, 0.5), np.full(85, 0.5)]
    np.testing.assert_allclose(p, expected_p)
    np.testing.assert_allclose(r, expected_r)
    # F = 1.3 P R / (0.3 P + R):
    #   t = 0: 0.65 / 1.15 = 0.5652;  t = 1..85: 0.8667 / 1.2 = 0.7222
    #   t = 86..170: 0.325 / 0.65 = 0.5;  t = 171..255: 0.65 / 0.8 = 0.8125  <- max
    fm = f_measure(p, r)
    assert fm[0] == pytest.approx(0.65 / 1.15)
    assert fm[1] == pytest.approx(f(2 / 3, 1.0)) == pytest.approx(0.7222222)
    assert fm[100] == pytest.approx(0.5)
    assert fm[200] == pytest.approx(0.8125)
    res = evaluate_pixel_masks([MAP], [GT])
    assert res.max_f == pytest.approx(0.8125)
    assert res.best_threshold == 171


def test_mae_by_hand():
    # |1 - 1| + |2/3 - 0| + |1/3 - 1| + |0 - 0| = 4/3 over 4 pixels = 1/3
    assert mean_absolute_error(MAP, GT) == pytest.approx(1 / 3)


def test_curves_and_mae_are_averaged_over_images():
    # second image: levels [0, 0, 0, 255] against GT [0, 0, 0, 1]
    #   t = 0: P = 1/4, R = 1 -> F = 0.325 / 1.075 = 0.3023; t >= 1: P = R = F = 1; MAE 0
    map2 = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    gt2 = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    res = evaluate_pixel_masks([MAP, map2], [GT, gt2])
    assert res.images == 2
    # mean F: t = 0: (0.5652 + 0.3023)/2; t = 1..85: (0.7222 + 1)/2 = 0.8611;
    # t = 86..170: (0.5 + 1)/2 = 0.75; t = 171..255: (0.8125 + 1)/2 = 0.90625 <- max
    assert res.f_measure[0] == pytest.approx((0.65 / 1.15 + 0.325 / 1.075) / 2)
    assert res.f_measure[50] == pytest.approx((f(2 / 3, 1) + 1) / 2)
    assert res.max_f == pytest.approx(0.90625)
    assert res.precision[200] == pytest.approx(1.0)  # (1 + 1)/2
    assert res.recall[200] == pytest.approx(0.75)  # (1/2 + 1)/2
    assert res.mae == pytest.approx((1 / 3 + 0) / 2)


def test_one_image_at_a_time_as_the_scorer_streams():
    evaluation = PixelMaskEvaluation()
    # MAP: max F 0.8125 (thresholds 171..255), MAE 1/3 (see above)
    scores = evaluation.update(MAP, GT)
    assert scores.max_f == pytest.approx(0.8125) and scores.mae == pytest.approx(1 / 3)
    # the second image of the test above: F = 1 at t >= 1, MAE 0
    map2 = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    scores = evaluation.update(map2, map2 > 0.5)
    assert (scores.max_f, scores.mae) == (pytest.approx(1.0), 0.0)
    res = evaluation.compute()
    assert res.images == 2 and res.max_f == pytest.approx(0.90625)
    assert res.mae == pytest.approx(1 / 6) and res.best_threshold == 171
    with pytest.raises(ValueError, match="no images"):
        PixelMaskEvaluation().compute()


def test_empty_prediction_has_precision_zero():
    # constant map 0.2, not normalised: level 51 everywhere; for t >= 52 nothing is predicted,
    # so P = 0 (the salient-object convention), R = 0, F = 0. At t <= 51: P = 1/4, R = 1.
    gt = torch.tensor([[True, False], [False, False]])
    p, r = precision_recall_curve(torch.full((2, 2), 0.2), gt, normalize=False)
    assert p[51] == pytest.approx(0.25) and r[51] == 1.0
    assert p[52] == 0.0 and r[52] == 0.0
    assert f_measure(p, r)[52] == 0.0


def test_uint8_ground_truth_and_size_check():
    gt255 = np.array([[255, 0], [200, 100]], dtype=np.uint8)  # > 127.5: [[1, 0], [1, 0]]
    p, _ = precision_recall_curve(MAP, gt255)
    assert p[200] == 1.0 and p[0] == 0.5
    with pytest.raises(ValueError, match="differ in size"):
        precision_recall_curve(MAP, torch.zeros(3, 3))


def test_plot_pr_curves_writes_a_png(tmp_path):
    res = evaluate_pixel_masks([MAP], [GT])
    out = plot_pr_curves({"a": res, "b": res}, tmp_path / "pr" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
