"""`rtsal export`: the shipped Lite0 masking model as TorchScript and ONNX, checked against
PyTorch on real photos (scikit-image's)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.inference.export import (
    ExportableMasker,
    ExportCheck,
    ExportError,
    ExportResult,
    check_onnx,
    export_onnx,
    export_torchscript,
    sidecar_path,
)
from tests.helpers import LITE_PLUGIN, assert_one_line_error, run_rtsal

skdata = pytest.importorskip("skimage.data")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("rtsal_efficientnet_lite")
PLUGINS = LITE_PLUGIN
CATS = range(281, 286)  # ImageNet's domestic cats: tabby ... Egyptian cat


@pytest.fixture(scope="module")
def wrapper() -> ExportableMasker:
    from rtsal.registry.plugins import reset_plugin_manager

    reset_plugin_manager(None)
    return ExportableMasker.from_checkpoint()  # the shipped model


@pytest.fixture(scope="module")
def exported(wrapper, tmp_path_factory) -> dict[str, ExportResult]:
    out = tmp_path_factory.mktemp("export")
    return {
        "onnx": export_onnx(wrapper, out / "masker.onnx"),
        "torchscript": export_torchscript(wrapper, out / "masker.pt"),
    }


def photo(size: tuple[int, int] = (224, 224)) -> torch.Tensor:
    """Chelsea the cat, (1, 3, H, W) in [0, 1]."""
    im = Image.fromarray(skdata.chelsea()).resize((size[1], size[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255


def reference(wrapper: ExportableMasker, x: torch.Tensor, classes: torch.Tensor):
    with torch.inference_mode():
        mask, probs = wrapper(x, classes)
    return mask.numpy(), probs.numpy()


def test_wrapper_gives_what_the_explainer_gives(wrapper):
    from rtsal.inference.explainer import Explainer

    x = photo()
    mask, logits, classes = Explainer(device="cpu", resize="square").masks(x, None)
    assert int(classes[0]) in CATS
    m, p = reference(wrapper, x, classes)
    assert np.abs(m - mask.numpy()).max() <= 1e-4
    assert np.abs(p - logits.softmax(1).numpy()).max() <= 1e-5
    with torch.inference_mode():
        top_mask, top_p, top_class = wrapper.top1(x)
    assert top_class.tolist() == classes.tolist()
    assert np.abs(top_mask.numpy() - m).max() <= 1e-6
    assert np.abs(top_p.numpy() - p).max() <= 1e-6


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_loads_back_and_gives_the_same_mask(wrapper, exported):
    loaded = torch.jit.load(str(exported["torchscript"].path))
    for size in [(224, 224), (224, 352)]:  # traced at 224 x 224; height and width are dynamic
        x = photo(size)
        classes = torch.tensor([282])  # tiger cat
        m, p = reference(wrapper, x, classes)
        with torch.inference_mode():
            tm, tp = loaded(x, classes)
        assert tm.shape == (1, 1, *size)
        assert np.abs(tm.numpy() - m).max() <= 1e-5
        assert np.abs(tp.numpy() - p).max() <= 1e-5


def test_onnx_runtime_gives_the_same_masks(wrapper, exported):
    path = exported["onnx"].path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "classes"]
    x = photo().repeat(2, 1, 1, 1)  # batch 2: the batch axis is dynamic (traced at 2)
    classes = torch.tensor([282, 0])  # tiger cat, tench
    m, p = reference(wrapper, x, classes)
    om, op = session.run(None, {"images": x.numpy(), "classes": classes.numpy()})
    assert om.shape == (2, 1, 224, 224) and op.shape == (2, 1000)
    assert np.abs(om - m).max() <= 1e-4
    assert np.abs(op.sum(axis=1) - 1).max() <= 1e-5
    assert int(op[0].argmax()) in CATS
    assert om.min() >= 0 and om.max() <= 1
    assert om[0].mean() != pytest.approx(om[1].mean(), abs=1e-3)  # masks are class-specific

    check = check_onnx(wrapper, path)  # astronaut, coffee, chelsea; then the oblong ones alone
    assert check.shapes == [[3, 3, 224, 224], [1, 3, 224, 320], [1, 3, 224, 352]]
    assert check.mask_diff <= 1e-4
    assert check.prob_diff <= 1e-5
    assert check.prob_sum_diff <= 1e-5


def test_sidecar_says_how_to_feed_the_model(wrapper, exported):
    for fmt, result in exported.items():
        assert result.sidecar == sidecar_path(result.path)
        assert result.sidecar.name == result.path.name + ".json"
        meta = json.loads(result.sidecar.read_text())
        assert meta["export_format"] == fmt
        assert meta["file"] == result.path.name
        assert meta["black_box"] == "efficientnet_lite0"
        assert meta["input_size"] == [224, 224]
        assert meta["channels"] == 3
        assert meta["size_multiple"] == 32
        assert meta["shared_encoder"] is True
        assert meta["rtsal_version"] == "0.1.0"
        assert len(meta["class_names"]) == meta["num_classes"] == 1000
        assert meta["class_names"][0] == "tench"
        assert meta["class_names"] == wrapper.black_box.class_names
        assert "[0, 1]" in meta["inputs"]["images"]
    assert json.loads(exported["onnx"].sidecar.read_text())["opset"] == 17


def test_a_failed_export_leaves_the_previous_file(wrapper, tmp_path, monkeypatch):
    import rtsal.inference.export

    out = tmp_path / "masker.onnx"
    out.write_text("previous")

    def half_written(model, args, f, **kw):
        Path(f).write_bytes(b"\x08\x07half")
        raise RuntimeError("exporter crashed\nsecond line")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    with pytest.raises(ExportError, match="ONNX export .* failed: RuntimeError: exporter crashed$"):
        export_onnx(wrapper, out)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masker.onnx"]  # no temporaries

    monkeypatch.setattr(torch.onnx, "export", lambda model, args, f, **kw: Path(f).write_text("x"))
    bad = ExportCheck(mask_diff=0.5, prob_diff=0.0, prob_sum_diff=0.0, runs=1, shapes=[])
    monkeypatch.setattr(rtsal.inference.export, "check_onnx", lambda *a, **kw: bad)
    with pytest.raises(ExportError, match=r"max \|Δmask\| = 0.5 > 0.0001"):
        export_onnx(wrapper, out, check=True)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masker.onnx"]


def test_a_separate_encoder_is_exported_with_the_black_box(tmp_path):
    """A small encoder trained from scratch: the probabilities come from the black box's own
    pass, which normalises its [0, 1] input inside the graph."""
    from rtsal.engine.model import MaskerConfig, build_masking_model
    from rtsal.registry.blackbox import BlackBox
    from rtsal.registry.classifiers import build_classifier

    torch.manual_seed(0)
    box = BlackBox(
        build_classifier("resnet9", 10, 3, 8),
        name="tiny",
        class_names=[f"c{i}" for i in range(10)],
        mean=(0.4, 0.5, 0.6),
        std=(0.2, 0.25, 0.3),
        input_size=(32, 32),
    )
    cfg = MaskerConfig(num_classes=10, encoder="small", small_widths=(8, 16), small_layers=1)
    small = ExportableMasker(build_masking_model(cfg, box), box)
    result = export_onnx(small, tmp_path / "small.onnx", check=True)
    assert result.check is not None and result.check.mask_diff <= 1e-4
    x = photo((32, 32))
    _, p = reference(small, x, torch.tensor([3]))
    np.testing.assert_allclose(p, box.probabilities(x).detach().numpy(), atol=1e-6)
    meta = json.loads(result.sidecar.read_text())
    assert meta["shared_encoder"] is False and meta["size_multiple"] == 4


def test_cli_exports_onnx_and_checks_it(tmp_path):
    out = tmp_path / "models" / "lite0.onnx"
    run = run_rtsal("export", "--format", "onnx", "--out", out, env=PLUGINS)
    assert run.code == 0, run.stderr
    assert out.is_file() and sidecar_path(out).is_file()
    found = re.search(r"max \|Δmask\| = (\S+),", run.stdout)
    assert found, run.stdout
    assert float(found.group(1)) <= 1e-4


def test_cli_bad_input_is_one_line(tmp_path):
    out = tmp_path / "m.onnx"
    missing = tmp_path / "missing"
    run = run_rtsal("export", "--checkpoint", missing, "-f", "onnx", "-o", out, env=PLUGINS)
    assert_one_line_error(run, "checkpoint not found", "missing")
    run = run_rtsal("export", "--format", "onxx", "--out", out, env=PLUGINS)
    assert_one_line_error(run, "unknown export format", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs_and_checkpoints_are_refused(wrapper, tmp_path):
    from rtsal.errors import CheckpointError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="cannot write to"):
        export_torchscript(wrapper, blocker / "m.pt")
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(wrapper, tmp_path)
    with pytest.raises(ExportError, match="must be positive"):
        export_onnx(wrapper, tmp_path / "m.onnx", size=(224, 0))
    with pytest.raises(ExportError, match="opset must be 12 to 20"):
        export_onnx(wrapper, tmp_path / "m.onnx", opset=9)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "rtsal.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable checkpoint description"):
        export_onnx(corrupt, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt", "file"]


def test_size_classes_follow_how_sizes_halve():
    from rtsal.errors import RtsalError
    from rtsal.inference.size_classes import halving_pattern, size_class, size_class_levels

    assert halving_pattern(224, 5) == "00000"  # 224 112 56 28 14
    assert halving_pattern(260, 6) == "001111"  # 260 130 65 33 17 9
    assert halving_pattern(200, 5) == "00011"  # 200 100 50 25 13
    assert size_class(260, 324, 6) == "001111x001111"  # 324 162 81 41 21 11
    assert size_class(224, 288, 5) == size_class(224, 320, 5)  # multiples of 32: one class
    with pytest.raises(RtsalError, match="positive"):
        halving_pattern(0)
    assert size_class_levels(ExportableMasker.from_checkpoint()) == 5  # Lite0's stride is 32


def test_a_graph_for_one_size_class_folds_its_padding_and_serves_that_class(tmp_path):
    """Lite2 (260 px) has TensorFlow's "same" padding on odd maps: the graph made for 260 x 260
    (its side-car names the class) has no Pad node left and equals PyTorch at 324 x 324, a
    size of the same class; at a size of another class it does not."""
    import onnx

    from rtsal.registry.plugins import reset_plugin_manager

    reset_plugin_manager(None)
    lite2 = ExportableMasker.from_checkpoint(
        str(Path(__file__).resolve().parents[1] / "rtsal" / "assets" / "efficientnet_lite2")
    )
    out = tmp_path / "lite2-260.onnx"
    res = export_onnx(lite2, out, check=True, static=True)
    assert res.check is not None and res.check.mask_diff <= 1e-4
    assert json.loads(sidecar_path(out).read_text())["size_class"] == "00111x00111"
    general = export_onnx(lite2, tmp_path / "lite2-any.onnx")
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Pad" not in ops
    assert [n.op_type for n in onnx.load(str(general.path)).graph.node].count("Pad") >= 4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for size in ((260, 260), (324, 324), (324, 260)):
        x = photo(size).repeat(2, 1, 1, 1)
        classes = torch.tensor([-1, 207])  # top-1, golden retriever
        want_mask, want_probs = reference(lite2, x, classes)
        mask, probs = session.run(None, {"images": x.numpy(), "classes": classes.numpy()})
        assert float(np.abs(mask - want_mask).max()) <= 1e-4, size
        assert float(np.abs(probs - want_probs).max()) <= 1e-5, size
    # another class (256 px halves evenly) is not what this graph is for: it differs there
    x = photo((256, 256))
    want_mask, _ = reference(lite2, x, torch.tensor([-1]))
    mask, _ = session.run(None, {"images": x.numpy(), "classes": np.array([-1])})
    assert float(np.abs(mask - want_mask).max()) > 0.01
