"""Hostile and broken input: every file a user passes gets one clear line, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rtsal.data.images import load_image
from rtsal.errors import DataError, RtsalError
from tests.helpers import LITE_PLUGIN, assert_one_line_error, run_rtsal


def _png_bytes(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_zero_byte_image(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="not an image"):
        load_image(p)


def test_truncated_image(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_image(p)


def test_non_image_with_an_image_extension(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is text, not a picture\n")
    with pytest.raises(DataError, match="not an image"):
        load_image(p)


def test_decompression_bomb_is_refused_and_the_limit_is_configurable(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(p)  # 9 Mpx, tiny on disk
    monkeypatch.setenv("RTSAL_MAX_PIXELS", "1000000")
    with pytest.raises(DataError, match="exceeds the limit of 1000000 pixels"):
        load_image(p)
    monkeypatch.setenv("RTSAL_MAX_PIXELS", "10000000")
    assert load_image(p).size == (3000, 3000)


def test_unreadable_paths(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    d = tmp_path / "folder.jpg"
    d.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load_image(d)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_the_loader_with_random_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fuzz") / "x.png"
    p.write_bytes(data)
    try:
        im = load_image(p)
    except DataError:
        return
    assert im.mode == "RGB" and im.width > 0 and im.height > 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_the_loader_with_damaged_real_files(tmp_path_factory, data):
    raw = bytearray(_png_bytes((16, 16)))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    p = tmp_path_factory.mktemp("fuzz") / "y.png"
    p.write_bytes(bytes(raw[:cut]))
    with contextlib.suppress(DataError):  # any other exception fails the test
        load_image(p)


def test_unwritable_output_for_explain(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(_png_bytes())
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    run = run_rtsal("explain", img, "--out", blocker, env=LITE_PLUGIN)
    assert_one_line_error(run, "not a directory")
    run = run_rtsal("explain", img, "--out", blocker / "sub", env=LITE_PLUGIN)
    assert_one_line_error(run, "cannot write to output directory")
    assert blocker.read_text() == "x"


def test_pickled_checkpoint_payload_is_refused_not_run(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran.txt')!r}, 'w').write('ran')",))

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with open(ckpt / "model.pth", "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    from rtsal.errors import CheckpointError
    from rtsal.registry.weights import load_state_dict

    with pytest.raises(CheckpointError, match="refusing to load"):
        load_state_dict(ckpt / "model.pth")
    assert not (tmp_path / "ran.txt").exists()
    run = run_rtsal(
        "train",
        "--blackbox",
        "resnet18",
        "--weights",
        ckpt / "model.pth",
        "--data",
        tmp_path,
        "--out",
        tmp_path / "o",
    )
    assert_one_line_error(run, "refusing to load")
    assert not (tmp_path / "ran.txt").exists()


def test_nan_losses_are_skipped_then_stop_with_a_clear_error(tmp_path, recwarn):
    from torch import nn

    from rtsal.registry.blackbox import BlackBox
    from rtsal.training.trainer import TrainConfig, Trainer

    class NaNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3))) * float("nan")

    box = BlackBox(
        NaNNet(),
        name="nan",
        class_names=["a", "b"],
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        input_size=(16, 16),
    )
    src = tmp_path / "data"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(src / cls / f"{i}.png")
    cfg = TrainConfig(
        blackbox="nan",
        data=str(src),
        out=str(tmp_path / "o"),
        steps=20,
        batch_size=4,
        encoder="small",
        small_widths=(8, 8, 8),
        upsampler_channels=(8, 8),
        max_bad_steps=3,
    )
    with pytest.raises(RtsalError, match="3 non-finite losses in a row"):
        Trainer(cfg, black_box=box).fit()
    assert sum("non-finite loss" in str(w.message) for w in recwarn) == 3


def test_corrupt_training_state_is_one_line(tmp_path):
    (tmp_path / "training_state.safetensors").write_bytes(b"garbage" * 10)
    run = run_rtsal("train", "--resume", tmp_path)
    assert_one_line_error(run, "unreadable training state")


def test_truncated_checkpoint_weights(tmp_path):
    from rtsal.engine.checkpoint import MASKER_FORMAT, read_checkpoint
    from rtsal.errors import CheckpointError

    (tmp_path / "rtsal.json").write_text(
        json.dumps({"format": "rtsal-masking-model", "weights": "model.safetensors"})
    )
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        read_checkpoint(tmp_path, expected_format=MASKER_FORMAT)
