"""Known answers for the saliency objective (paper Eq. 4 and the authors' hinge form)."""

import math

import pytest
import torch
from torch import nn

from rtsal.engine.model import MaskerOutput
from rtsal.engine.objective import (
    PRESETS,
    SaliencyObjective,
    area,
    class_log_prob,
    dilate,
    margin_to_best_other,
    objective_preset,
    smoothness_sum,
    total_variation,
)
from rtsal.errors import UnknownNameError


class FixedLogits(nn.Module):
    """A stub black box: the same logits for every input; counts calls and batch sizes."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.calls = 0
        self.batch_sizes = []

    def forward(self, x):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return self.logits.expand(x.shape[0], -1).clone()


def checkerboard(n, m=None):
    m = n if m is None else m
    i = torch.arange(n)[:, None]
    j = torch.arange(m)[None, :]
    return ((i + j) % 2).float().view(1, 1, n, m)


def masker_output(mask, mask_lowres=None, gate_max=None):
    B = mask.shape[0]
    if mask_lowres is None:
        mask_lowres = mask[:, :, ::4, ::4]
    if gate_max is None:
        gate_max = torch.full((B,), 0.5)
    return MaskerOutput(mask, mask_lowres, gate_max, None)


# softmax of log([0.5, 0.25, 0.25]) is exactly [0.5, 0.25, 0.25]
PROBS = [0.5, 0.25, 0.25]
LOG_PROBS = [math.log(p) for p in PROBS]


# --------------------------------------------------------------------------- terms


def test_total_variation_of_checkerboard_is_two():
    # every neighbour pair differs by 1: mean 1 vertically + mean 1 horizontally
    tv = total_variation(checkerboard(6))
    assert tv.shape == (1,)
    assert tv.item() == pytest.approx(2.0)


def test_total_variation_of_non_square_checkerboard_is_two():
    assert total_variation(checkerboard(3, 7)).item() == pytest.approx(2.0)


def test_total_variation_of_constant_is_zero():
    assert total_variation(torch.full((3, 1, 5, 5), 0.7)).tolist() == [0.0, 0.0, 0.0]


def test_total_variation_of_vertical_step():
    # rows 0-1 are 0, rows 2-3 are 1: one of 3 row pairs differs -> 1/3, no horizontal change
    m = torch.zeros(1, 1, 4, 4)
    m[:, :, 2:] = 1
    assert total_variation(m).item() == pytest.approx(1 / 3)


def test_total_variation_is_per_image():
    masks = torch.cat([checkerboard(4), torch.zeros(1, 1, 4, 4)])
    assert total_variation(masks).tolist() == pytest.approx([2.0, 0.0])


def test_smoothness_sum_of_checkerboard_without_border_is_12():
    # 12 vertical + 12 horizontal unit differences in a 4x4 board, halved
    assert smoothness_sum(checkerboard(4), border_penalty=0.0).item() == pytest.approx(12.0)


def test_smoothness_sum_border_term():
    # each border row/column of a 4x4 checkerboard holds two ones: 4 * 2 = 8
    assert smoothness_sum(checkerboard(4), border_penalty=0.3).item() == pytest.approx(
        (24 + 0.3 * 8) / 2
    )
    # a constant mask has no differences, only the border: (4 sides * 4 pixels * 1) * 1.0 / 2
    assert smoothness_sum(torch.ones(1, 1, 4, 4), border_penalty=1.0).item() == pytest.approx(8.0)


def test_area_of_quarter_ones():
    m = torch.zeros(2, 1, 4, 4)
    m[:, :, :2, :2] = 1
    assert area(m).tolist() == pytest.approx([0.25, 0.25])


def test_area_with_power():
    m = torch.zeros(1, 1, 4, 4)
    m[:, :, :2, :2] = 1
    want = 0.25 * (1 + 5e-4) ** 0.3 + 0.75 * (5e-4) ** 0.3
    assert area(m, power=0.3).item() == pytest.approx(want, rel=1e-6)


def test_class_log_prob_and_margin():
    logits = torch.tensor([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    lp = class_log_prob(torch.tensor([LOG_PROBS, LOG_PROBS]), torch.tensor([0, 2]))
    assert lp.tolist() == pytest.approx([math.log(0.5), math.log(0.25)], rel=1e-6)
    assert margin_to_best_other(logits, torch.tensor([0, 2])).tolist() == [2.0, -3.0]
    assert margin_to_best_other(logits, torch.tensor([1, 1])).tolist() == [-2.0, -2.0]


# --------------------------------------------------------------------------- presets


def test_presets_hold_the_stated_weights():
    paper = objective_preset("paper")
    assert (paper.form, paper.tv_weight, paper.destroy_weight, paper.destroy_power) == (
        "paper",
        10.0,
        5.0,
        0.3,
    )
    authors = objective_preset("authors")
    assert authors.form == "authors"
    assert (authors.area_weight, authors.area_power, authors.preserve_weight) == (8.0, 0.3, 0.3)
    assert authors.tv_weight == 0.005
    assert authors.removal.blur_sigma == 11.0


def test_preset_overrides_ignore_none():
    cfg = objective_preset("paper", area_weight=2.5, tv_weight=None)
    assert cfg.area_weight == 2.5
    assert cfg.tv_weight == PRESETS["paper"].tv_weight


def test_unknown_preset():
    with pytest.raises(UnknownNameError, match="paper"):
        objective_preset("papr")


def test_dilate_grows_a_pixel_into_a_square():
    mask = torch.zeros(1, 1, 9, 9)
    mask[0, 0, 4, 4] = 0.7
    grown = dilate(mask, 2)
    want = torch.zeros(1, 1, 9, 9)
    want[0, 0, 2:7, 2:7] = 0.7
    assert torch.equal(grown, want)
    assert dilate(mask, 0) is mask


class Recorder(FixedLogits):
    def forward(self, x):
        self.seen = x.clone()
        return super().forward(x)


@pytest.mark.parametrize("radius", [0, 2])
def test_destroy_dilation_removes_a_grown_mask_and_preserves_the_mask_itself(radius):
    torch.manual_seed(0)
    box = Recorder(LOG_PROBS)
    obj = SaliencyObjective(objective_preset("paper", destroy_dilation=radius), box)
    images = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 8, 8] = 1.0
    obj(images, masker_output(mask), torch.tensor([0]))
    kept, destroyed = box.seen.chunk(2)
    # Phi(X, M) is X exactly where the mask is 1: the one pixel, whatever the radius
    assert (kept == images).all(1)[0].nonzero().tolist() == [[8, 8]]
    # Phi(X, 1 - grown M) replaces the (2r + 1)^2 square around it and keeps the rest
    replaced = ~(destroyed == images).all(1)[0]
    want = torch.zeros(16, 16, dtype=torch.bool)
    want[8 - radius : 9 + radius, 8 - radius : 9 + radius] = True
    assert torch.equal(replaced, want)


# --------------------------------------------------------------------------- paper form


def test_paper_preserve_and_destroy_on_stub():
    torch.manual_seed(0)
    box = FixedLogits(LOG_PROBS)
    obj = SaliencyObjective(PRESETS["paper"], box)
    images = torch.rand(2, 3, 16, 16)
    mask = torch.rand(2, 1, 16, 16)  # irrelevant to the classifier terms: the stub ignores input
    out = masker_output(mask)
    terms = obj(images, out, torch.tensor([0, 1]))
    p = torch.tensor([0.5, 0.25])
    assert terms.preserve.item() == pytest.approx((-p.log()).mean().item(), rel=1e-5)
    assert terms.destroy.item() == pytest.approx((5 * (p + 1e-6) ** 0.3).mean().item(), rel=1e-5)
    assert terms.tv.item() == pytest.approx(10 * total_variation(out.mask_lowres).mean().item())
    assert terms.area.item() == pytest.approx(6 * mask.mean().item(), rel=1e-5)
    assert terms.embed.item() == 0.0
    want = terms.tv + terms.area + terms.preserve + terms.destroy
    assert terms.total.item() == pytest.approx(want.item(), rel=1e-6)
    # one black-box call per batch: preserved and destroyed images together
    assert box.batch_sizes == [4]


def test_paper_single_sample_values():
    box = FixedLogits(LOG_PROBS)
    obj = SaliencyObjective(PRESETS["paper"], box)
    out = masker_output(torch.zeros(1, 1, 8, 8))
    terms = obj(torch.rand(1, 3, 8, 8), out, torch.tensor([0]))
    assert terms.preserve.item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms.destroy.item() == pytest.approx(5 * (0.5 + 1e-6) ** 0.3, rel=1e-6)
    assert terms.tv.item() == 0.0
    assert terms.area.item() == 0.0


def test_paper_all_fake_is_area_only_and_never_calls_black_box():
    torch.manual_seed(1)
    box = FixedLogits(LOG_PROBS)
    obj = SaliencyObjective(PRESETS["paper"], box)
    mask = torch.rand(3, 1, 8, 8)
    out = masker_output(mask, mask_lowres=checkerboard(4).expand(3, 1, 4, 4))
    terms = obj(
        torch.rand(3, 3, 8, 8),
        out,
        torch.tensor([0, 1, 2]),
        labels=torch.tensor([1, 2, 0]),
        is_real=torch.zeros(3, dtype=torch.bool),
    )
    assert box.calls == 0
    assert terms.tv.item() == 0.0
    assert terms.preserve.item() == 0.0
    assert terms.destroy.item() == 0.0
    assert terms.total.item() == terms.area.item()
    assert terms.area.item() == pytest.approx(6 * mask.mean().item(), rel=1e-5)


def test_paper_mixed_batch_means_with_fake_contributing_zero():
    box = FixedLogits(LOG_PROBS)
    obj = SaliencyObjective(PRESETS["paper"], box)
    mask = torch.zeros(2, 1, 8, 8)
    mask[1] = 1.0  # area: sample 0 -> 0, sample 1 -> 1
    lowres = checkerboard(4).expand(2, 1, 4, 4)  # TV 2.0 for both samples
    terms = obj(
        torch.rand(2, 3, 8, 8),
        masker_output(mask, lowres),
        torch.tensor([0, 2]),
        labels=torch.tensor([0, 1]),
        is_real=torch.tensor([True, False]),
    )
    assert box.calls == 1
    assert box.batch_sizes == [2]  # only the real sample, preserved + destroyed
    assert terms.tv.item() == pytest.approx(10 * 2.0 / 2)
    assert terms.area.item() == pytest.approx(6 * 1.0 / 2)
    assert terms.preserve.item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    assert terms.destroy.item() == pytest.approx(5 * (0.5 + 1e-6) ** 0.3 / 2, rel=1e-6)
    assert terms.total.item() == pytest.approx(
        10 + 3 + math.log(2) / 2 + 5 * (0.5 + 1e-6) ** 0.3 / 2, rel=1e-6
    )


def test_paper_uses_the_selector_class():
    # real sample with selector 1: p = 0.25, whatever the labels say
    box = FixedLogits(LOG_PROBS)
    obj = SaliencyObjective(PRESETS["paper"], box)
    out = masker_output(torch.zeros(1, 1, 8, 8))
    terms = obj(torch.rand(1, 3, 8, 8), out, torch.tensor([1]))
    assert terms.preserve.item() == pytest.approx(math.log(4), rel=1e-6)
    assert terms.destroy.item() == pytest.approx(5 * (0.25 + 1e-6) ** 0.3, rel=1e-6)


def test_embed_term_is_bce_on_gate_max():
    cfg = objective_preset("paper", embed_weight=2.0)
    obj = SaliencyObjective(cfg, FixedLogits(LOG_PROBS))
    out = masker_output(torch.zeros(2, 1, 8, 8), gate_max=torch.tensor([0.8, 0.3]))
    terms = obj(
        torch.rand(2, 3, 8, 8),
        out,
        torch.tensor([0, 1]),
        labels=torch.tensor([0, 2]),
        is_real=torch.tensor([True, False]),
    )
    # real wants gate 1: -log 0.8; fake wants gate 0: -log 0.7
    want = 2.0 * (-math.log(0.8) - math.log(0.7)) / 2
    assert terms.embed.item() == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- authors' form


def run_authors(labels, is_real, mask=None, logits=(3.0, 1.0, 0.0)):
    box = FixedLogits(list(logits))
    obj = SaliencyObjective(PRESETS["authors"], box)
    B = len(labels)
    mask = torch.zeros(B, 1, 8, 8) if mask is None else mask
    labels = torch.tensor(labels)
    terms = obj(
        torch.rand(B, 3, 8, 8),
        masker_output(mask),
        labels,
        labels=labels,
        is_real=torch.tensor(is_real),
    )
    return terms, box


@pytest.mark.parametrize(
    ("label", "real", "preserve", "destroy"),
    [
        # logits [3, 1, 0]: margin of class 0 is 2, of class 1 is -2
        (0, True, 0.3 * max(0, 1 - 2), max(0, 5 + 2)),  # 0, 7
        (1, True, 0.3 * max(0, 1 + 2), max(0, 5 - 2)),  # 0.9, 3
        (0, False, 0.3 * max(0, 1 + 2), max(0, 1 - 2)),  # fake: 0.9, 0
        (1, False, 0.3 * max(0, 1 - 2), max(0, 1 + 2)),  # fake: 0, 3
    ],
)
def test_authors_hinge_terms(label, real, preserve, destroy):
    terms, box = run_authors([label], [real])
    assert terms.preserve.item() == pytest.approx(preserve, abs=1e-6)
    assert terms.destroy.item() == pytest.approx(destroy, abs=1e-6)
    assert box.calls == 1  # the authors' form calls the black box for fake selectors too


def test_authors_mixed_batch_and_total():
    terms, box = run_authors([0, 0], [True, False])
    assert box.batch_sizes == [4]
    assert terms.preserve.item() == pytest.approx((0 + 0.9) / 2)
    assert terms.destroy.item() == pytest.approx((7 + 0) / 2)
    # zero mask: smoothness 0, area 8 * (5e-4) ** 0.3
    assert terms.tv.item() == 0.0
    assert terms.area.item() == pytest.approx(8 * (5e-4) ** 0.3, rel=1e-5)
    assert terms.total.item() == pytest.approx(0.45 + 3.5 + 8 * (5e-4) ** 0.3, rel=1e-5)


def test_authors_smoothness_on_image_mask():
    mask = checkerboard(4).repeat(1, 1, 2, 2)  # 8x8 checkerboard
    terms, _ = run_authors([0], [True], mask=mask)
    # 8x8 board: 56 + 56 unit differences; border: 4 sides * 4 ones; weight 0.005
    want = 0.005 * (112 + 0.3 * 16) / 2
    assert terms.tv.item() == pytest.approx(want, rel=1e-6)
