"""Validation by box localisation (``rtsal train --val-boxes``): scores worked out by hand on
real photos with chosen boxes, and evaluation photos refused as validation photos."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from rtsal.errors import DataError
from rtsal.registry.classes import ClassResolver
from tests.helpers import SHARED_DATA

SAMPLE = SHARED_DATA / "imagenet-sample"
VAL_BOXES = SHARED_DATA / "imagenet-val-boxes"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data is not present")

# Three photos re-saved at 128×128, so that the validator's 64×64 halves every edge exactly.
# Against the whole image, box 0 (100×100) has IoU 0.61 (a hit), box 1 (40×40) 0.10 and box 2
# (64×128) exactly 0.5 (a miss: the test is IoU > 0.5).
BOXES = [[14, 14, 114, 114], [0, 0, 40, 40], [64, 0, 128, 128]]


@pytest.fixture()
def box_folder(tmp_path):
    folder = tmp_path / "boxes"
    folder.mkdir()
    table = {}
    photos = sorted(SAMPLE.iterdir())[::100][:3]
    for i, (p, box) in enumerate(zip(photos, BOXES, strict=True)):
        name = f"photo{i}.png"
        Image.open(p).convert("RGB").resize((128, 128)).save(folder / name)
        table[name] = {"synset": p.name.split("_")[0], "boxes": [box]}
    (folder / "boxes.json").write_text(json.dumps(table))
    return folder


class _Masks(torch.nn.Module):
    """A 'masking model' whose mask for a class is a fixed map (the box, or the whole image)."""

    def __init__(self, by_class: dict[int, torch.Tensor]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.by_class = by_class

    def forward(self, x, classes):
        mask = torch.stack([self.by_class[int(c)] for c in classes]).unsqueeze(1)
        return type("Out", (), {"mask": mask})


def _box_mask(box, size=64):
    m = torch.zeros(size, size)
    x0, y0, x1, y1 = (v // 2 for v in box)
    m[y0:y1, x0:x1] = 1
    return m


def test_box_localisation_by_hand(box_folder):
    from rtsal.registry.blackbox import create_black_box
    from rtsal.training.validation import Validator, read_box_photos

    black_box = create_black_box("efficientnet_lite0")
    photos = read_box_photos(box_folder, ClassResolver.for_black_box(black_box))
    assert [len(b) for _, _, b in photos] == [1, 1, 1]
    v = Validator([], black_box, (64, 64), box_photos=photos)
    classes = [c for _, c, _ in photos]
    exact = v(_Masks({c: _box_mask(b) for c, b in zip(classes, BOXES, strict=True)}))
    assert exact["box_loc"] == 1.0 and exact["score"] == 1.0
    assert "mosaic_loc" not in exact  # no held-out photos: box validation only
    whole = v(_Masks({c: torch.ones(64, 64) for c in classes}))
    assert whole["box_loc"] == pytest.approx(1 / 3) and whole["box_area"] == 1.0
    empty = v(_Masks({c: torch.zeros(64, 64) for c in classes}))
    assert empty["box_loc"] == 0.0


def test_evaluation_photos_are_refused_for_validation(box_folder, tmp_path):
    from rtsal.training.validation import read_box_photos

    resolver = ClassResolver([f"class{i}" for i in range(3)])
    with pytest.raises(DataError, match="evaluation folder"):
        read_box_photos(box_folder, resolver, exclude=[box_folder.parent])
    named = tmp_path / "named"
    named.mkdir()
    val = next(VAL_BOXES.glob("ILSVRC2012_val_*"))
    shutil.copy(val, named / val.name)
    (named / "boxes.json").write_text(json.dumps({val.name: {"label": 0, "boxes": [[0, 0, 9, 9]]}}))
    with pytest.raises(DataError, match="for measuring only"):
        read_box_photos(named / "boxes.json", resolver)
    with pytest.raises(DataError, match="not found"):
        read_box_photos(tmp_path / "nowhere.json", resolver)
