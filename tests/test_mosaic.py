"""Mosaics: tile geometry, the selector names the class of a tile that shows it, fake selectors
avoid every class shown, and the mosaic benchmark's known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.data.folders import ImageFileDataset
from rtsal.data.mosaic import (
    MosaicDataset,
    compose,
    inside_fraction,
    mosaic_cases,
    render_case,
    tile_boxes,
)
from rtsal.training.trainer import sample_selectors
from tests.helpers import SHARED_DATA


@pytest.mark.parametrize("tiles", [2, 4])
@pytest.mark.parametrize("hw", [(224, 224), (161, 97)])
def test_tiles_cover_the_image_once(tiles, hw):
    H, W = hw
    cover = np.zeros((H, W), dtype=int)
    for x0, y0, x1, y1 in tile_boxes(tiles, H, W):
        assert x1 > x0 and y1 > y0
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


def test_tile_boxes_by_hand():
    assert tile_boxes(2, 10, 7) == [(0, 0, 3, 10), (3, 0, 7, 10)]
    assert tile_boxes(4, 10, 7) == [(0, 0, 3, 5), (3, 0, 7, 5), (0, 5, 3, 10), (3, 5, 7, 10)]
    with pytest.raises(ValueError):
        tile_boxes(3, 10, 10)


def test_compose_places_each_tile_in_its_box():
    boxes = tile_boxes(4, 6, 8)
    tiles = [torch.full((3, b[3] - b[1], b[2] - b[0]), float(t)) for t, b in enumerate(boxes)]
    m = compose(tiles, 6, 8)
    for t, (x0, y0, x1, y1) in enumerate(boxes):
        assert (m[:, y0:y1, x0:x1] == t).all()
    with pytest.raises(ValueError):
        compose([torch.zeros(3, 2, 2)] * 4, 6, 8)


def _colour_folder(root: Path, classes: int, per_class: int) -> list[tuple[Path, int]]:
    """Photos whose colour encodes their class (class k: red = 20 k), so a tile's class can be
    read from its pixels."""
    samples = []
    root.mkdir(parents=True, exist_ok=True)
    for k in range(classes):
        for j in range(per_class):
            p = root / f"c{k}_{j}.png"
            Image.new("RGB", (48 + 8 * j, 40), (20 * k, 100, 50)).save(p)
            samples.append((p, k))
    return samples


def test_mosaic_selector_names_a_tile_that_shows_its_class(tmp_path):
    samples = _colour_folder(tmp_path, classes=6, per_class=3)
    base = ImageFileDataset(samples, [str(k) for k in range(6)], size=(64, 64), train=True)
    base.set_epoch(0, seed=3)
    ds = MosaicDataset(base, prob=1.0, tiles=(2, 4))
    seen_tiles = set()
    for i in range(len(ds)):
        x, label, present = ds[i]
        shown = [int(c) for c in present if c >= 0]
        seen_tiles.add(len(shown))
        assert len(shown) in (2, 4) and len(set(shown)) == len(shown)  # different classes
        assert label in shown
        boxes = tile_boxes(len(shown), 64, 64)
        for cls, (x0, y0, x1, y1) in zip(shown, boxes, strict=True):
            red = x[0, y0:y1, x0:x1].mul(255).round()
            assert (red == 20 * cls).all()  # the tile shows the class listed for it
    assert seen_tiles == {2, 4}
    # the same index and epoch give the same mosaic; another epoch another one
    a = ds[5]
    assert torch.equal(a[0], ds[5][0])
    base.set_epoch(1, seed=3)
    assert not torch.equal(a[0], ds[5][0])
    xs, ys, ps = MosaicDataset.collate([ds[0], ds[1]])
    assert xs.shape == (2, 3, 64, 64) and ys.shape == (2,) and ps.shape == (2, 4)


def test_mosaic_probability_zero_gives_the_photo(tmp_path):
    samples = _colour_folder(tmp_path, classes=3, per_class=2)
    base = ImageFileDataset(samples, ["a", "b", "c"], size=(32, 32), train=False)
    ds = MosaicDataset(base, prob=0.0)
    x, label, present = ds[4]
    assert label == 2 and present.tolist() == [2, -1, -1, -1]
    assert torch.equal(x, base[4][0])


def test_fake_selectors_avoid_every_class_shown():
    labels = torch.tensor([5, 5, 7, 0] * 50)
    present = torch.tensor([[5, 6, 7, 8], [5, 4, -1, -1], [7, 8, 9, 10], [0, 999, 1, 2]] * 50)
    classes, real = sample_selectors(
        labels, 1000, 1.0, generator=torch.Generator().manual_seed(0), present=present
    )
    assert not real.any()
    assert not (classes[:, None] == present).any()
    # a small class count where shifts must step past several shown classes
    classes, _ = sample_selectors(
        torch.tensor([0] * 40),
        6,
        1.0,
        generator=torch.Generator().manual_seed(1),
        present=torch.tensor([[0, 1, 2, 3]] * 40),
    )
    assert set(classes.tolist()) <= {4, 5}


def test_benchmark_cases_and_known_answers(tmp_path):
    samples = _colour_folder(tmp_path, classes=5, per_class=2)
    cases = mosaic_cases(samples, 12, seed=1)
    assert len(cases) == 12
    for c in cases:
        assert len(set(c.labels)) == len(c.labels) and 0 <= c.target < len(c.labels)
    assert {len(c.labels) for c in cases} == {2, 4}
    assert mosaic_cases(samples, 12, seed=1) == cases  # fixed by the seed

    def load(path, hw):
        return (
            torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((hw[1], hw[0]))))
            .permute(2, 0, 1)
            .float()
            .div(255)
        )

    image, box = render_case(cases[0], (40, 60), load)
    x0, y0, x1, y1 = box
    cls = cases[0].labels[cases[0].target]
    assert (image[0, y0:y1, x0:x1].mul(255).round() == 20 * cls).all()
    oracle = torch.zeros(40, 60)
    oracle[y0:y1, x0:x1] = 1
    assert inside_fraction(oracle, box) == 1.0
    half = torch.ones(40, 60)
    assert inside_fraction(half, box) == pytest.approx((x1 - x0) * (y1 - y0) / (40 * 60))


class _TileOracle(torch.nn.Module):
    """A 'masking model' that knows where each class is painted (red = 20 k): its mask is the
    region of the selected class's colour."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, classes):
        red = x[:, 0].mul(255).round()
        mask = (red == (20 * classes)[:, None, None]).float().unsqueeze(1)
        return type("Out", (), {"mask": mask})


