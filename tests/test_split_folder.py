"""Split folders (train/ and test/ with class sub-folders): class order, decoding, and a
classifier trained on one working as a black box."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.data.arrays import split_folder
from rtsal.data.folders import open_dataset
from rtsal.registry.classes import ClassResolver


def _make(root, names, per_class=6, size=16):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i, name in enumerate(names):
            d = root / split / name.replace("/", "_")
            d.mkdir(parents=True)
            for k in range(per_class):
                a = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                a[:, :, i % 3] = 200 + i  # class i: a bright channel i
                Image.fromarray(a).save(d / f"{split}-{i}-{k}.png")
    return root


def test_class_order_from_canvas_json_or_folders(tmp_path):
    root = _make(tmp_path / "a", ["zebra", "T-shirt/top", "apple"])
    assert split_folder(root) == (["T-shirt_top", "apple", "zebra"], 3)  # sorted folder names
    (root / "canvas.json").write_text(
        json.dumps({"class_names": ["zebra", "T-shirt/top", "apple"]})
    )
    assert split_folder(root) == (["zebra", "T-shirt/top", "apple"], 3)
    assert split_folder(tmp_path / "a" / "train") is None  # no train/ and test/ inside
    (root / "canvas.json").write_text("{")
    from rtsal.errors import DataError

    with pytest.raises(DataError, match="unreadable"):
        split_folder(root)


def test_split_folder_decodes_into_memory_with_the_black_box_order(tmp_path):
    names = ["zebra", "T-shirt/top", "apple"]
    root = _make(tmp_path / "b", names)
    ds = open_dataset(str(root), split="test", resolver=ClassResolver(names))
    assert ds.images.shape == (18, 3, 16, 16) and ds.images.dtype == torch.uint8
    # each class has its own bright channel: labels follow the black box's order
    for i in range(3):
        chans = ds.images[ds.labels == i].float().mean(dim=(0, 2, 3))
        assert int(chans.argmax()) == i % 3 and int((ds.labels == i).sum()) == 6


def test_classifier_trains_on_a_split_folder(tmp_path):
    from rtsal.registry.classifiers import load_classifier
    from rtsal.tools.classifier import ClassifierConfig, train_classifier

    names = ["red", "green", "blue"]
    root = _make(tmp_path / "c", names, per_class=20)
    (root / "canvas.json").write_text(json.dumps({"class_names": names}))
    res = train_classifier(
        ClassifierConfig(
            data=str(root),
            width=8,
            max_steps=30,
            batch_size=20,
            lr=0.1,
            out=str(tmp_path / "clf"),
            device="cpu",
        )
    )
    assert res.test_accuracy == 1.0  # the colour tells the class
    box = load_classifier(tmp_path / "clf")
    assert box.class_names == names and tuple(box.input_size) == (16, 16)
