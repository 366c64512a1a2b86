"""The cut-out validation split (bench/cutout_split.py): the box is exactly the opaque pixels."""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SPEC = importlib.util.spec_from_file_location(
    "cutout_split", Path(__file__).resolve().parents[1] / "bench" / "cutout_split.py"
)
cutout_split = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cutout_split)


def stamp(tmp_path, opaque=(5, 10, 25, 50), size=(40, 60)):
    """An RGBA stamp, red where opaque (x0, y0, x1, y1), transparent elsewhere."""
    a = np.zeros((size[1], size[0], 4), np.uint8)
    x0, y0, x1, y1 = opaque
    a[y0:y1, x0:x1] = (255, 0, 0, 255)
    path = tmp_path / "thing.png"
    Image.fromarray(a, "RGBA").save(path)
    return path


def test_load_cutout_crops_to_the_opaque_pixels(tmp_path):
    cut = cutout_split.load_cutout(stamp(tmp_path), min_side=8)
    assert cut.size == (20, 40)
    assert np.asarray(cut)[..., 3].min() == 255


def test_load_cutout_refuses_opaque_and_small_pictures(tmp_path):
    opaque = tmp_path / "photo.png"
    Image.new("RGBA", (30, 30), (1, 2, 3, 255)).save(opaque)
    assert cutout_split.load_cutout(opaque, min_side=8) is None
    assert cutout_split.load_cutout(stamp(tmp_path), min_side=32) is None  # 20 px wide


def test_paste_gives_the_box_of_the_pasted_pixels(tmp_path):
    cut = cutout_split.load_cutout(stamp(tmp_path), min_side=8)  # 20 x 40, all opaque
    scene = Image.new("RGB", (100, 100), (0, 0, 255))
    picture, box = cutout_split.paste(scene, cut, side=20, x=30, y=50)  # scaled by 1/2: 10 x 20
    assert box == [30, 50, 40, 70]
    a = np.asarray(picture)
    red = (a[..., 0] > 200) & (a[..., 2] < 50)
    ys, xs = np.nonzero(red)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
    assert scene.getpixel((35, 60)) == (0, 0, 255)  # the scene itself is left alone


def test_cutouts_skip_drawings(tmp_path):
    for sub in ("animals", "animals/cartoon", "symbols/math"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (4, 4)).save(tmp_path / sub / "x.png")
    assert cutout_split.cutouts(tmp_path) == [tmp_path / "animals" / "x.png"]