@pytest.mark.skipif(
    not (SHARED_DATA / "imagenet-sample").is_dir(), reason="../shared/data is not present"
)
def test_validator_scores_a_perfect_tile_oracle(tmp_path):
    from rtsal.registry.blackbox import create_black_box
    from rtsal.training.validation import Validator

    samples = _colour_folder(tmp_path, classes=6, per_class=2)
    box = create_black_box("efficientnet_lite0")
    v = Validator(samples, box, (64, 64), photos=4, mosaics=8)
    result = v(_TileOracle())
    assert result["mosaic_loc"] == 1.0 and result["mosaic_inside"] == 1.0
    assert result["area_true"] == 1.0  # a one-colour photo is all its class
    assert result["area_absent"] == 0.0
    assert result["score"] == result["mosaic_loc"] - result["wrong_way"]  # validation_score


def test_mosaic_scores_by_hand():
    from rtsal.data.mosaic import score_mosaic_masks

    H, W = 8, 8
    boxes = tile_boxes(4, H, W)  # target tiles: 0 then 3
    exact = torch.zeros(1, H, W)
    exact[:, :4, :4] = 1  # the target tile exactly
    spill = torch.zeros(1, H, W)
    spill[:, 4:, 4:] = 1.0  # tile 3, the target
    spill[:, 0, 0] = 0.9  # a speck in tile 0 widens the box to the whole image
    empty = torch.zeros(1, H, W)
    s = score_mosaic_masks(torch.stack([exact, spill, empty]), [boxes[0], boxes[3], boxes[1]])
    assert s["mosaic_loc"] == pytest.approx(1 / 3)  # spill's box is the whole image: IoU 1/4
    assert s["mosaic_inside"] == pytest.approx((1 + 16 / 16.9 + 0) / 3)
    assert s["mosaic_pointing"] == pytest.approx(2 / 3)  # empty: argmax at (0, 0), not in tile 1
