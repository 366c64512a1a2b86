"""Per-image box files (``{file: {synset, boxes}}``, as imagenet-val-boxes/boxes.json)."""

from __future__ import annotations

import json

import pytest

from rtsal.data.annotations import read_boxes, read_image_box_json
from rtsal.errors import DataError
from tests.helpers import SHARED_DATA


def test_read_by_hand(tmp_path):
    f = tmp_path / "boxes.json"
    f.write_text(
        json.dumps(
            {
                "a.JPEG": {
                    "label": 260,
                    "synset": "n02112137",
                    "boxes": [[51.8, 61.3, 199.1, 214.5]],
                },
                "b.png": {"name": "tiger beetle", "boxes": [[0, 0, 10, 5], [2, 2, 4, 4]]},
                "c.png": {"label": 7, "boxes": []},
            }
        )
    )
    expected = {
        "a.JPEG": [("n02112137", (52, 61, 199, 215))],
        "b.png": [("tiger beetle", (0, 0, 10, 5)), ("tiger beetle", (2, 2, 4, 4))],
        "c.png": [],
    }
    assert read_image_box_json(f) == expected
    assert read_boxes(f) == expected  # .json told apart from COCO by its shape
    assert read_boxes(tmp_path) == expected  # a folder holding boxes.json


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"boxes": [[0, 0, 1, 1]]}, "names no class"),
        ({"synset": "n1", "boxes": [[0, 0, 1]]}, "must be"),
        ({"synset": "n1", "boxes": [[5, 0, 1, 1]]}, "empty box"),
        ({"synset": "n1"}, "has no 'boxes'"),
    ],
)
def test_bad_entries_are_one_line(tmp_path, entry, message):
    f = tmp_path / "boxes.json"
    f.write_text(json.dumps({"x.png": entry}))
    with pytest.raises(DataError, match=message):
        read_image_box_json(f)


@pytest.mark.skipif(
    not (SHARED_DATA / "imagenet-val-boxes" / "boxes.json").is_file(),
    reason="../shared/data/imagenet-val-boxes is not present",
)
def test_the_imagenet_val_box_set():
    ann = read_boxes(SHARED_DATA / "imagenet-val-boxes" / "boxes.json")
    assert len(ann) == 629
    assert ann["ILSVRC2012_val_00000355.JPEG"] == [("n02112137", (52, 61, 199, 215))]
    assert all(boxes for boxes in ann.values())
