"""The explainer's back ends: ``--backend auto`` (the default) runs the masking model under ONNX
Runtime on the CPU, and its masks equal PyTorch's within ``TOLERANCE`` on real photos, at batch
1 and 32, for the top-k classes and for several named classes; a missing or broken ONNX Runtime
(or a broken cached export) falls back to PyTorch, or is made anew, with one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.errors import RtsalError
from tests.helpers import LITE_PLUGIN, lite_plugin_only, run_main

pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

# What the exporter guarantees (rtsal.inference.export.TOLERANCE): the largest difference of a
# mask value between the exported graph under ONNX Runtime and PyTorch on the same input.
TOLERANCE = 1e-4
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="module", autouse=True)
def only_the_lite_plugin(tmp_path_factory):
    with lite_plugin_only() as mp:
        mp.setenv("RTSAL_CACHE", str(tmp_path_factory.mktemp("cache")))  # exports made here
        mp.delenv("RTSAL_BACKEND", raising=False)
        yield


@pytest.fixture(scope="module")
def explainers():
    from rtsal import Explainer

    auto = Explainer()  # the shipped model, default back end
    torch_ = Explainer(backend="pytorch")
    return auto, torch_


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in PHOTOS]


def test_auto_is_onnx_runtime_on_the_cpu(explainers):
    auto, torch_ = explainers
    assert auto.backend_name == "onnxruntime" and torch_.backend_name == "pytorch"
    assert auto.model is None and torch_.model is not None


@pytest.mark.parametrize("how", ["top-3", "three named classes"])
def test_masks_and_probabilities_agree_at_batch_1(explainers, photos, how):
    auto, torch_ = explainers
    kwargs = (
        {"topk": 3} if how == "top-3" else {"classes": [281, 967, 417]}
    )  # tabby, espresso, balloon
    for im in photos:
        (a,) = auto.explain_batch([im], **kwargs)
        (t,) = torch_.explain_batch([im], **kwargs)
        assert [e.class_index for e in a] == [e.class_index for e in t]
        for ea, et in zip(a, t, strict=True):
            assert float((ea.mask - et.mask).abs().max()) <= TOLERANCE
            for p, q in ((ea.p_image, et.p_image), (ea.p_preserved, et.p_preserved)):
                assert abs(p - q) <= 1e-4
            assert abs(ea.p_destroyed - et.p_destroyed) <= 1e-4


def test_masks_agree_at_batch_32(explainers, photos):
    """32 real crops of the photos at one model size, one call each, one class per image."""
    auto, torch_ = explainers
    g = torch.Generator().manual_seed(0)
    crops = []
    for i in range(32):
        im = photos[i % len(photos)]
        w, h = im.size
        x0, y0 = (int(torch.randint(0, s // 4, (1,), generator=g)) for s in (w, h))
        crops.append(im.crop((x0, y0, x0 + 3 * w // 4, y0 + 3 * h // 4)).resize((224, 224)))
    x = torch.stack([torch.from_numpy(np.asarray(c).copy()) for c in crops])
    x = x.permute(0, 3, 1, 2).float().div(255)  # (32, 3, 224, 224)
    targets = [281, 967, 417, 0] * 8
    a, t = auto(x, targets, batch_size=32), torch_(x, targets, batch_size=32)
    assert a.shape == t.shape == (32, 1, 224, 224)
    assert float((a - t).abs().max()) <= TOLERANCE
    top_a, top_t = auto(x, batch_size=32), torch_(x, batch_size=32)  # each image's top-1
    assert float((top_a - top_t).abs().max()) <= TOLERANCE


def test_other_methods_and_bf16_run_in_pytorch():
    from rtsal import Explainer

    assert Explainer(method="gradcam").backend_name == "pytorch"
    assert Explainer(precision="bfloat16").backend_name == "pytorch"


def test_a_missing_onnx_runtime_falls_back_in_one_line(monkeypatch, capsys):
    from rtsal import Explainer

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    explainer = Explainer()
    assert explainer.backend_name == "pytorch"
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("note: --backend auto runs PyTorch")
    assert "ONNX Runtime is not usable" in err[0]
    with pytest.raises(RtsalError, match="needs ONNX Runtime"):
        Explainer(backend="onnxruntime")  # asked for by name: one line, no fallback


def test_a_broken_cached_export_is_made_anew(explainers, capsys):
    from rtsal import Explainer

    auto, _ = explainers
    path = auto.backend.path
    path.write_bytes(b"not an onnx model")
    again = Explainer()
    assert again.backend_name == "onnxruntime" and path.stat().st_size > 10**6
    assert "exporting the masking model" in capsys.readouterr().err  # said once, when made


def test_the_command_line_defaults_to_auto_and_rtsal_backend_overrides_it(tmp_path, photos):
    photo = tmp_path / "coffee.jpg"
    photos[1].save(photo)
    auto = run_main("explain", photo, "--json", env=LITE_PLUGIN)
    forced = run_main("explain", photo, "--json", env={**LITE_PLUGIN, "RTSAL_BACKEND": "pytorch"})
    assert auto.code == forced.code == 0, auto.stderr + forced.stderr
    a, t = json.loads(auto.stdout), json.loads(forced.stdout)
    assert a["class_index"] == t["class_index"] == 967  # espresso
    assert abs(a["mask_area"] - t["mask_area"]) <= TOLERANCE


def test_a_large_batch_split_across_one_thread_sessions_gives_the_same_masks(explainers, photos):
    """ONNX Runtime runs a large batch as slices on one-thread sessions at once: the masks and
    probabilities are those of one session over the whole batch, image for image."""
    auto, _ = explainers
    backend = auto.backend
    x = torch.stack(
        [torch.from_numpy(np.asarray(im.resize((224, 224))).copy()) for im in photos * 2][:8]
    )
    x = x.permute(0, 3, 1, 2).float().div(255).numpy()
    c = np.array([-1, 281, -1, 967, -1, 417, -1, 0], dtype=np.int64)
    whole = backend.session.run(["mask", "probabilities"], {"images": x, "classes": c})
    for parts in (2, 3):
        mask, probs = backend._run_split(x, c, parts)
        assert mask.shape == whole[0].shape and probs.shape == whole[1].shape
        assert float(np.abs(mask - whole[0]).max()) <= 1e-5
        assert float(np.abs(probs - whole[1]).max()) <= 1e-5


def test_each_size_class_gets_its_own_graph_and_the_same_masks(explainers, photos):
    """Images whose sizes halve differently from 224 (200 x 200: an odd map at stride 8) get
    a graph of their own, exported once into the cache, with PyTorch's masks."""
    auto, torch_ = explainers
    backend = auto.backend
    before = set(backend.path.parent.glob("*.onnx"))
    x = torch.stack([torch.from_numpy(np.asarray(im.resize((200, 200))).copy()) for im in photos])
    x = x.permute(0, 3, 1, 2).float().div(255)
    classes = torch.tensor([281, 967, 417, 0])
    for xb, cb in ((x, classes), (x[:1], None)):
        with torch.inference_mode():
            mask, _, chosen = backend.masks_for_images(xb, cb)
            want, _, want_chosen = torch_.backend.masks_for_images(xb, cb)
        assert mask.shape == want.shape == (len(xb), 1, 200, 200)
        assert torch.equal(chosen.cpu(), want_chosen.cpu())
        assert float((mask - want).abs().max()) <= TOLERANCE
    made = set(backend.path.parent.glob("*.onnx")) - before
    assert [p.name.split("-")[-1] for p in made] == ["00011x00011.onnx"]
    assert backend.session is backend._graph(224, 224).session  # 224 px still its own graph
