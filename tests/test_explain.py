"""`rtsal explain` on real photographs (scikit-image's), in every image mode, with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.explain import fit_size, threshold_box
from tests.helpers import assert_one_line_error, run_rtsal

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("rtsal_efficientnet_lite")
PLUGINS = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": ""}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An (untrained) Lite0 masking model: the pipeline, not the mask quality, is under test."""
    from rtsal.checkpoint import save_masker
    from rtsal.model import MaskerConfig, build_masking_model
    from rtsal.plugins import reset_plugin_manager

    reset_plugin_manager(None)
    from rtsal import create_black_box

    box = create_black_box("efficientnet_lite0")
    torch.manual_seed(0)
    cfg = MaskerConfig(
        num_classes=1000,
        encoder="blackbox",
        embedding="classifier-tied",
        upsampler_channels=(64, 32, 16),
    )
    model = build_masking_model(cfg, box)
    out = tmp_path_factory.mktemp("ckpt") / "lite0"
    save_masker(out, model, box, training={}, final_losses={}, objective={})
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.chelsea()).save(d / "chelsea.jpg")
    Image.fromarray(skdata.coffee()).save(d / "coffee.png")
    return d


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_json_fields_are_consistent(checkpoint, photos, tmp_path):
    run = run_rtsal(
        "explain",
        photos,
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path,
        "--json",
        "--save-npy",
        env=PLUGINS,
    )
    assert run.code == 0, run.stderr
    recs = _records(run.stdout)
    assert {Path(r["input"]).name for r in recs} == {"chelsea.jpg", "coffee.png"}
    for r in recs:
        for k in ("p_image", "p_image_times_mask", "p_image_times_inverse_mask", "mask_area"):
            assert 0.0 <= r[k] <= 1.0
        with Image.open(r["input"]) as im:
            size = im.size
        assert (r["width"], r["height"]) == size
        if r["box"] is not None:
            x0, y0, x1, y1 = r["box"]
            assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
        for f in r["files"].values():
            assert Path(f).is_file()
        with Image.open(r["files"]["mask"]) as m:
            assert m.size == size and m.mode == "L"
        npy = np.load(r["files"]["npy"])
        assert npy.shape == (size[1], size[0])
        assert abs(float(npy.mean()) - r["mask_area"]) < 1e-4
    chelsea = next(r for r in recs if r["input"].endswith("chelsea.jpg"))
    assert chelsea["class_name"] in {"Egyptian cat", "tabby", "tiger cat"}  # top-1 by default
    assert (tmp_path / "index.html").read_text().count("<tr>") == 1 + len(recs)


def test_classes_by_name_and_topk(checkpoint, photos):
    run = run_rtsal(
        "explain",
        photos / "chelsea.jpg",
        "--checkpoint",
        checkpoint,
        "--json",
        "--class",
        "beagle",
        "--class",
        "egyptian_cat",
        env=PLUGINS,
    )
    assert run.code == 0, run.stderr
    assert [r["class_index"] for r in _records(run.stdout)] == [162, 285]
    run = run_rtsal(
        "explain",
        photos / "coffee.png",
        "--checkpoint",
        checkpoint,
        "--json",
        "--topk",
        3,
        env=PLUGINS,
    )
    recs = _records(run.stdout)
    assert len(recs) == 3 and recs[0]["p_image"] >= recs[1]["p_image"] >= recs[2]["p_image"]


def test_unknown_class_is_one_line(checkpoint, photos):
    run = run_rtsal(
        "explain",
        photos / "chelsea.jpg",
        "--checkpoint",
        checkpoint,
        "--class",
        "beagel",
        env=PLUGINS,
    )
    assert_one_line_error(run, "unknown class 'beagel'", "beagle")


