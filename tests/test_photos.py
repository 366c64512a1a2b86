"""Training photos: evaluation photos never reach training, duplicates are dropped, and the
black box labels any folder with its own top-1 class."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.data.folders import ImageFileDataset, open_dataset
from rtsal.data.photos import (
    assert_no_evaluation_photos,
    difference_hash,
    hamming,
    index_photos,
    is_evaluation_photo,
    select_training_photos,
)
from rtsal.errors import DataError
from tests.helpers import SHARED_DATA

VAL_BOXES = SHARED_DATA / "imagenet-val-boxes"
SAMPLE = SHARED_DATA / "imagenet-sample"
needs_shared = pytest.mark.skipif(
    not (VAL_BOXES.is_dir() and SAMPLE.is_dir()),
    reason="../shared/data/imagenet-val-boxes and imagenet-sample are not present",
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RTSAL_CACHE", str(tmp_path / "cache"))


def _sample_photos(n: int) -> list[Path]:
    return sorted(SAMPLE.iterdir())[:n]


def test_evaluation_names():
    assert is_evaluation_photo("x/ILSVRC2012_val_00000355.JPEG")
    assert is_evaluation_photo("ilsvrc2012_val_1.png")
    assert not is_evaluation_photo("x/n01440764_tench.JPEG")
    assert not is_evaluation_photo("x/my_ILSVRC2012_val_1.png")  # only as the name's start


def test_hamming_counts_bits():
    a = np.array([0b1011, 0], dtype=np.uint64)
    b = np.array([0b0001, (1 << 64) - 1], dtype=np.uint64)
    assert hamming(a, b).tolist() == [[2, 61], [1, 64]]


def test_difference_hash_survives_resizing_and_differs_between_photos(tmp_path):
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    coffee = Image.fromarray(data.coffee())
    small = cat.resize((227, 227))  # the evaluation set's squashing
    h = np.array([difference_hash(im) for im in (cat, small, coffee)], dtype=np.uint64)
    d = hamming(h, h)
    assert d[0, 1] <= 4  # same photo, resized without keeping the aspect
    assert d[0, 2] > 16  # another photo


@needs_shared
def test_training_leaves_out_evaluation_photos_by_name_and_by_content(tmp_path):
    data = tmp_path / "photos" / "mixed"
    data.mkdir(parents=True)
    train_photos = _sample_photos(6)
    for p in train_photos:
        shutil.copy(p, data / p.name)
    val = sorted(VAL_BOXES.glob("ILSVRC2012_val_*"))
    shutil.copy(val[0], data / val[0].name)  # by name
    Image.open(val[1]).resize((300, 260)).save(data / "renamed_copy.jpg", quality=92)  # by content
    sel = select_training_photos(data, labels="blackbox", black_box=_FakeBox(), exclude=[VAL_BOXES])
    kept = {p.name for p, _ in sel.samples}
    assert kept == {p.name for p in train_photos}
    assert sel.evaluation_named == 1 and sel.evaluation_lookalike == 1
    assert sel.found == 8


def test_the_data_loader_refuses_evaluation_photos(tmp_path):
    with pytest.raises(DataError, match="evaluation photo"):
        ImageFileDataset(
            [(tmp_path / "ILSVRC2012_val_00000001.JPEG", 0)], ["a"], size=(8, 8), train=True
        )
    with pytest.raises(DataError, match="measuring only"):
        assert_no_evaluation_photos([(Path("ILSVRC2012_val_00000002.JPEG"), 3)])
    # evaluation may read them
    ImageFileDataset([(tmp_path / "ILSVRC2012_val_00000001.JPEG", 0)], ["a"], size=(8, 8))


@needs_shared
def test_a_folder_inside_an_evaluation_folder_is_refused():
    with pytest.raises(DataError, match="inside the evaluation folder"):
        select_training_photos(
            VAL_BOXES, labels="blackbox", black_box=_FakeBox(), exclude=[VAL_BOXES]
        )


@needs_shared
def test_duplicates_are_dropped(tmp_path):
    data = tmp_path / "dups"
    data.mkdir()
    photos = _sample_photos(3)
    for p in photos:
        shutil.copy(p, data / p.name)
    shutil.copy(photos[0], data / "copy_of_first.jpg")
    sel = select_training_photos(data, labels="blackbox", black_box=_FakeBox())
    assert sel.duplicates == 1 and len(sel.samples) == 3
    no_dedup = select_training_photos(data, labels="blackbox", black_box=_FakeBox(), dedup=False)
    assert len(no_dedup.samples) == 4


class _FakeBox:
    """A black box whose top-1 is the photo's mean brightness bucket (known answers), counting
    its calls."""

    name = "fake-box"
    input_size = (32, 32)
    interpolation = "bilinear"
    crop_pct = 1.0
    num_classes = 10
    calls = 0

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        bucket = (x.mean(dim=(1, 2, 3)) * 10).long().clamp(0, 9)
        p = torch.full((x.shape[0], 10), 0.02)  # rows sum to 1
        p[torch.arange(x.shape[0]), bucket] = 0.82
        return p


def test_black_box_labels_with_a_confidence_floor_and_a_cache(tmp_path):
    data = tmp_path / "any-folder" / "nested"
    data.mkdir(parents=True)
    for i, v in enumerate((30, 120, 235)):  # noise around a brightness: distinct photos
        a = np.random.default_rng(i).integers(v - 15, v + 15, (30, 40, 3))
        Image.fromarray(a.astype(np.uint8)).save(data / f"img{i}.png")
    sel = select_training_photos(tmp_path / "any-folder", labels="blackbox", black_box=_FakeBox())
    assert [(p.name, y) for p, y in sel.samples] == [
        ("img0.png", 1),
        ("img1.png", 4),
        ("img2.png", 9),
    ]
    calls = _FakeBox.calls
    again = select_training_photos(tmp_path / "any-folder", labels="blackbox", black_box=_FakeBox())
    assert again.samples == sel.samples and _FakeBox.calls == calls  # cached, no new pass


def test_confidence_floor(tmp_path):
    data = tmp_path / "f"
    data.mkdir()
    Image.new("RGB", (40, 30), (120, 120, 120)).save(data / "a.png")
    with pytest.raises(DataError, match="below the confidence floor"):
        select_training_photos(data, labels="blackbox", black_box=_FakeBox(), min_confidence=0.9)
    sel = select_training_photos(data, labels="blackbox", black_box=_FakeBox(), min_confidence=0.8)
    assert len(sel.samples) == 1


@needs_shared
def test_black_box_labels_match_its_top1_on_real_photos(tmp_path):
    from rtsal.registry.blackbox import create_black_box

    box = create_black_box("efficientnet_lite0")
    photos = _sample_photos(6)
    infos, bad = index_photos(photos, black_box=box, batch_size=4, index_file=tmp_path / "i.jsonl")
    assert not bad
    from rtsal.data.images import load_image, photo_transform, pil_to_tensor

    t = photo_transform(box.input_size, False, box.interpolation, box.crop_pct)
    x = torch.stack([pil_to_tensor(t(load_image(p))) for p in photos])
    with torch.inference_mode():
        p = box.probabilities(x)
    assert [i.label for i in infos] == p.argmax(1).tolist()
    assert np.allclose([i.confidence for i in infos], p.max(1).values.numpy(), atol=1e-4)
    # ImageNet photos named by synset: the black box agrees with the name on most of them
    from rtsal.data.folders import _label_for
    from rtsal.registry.classes import ClassResolver

    resolver = ClassResolver.for_black_box(box)
    named = [_label_for(p.stem, resolver) for p in photos]
    assert sum(a == b for a, b in zip(named, [i.label for i in infos], strict=True)) >= 4


def test_blackbox_labels_only_for_training(tmp_path):
    with pytest.raises(DataError, match="applies to training"):
        open_dataset(str(tmp_path), labels="blackbox", resolver=object())


def test_flat_images_of_different_colours_are_not_duplicates(tmp_path):
    data = tmp_path / "flat"
    data.mkdir()
    for i, rgb in enumerate([(200, 0, 0), (0, 200, 0), (200, 0, 0)]):
        Image.new("RGB", (20, 20), rgb).save(data / f"{i}.png")
    sel = select_training_photos(data, labels="blackbox", black_box=_FakeBox(), min_confidence=0)
    assert sel.duplicates == 1  # the second red one
    assert sorted(p.name for p, _ in sel.samples) == ["0.png", "1.png"]
