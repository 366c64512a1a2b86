"""Large images: the overlay and the pair are drawn a strip of rows at a time, giving the same
files as drawing them whole (checked against the whole-image drawing, on a real photo cut into
strips of 7 rows, a number that divides neither its height nor anything else)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from rtsal.data.images import pil_to_tensor
from rtsal.inference.explainer import Explanation
from rtsal.inference.visualize import overlay
from rtsal.runs import outputs as files_module


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _whole(im: Image.Image, mask: torch.Tensor) -> tuple[bytes, bytes]:
    """The overlay and pair drawn on the whole image at once (as before strips)."""
    x, m = pil_to_tensor(im), mask[None]
    pair = torch.cat(
        [x * m, torch.ones(3, x.shape[1], max(4, x.shape[2] // 50)), x * (1 - m)], dim=2
    )
    pair_img = Image.fromarray((pair.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    return _jpeg(overlay(x, m)), _jpeg(pair_img)


@pytest.mark.parametrize("rows", [7, 10_000])
def test_strips_give_the_files_of_the_whole_image(tmp_path, monkeypatch, rows):
    im = Image.fromarray(skdata.chelsea())  # 451 x 300
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 300), torch.linspace(0, 1, 451), indexing="ij")
    mask = (1 - ((yy - 0.4) ** 2 + (xx - 0.55) ** 2).sqrt() * 2).clamp(0, 1)  # a soft disc
    e = Explanation(281, "tabby", mask, 0.5, 0.4, 0.1, float(mask.mean()), None)
    files = {k: str(tmp_path / f"cat.{k}") for k in ("mask", "overlay", "pair", "npy")}
    files = {**files, "mask": files["mask"] + ".png"}
    files = {**files, "overlay": files["overlay"] + ".jpg", "pair": files["pair"] + ".jpg"}
    monkeypatch.setattr(files_module, "STRIP_ROWS", rows)
    files_module.save_outputs(files, im, e)
    overlay_bytes, pair_bytes = _whole(im, mask)
    with open(files["overlay"], "rb") as f:
        assert f.read() == overlay_bytes
    with open(files["pair"], "rb") as f:
        assert f.read() == pair_bytes
    saved = np.asarray(Image.open(files["mask"]))
    assert saved.shape == (300, 451)
    assert np.array_equal(saved, (mask.numpy() * 255 + 0.5).astype(np.uint8))
    assert np.array_equal(np.load(files["npy"]), mask.numpy())
    assert Image.open(files["pair"]).size == (2 * 451 + 9, 300)  # gap: max(4, 451 // 50)