def test_every_image_mode(checkpoint, tmp_path):
    rgb = Image.fromarray(skdata.chelsea())
    src = tmp_path / "in"
    src.mkdir()
    rgb.convert("L").save(src / "grey.png")
    rgb.convert("RGBA").save(src / "rgba.png")
    rgb.convert("P").save(src / "palette.png")
    a16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(a16).save(src / "sixteen.png")  # mode I;16
    rgb.save(src / "web.webp")
    rgb.save(src / "tiff.tif")
    rgb.save(src / "bitmap.bmp")
    run = run_rtsal(
        "explain", src, "--checkpoint", checkpoint, "--json", "--out", tmp_path / "out", env=PLUGINS
    )
    assert run.code == 0, run.stderr
    recs = _records(run.stdout)
    assert len(recs) == 7
    for r in recs:
        assert (r["width"], r["height"]) == rgb.size


def test_exif_orientation_is_honoured(checkpoint, tmp_path):
    rgb = Image.fromarray(skdata.chelsea())  # 451 x 300
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    rgb.save(tmp_path / "rotated.jpg", exif=exif)
    run = run_rtsal(
        "explain", tmp_path / "rotated.jpg", "--checkpoint", checkpoint, "--json", env=PLUGINS
    )
    assert run.code == 0, run.stderr
    r = _records(run.stdout)[0]
    assert (r["width"], r["height"]) == (300, 451)


def test_folder_with_a_corrupt_file(checkpoint, photos, tmp_path):
    src = tmp_path / "mixed"
    src.mkdir()
    for p in photos.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    run = run_rtsal("explain", src, "--checkpoint", checkpoint, "--json", env=PLUGINS)
    assert run.code == 3
    assert "Traceback" not in run.stderr
    assert len(_records(run.stdout)) == 2  # the good ones are explained
    errors = [ln for ln in run.error_lines if ln.startswith("error:")]
    assert len(errors) == 2
    assert any("broken.jpg" in e for e in errors) and any("empty.png" in e for e in errors)


def test_missing_input_and_checkpoint(checkpoint, tmp_path):
    run = run_rtsal("explain", tmp_path / "nope.jpg", "--checkpoint", checkpoint, env=PLUGINS)
    assert_one_line_error(run, "nope.jpg", "no such file")
    run = run_rtsal("explain", tmp_path, "--checkpoint", tmp_path / "none", env=PLUGINS)
    assert_one_line_error(run, "checkpoint not found")


def test_threshold_box_by_hand():
    m = torch.zeros(6, 8)
    assert threshold_box(m) is None
    m[1, 2] = 0.9
    m[4, 5] = 0.6
    m[3, 7] = 0.5  # not above 0.5
    assert threshold_box(m) == (2, 1, 6, 5)


def test_fit_size_keeps_aspect_on_the_stride():
    assert fit_size(451, 300, 224) == (224, 352)  # 224 * 1.503 = 337 -> 352
    assert fit_size(300, 451, 224) == (352, 224)
    assert fit_size(224, 224, 224) == (224, 224)
    assert fit_size(4000, 100, 224) == (224, 448)  # aspect capped at 2


def test_shipped_model_explains_with_no_checkpoint_and_is_class_selective(tmp_path):
    """The default model: top-1 masks are several times larger than masks for absent classes."""
    from rtsal.explain import SHIPPED

    if not (SHIPPED / "rtsal.json").is_file():
        pytest.fail("the shipped masking model is missing from rtsal/assets")
    names = ("coffee", "rocket", "camera", "astronaut")
    for n in names:
        Image.fromarray(getattr(skdata, n)()).save(tmp_path / f"{n}.png")
    top1 = _records(run_rtsal("explain", tmp_path, "--json", env=PLUGINS).stdout)
    absent = _records(
        run_rtsal(
            "explain",
            tmp_path,
            "--json",
            "--class",
            "airliner",
            "--class",
            "great white shark",
            env=PLUGINS,
        ).stdout
    )
    assert len(top1) == len(names) and len(absent) == 2 * len(names)
    for r in top1:
        others = [a["mask_area"] for a in absent if a["input"] == r["input"]]
        assert r["mask_area"] > 3 * max(others), (r["input"], r["mask_area"], others)
        assert r["p_image"] > 0.15  # a confident prediction is what is explained
