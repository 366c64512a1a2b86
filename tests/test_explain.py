"""`rtsal explain` on real photographs (scikit-image's), in every image mode, with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.data.images import fit_size
from tests.helpers import (
    LITE_PLUGIN,
    assert_one_line_error,
    drop_batch_norms,
    randomise_batch_norms,
    run_main,
    run_rtsal,
)

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("rtsal_efficientnet_lite")
PLUGINS = LITE_PLUGIN


def save_lite0_masker(out: Path, randomise_decoder_batch_norms: bool = False) -> Path:
    """An untrained Lite0 masking model, written as a checkpoint to ``out``."""
    from rtsal.engine.checkpoint import save_masker
    from rtsal.engine.model import MaskerConfig, build_masking_model
    from rtsal.registry.plugins import reset_plugin_manager

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
    if randomise_decoder_batch_norms:  # the encoder is the black box's network: left alone
        for child in model.children():
            if child is not model.encoder:
                randomise_batch_norms(child, seed=7)
    save_masker(out, model, box, training={}, final_losses={}, objective={})
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An (untrained) Lite0 masking model: the pipeline, not the mask quality, is under test."""
    return save_lite0_masker(tmp_path_factory.mktemp("ckpt") / "lite0")


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
    run = run_main(
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
    run = run_main("explain", tmp_path / "nope.jpg", "--checkpoint", checkpoint, env=PLUGINS)
    assert_one_line_error(run, "nope.jpg", "no such file")
    run = run_main("explain", tmp_path, "--checkpoint", tmp_path / "none", env=PLUGINS)
    assert_one_line_error(run, "checkpoint not found")


def test_explain_inputs_is_the_command_as_a_function(checkpoint, photos, tmp_path):
    """The library call behind `rtsal explain`: records and errors as they come, missing and
    unreadable inputs counted, the contact sheet written."""
    from rtsal.runs.explain import explain_inputs

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    records: list[dict] = []
    errors: list[str] = []
    run = explain_inputs(
        [str(photos / "chelsea.jpg"), str(tmp_path / "broken.jpg"), str(tmp_path / "nope.jpg")],
        out=tmp_path / "out",
        classes=["tiger cat", "967"],
        checkpoint=checkpoint,
        device="cpu",
        on_record=records.append,
        on_error=errors.append,
    )
    assert run.video is None and run.out == tmp_path / "out"
    assert run.summary.explained == 1 and run.not_read == 2
    assert [r["class_index"] for r in records] == [282, 967]
    assert records == run.summary.records
    assert "nope.jpg" in errors[0] and "broken.jpg" in errors[1]  # missing ones first
    assert (tmp_path / "out" / "index.html").is_file()


def test_usage_errors_exit_2_before_any_model_is_loaded(tmp_path):
    run = run_main("explain", tmp_path / "a.mp4", tmp_path / "b.jpg", "--checkpoint", "none")
    assert run.code == 2 and "one video at a time" in run.stderr
    run = run_main("explain", tmp_path, "--topk", "0")
    assert run.code == 2 and "--topk must be at least 1" in run.stderr


def test_fit_size_keeps_aspect_on_the_stride():
    assert fit_size(451, 300, 224) == (224, 352)  # 224 * 1.503 = 337 -> 352
    assert fit_size(300, 451, 224) == (352, 224)
    assert fit_size(224, 224, 224) == (224, 224)
    assert fit_size(4000, 100, 224) == (224, 448)  # aspect capped at 2
    # a short side off the stride (Lite2's 260): a square stays square, never long < short
    assert fit_size(300, 300, 260) == (260, 260)
    assert fit_size(310, 300, 260) == (260, 260)
    assert fit_size(451, 300, 260) == (260, 384)  # 260 * 1.503 = 391 -> 384


def test_shipped_model_explains_with_no_checkpoint_and_is_class_selective(tmp_path):
    """The default model: top-1 masks are several times larger than masks for absent classes."""
    from rtsal.engine.checkpoint import SHIPPED

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


@pytest.mark.parametrize("workers", [0, 3])
def test_files_in_turn_or_pipelined_match_one_by_one_explanations(checkpoint, tmp_path, workers):
    """In turn, or with a reader thread and a writer pool: records in input order, the bad file
    reported in its place, masks equal to explaining each image alone, every file written."""
    from rtsal.inference.explainer import Explainer
    from rtsal.runs.explain import expand_inputs, explain_files

    src = tmp_path / "in"
    src.mkdir()
    photos = {"a_chelsea": skdata.chelsea(), "b_coffee": skdata.coffee()}
    photos["d_rocket"] = skdata.rocket()
    photos["e_astronaut"] = skdata.astronaut()
    for name, arr in photos.items():
        Image.fromarray(arr).save(src / f"{name}.png")
    (src / "c_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    items, missing = expand_inputs([str(src)])
    assert not missing and [it.name for it in items][2] == "c_broken"
    explainer = Explainer(checkpoint, device="cpu")
    errors: list[str] = []
    (tmp_path / "out").mkdir()
    summary = explain_files(
        explainer,
        items,
        out=tmp_path / "out",
        batch_size=2,
        workers=workers,
        on_error=errors.append,
    )
    assert summary.explained == 4 and len(summary.failed) == 1 and "c_broken" in errors[0]
    assert [Path(r["input"]).stem for r in summary.records] == sorted(photos)
    for rec in summary.records:
        im = Image.open(rec["input"]).convert("RGB")
        (alone,) = explainer.explain_batch([im], [rec["class_index"]])[0]
        written = np.asarray(Image.open(rec["files"]["mask"]), dtype=np.float32) / 255
        assert np.abs(written - alone.mask.numpy()).max() <= 1 / 255 + 1e-6
        assert all(Path(f).stat().st_size > 0 for f in rec["files"].values())


def test_in_background_keeps_order_forwards_errors_and_stops():
    import threading
    import time

    from rtsal.inference.pipeline import in_background

    assert list(in_background(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        list(in_background(failing(), depth=2))

    gen = in_background(iter(range(10**6)), depth=2)
    assert next(gen) == 0
    gen.close()  # the consumer stops early: the reader thread must end, not block forever
    deadline = time.time() + 5
    while any(t.name == "rtsal-reader" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "rtsal-reader" for t in threading.enumerate())


def test_folded_batch_norms_give_the_same_masks(tmp_path):
    """The explanation path folds the decoder's BatchNorms; masks must not change. The
    BatchNorms have random statistics (an untrained model's are identities, and folding those
    could not go wrong): the masks without them differ, with them folded they do not."""
    from rtsal.inference.explainer import Explainer

    checkpoint = save_lite0_masker(tmp_path / "lite0", randomise_decoder_batch_norms=True)
    im = Image.fromarray(skdata.chelsea())
    fused = Explainer(checkpoint, device="cpu").explain_batch([im], [281])[0][0]
    plain = Explainer(checkpoint, device="cpu", fuse=False).explain_batch([im], [281])[0][0]
    assert (fused.mask - plain.mask).abs().max() < 1e-5
    assert fused.p_preserved == pytest.approx(plain.p_preserved, abs=1e-5)

    skipped = Explainer(checkpoint, device="cpu", fuse=False)
    drop_batch_norms(skipped.model.upsamplers)  # the BatchNorms skipped instead of folded
    dropped = skipped.explain_batch([im], [281])[0][0]
    assert (dropped.mask - plain.mask).abs().max() > 1e-2


def _write_clip(path: Path, frames: int, size=(96, 64)) -> None:
    av = pytest.importorskip("av")
    photo = Image.fromarray(skdata.chelsea())
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    for i in range(frames):
        crop = photo.crop((i * 8, 0, i * 8 + 300, 200)).resize(size)
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(crop), format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def test_video_in_turn_and_threaded_write_the_same_overlays(checkpoint, tmp_path):
    from rtsal.inference.explainer import Explainer
    from rtsal.inference.video import explain_video

    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames=8)
    explainer = Explainer(checkpoint, device="cpu")
    outs = {}
    for workers in (0, 1):
        dst = tmp_path / f"out{workers}.mp4"
        stats = explain_video(explainer, clip, dst, short_side=64, workers=workers)
        assert stats["frames"] == 8
        outs[workers] = _frames(dst)
    assert len(outs[0]) == len(outs[1]) == 8
    assert outs[0][0].shape == (64, 96, 3)
    src = _frames(clip)
    for a, b, s in zip(outs[0], outs[1], src, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2  # same masks, lossy codec
        assert np.abs(a.astype(int) - s.astype(int)).mean() > 2  # the heat map is drawn on


def test_corrupt_video_is_one_line(checkpoint, tmp_path):
    pytest.importorskip("av")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    run = run_main("explain", bad, "--checkpoint", checkpoint, env=PLUGINS)
    assert run.code != 0
    assert_one_line_error(run)


def test_onnxruntime_backend_matches_pytorch_and_caches_its_export(tmp_path, monkeypatch):
    """The shipped model under ONNX Runtime: same top-1, masks and probabilities as PyTorch."""
    pytest.importorskip("onnxruntime")
    from rtsal.engine.checkpoint import default_checkpoint
    from rtsal.inference.explainer import Explainer

    checkpoint = default_checkpoint()

    monkeypatch.setenv("RTSAL_CACHE", str(tmp_path / "cache"))
    ims = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    torch_ex = Explainer(checkpoint, device="cpu", resize="square")
    onnx_ex = Explainer(checkpoint, backend="onnxruntime", resize="square")
    exported = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    x = torch.stack([torch_ex.prepare(im) for im in ims])
    m_t, logits_t, top_t = torch_ex.masks(x, None)  # top-1 (class -1 in the exported graph)
    m_o, logits_o, top_o = onnx_ex.masks(x, None)
    assert torch.equal(top_t, top_o)
    assert (m_t - m_o).abs().max() < 1e-4
    assert (logits_t.softmax(1) - logits_o.softmax(1)).abs().max() < 1e-4
    # explicit classes, several per image (the top-1 shortcut does not apply)
    pairs = zip(
        torch_ex.explain_batch(ims[:1], [281, 1]),
        onnx_ex.explain_batch(ims[:1], [281, 1]),
        strict=True,
    )
    for a, b in pairs:
        for ea, eb in zip(a, b, strict=True):
            assert ea.class_index == eb.class_index
            assert (ea.mask - eb.mask).abs().max() < 1e-4
    Explainer(checkpoint, backend="onnxruntime")  # a second load reuses the cached file
    assert exported[0].stat().st_mtime_ns == stamp


def test_onnxruntime_backend_refuses_other_methods(checkpoint, photos):
    run = run_rtsal(  # in a process of its own, as a user runs it
        "explain", photos, "--checkpoint", checkpoint, "--method", "gradcam",
        "--backend", "onnxruntime", env=PLUGINS,
    )  # fmt: skip
    assert_one_line_error(run, "onnxruntime")
