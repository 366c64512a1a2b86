"""Images with several frames (animated GIF, multi-page TIFF): the first frame is explained,
and a warning says so; a still image gives no warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from rtsal.data.images import load_image

skdata = pytest.importorskip("skimage.data")


def _crops() -> list[Image.Image]:
    """Three different 120x100 crops of a real photo."""
    cat = skdata.chelsea()  # (300, 451, 3)
    return [Image.fromarray(cat[20 * i : 20 * i + 100, 60 * i : 60 * i + 120]) for i in range(3)]


def _gif_frames() -> list[Image.Image]:
    """The crops in palette mode, so that what the GIF stores is known exactly."""
    return [im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=0) for im in _crops()]


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_several_frames_warn_and_give_the_first(tmp_path, suffix):
    frames = _gif_frames() if suffix == ".gif" else _crops()
    path = tmp_path / f"cat{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as check:
        assert check.n_frames == 3
    with pytest.warns(UserWarning) as record:
        im = load_image(path)
    assert [str(w.message) for w in record] == [f"{path}: 3 frames; explaining the first"]
    got = np.asarray(im)
    expected = [np.asarray(f.convert("RGB")) for f in frames]
    assert im.mode == "RGB" and im.size == (120, 100)
    assert np.array_equal(got, expected[0])
    assert not np.array_equal(got, expected[1]) and not np.array_equal(got, expected[2])


def test_a_single_frame_gif_gives_no_warning(tmp_path):
    (frame,) = _gif_frames()[:1]
    path = tmp_path / "still.gif"
    frame.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        im = load_image(path)
    assert np.array_equal(np.asarray(im), np.asarray(frame.convert("RGB")))
