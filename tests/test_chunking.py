"""Explaining (image, class) pairs in chunks: the same explanations as all at once, never more
pairs in one pass than the chunk size, ``--topk`` above the number of classes refused, and the
memory guard refusing, before any work, what chunking cannot bound. Shipped model, real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.errors import RtsalError
from tests.helpers import LITE_PLUGIN, assert_one_line_error, lite_plugin_only, run_main

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("rtsal_efficientnet_lite")

ALL_AT_ONCE = 10**9  # one chunk holds every pair: the computation as it was before chunking
# The kernels round differently at different batch sizes (oneDNN and BLAS pick their blocking by
# the number of rows: the same row decoded alone or among 40 differs by about 1e-6 from the
# first layer on), so chunks smaller than the batch agree to float rounding, not to the bit.
# When one chunk holds every pair, the numbers must be identical.
TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def only_the_lite_plugin():
    with lite_plugin_only() as mp:
        mp.delenv("RTSAL_MEMORY_LIMIT", raising=False)
        yield


@pytest.fixture(scope="module")
def explainer():
    from rtsal import Explainer

    return Explainer(device="cpu", backend="pytorch")  # the shipped model, its decoder in reach


@pytest.fixture(scope="module")
def photos(explainer) -> list[Image.Image]:
    """Two real photos of different sizes that share a model resolution (224 x 352)."""
    chelsea = Image.fromarray(skdata.chelsea())  # 451 x 300
    coffee = Image.fromarray(skdata.coffee()).resize((460, 306), Image.BICUBIC)
    assert explainer.model_size(chelsea) == explainer.model_size(coffee) == (224, 352)
    return [chelsea, coffee]


@pytest.fixture
def chunked(explainer, monkeypatch):
    """``chunked(n)``: the module's explainer, explaining ``n`` pairs at a time."""

    def set_chunk(n: int):
        monkeypatch.setattr(explainer, "chunk_size", n)
        return explainer

    return set_chunk


_references: dict[int, list] = {}


def all_at_once(explainer, photos, topk: int):
    if topk not in _references:
        saved = explainer.chunk_size
        explainer.chunk_size = ALL_AT_ONCE
        try:
            _references[topk] = explainer.explain_batch(photos, topk=topk)
        finally:
            explainer.chunk_size = saved
    return _references[topk]


@pytest.mark.parametrize(
    ("chunk", "topk"),
    # every pair but chunks of 1 with top-40 (40 passes a photo; chunks of 3 already cover it)
    [(c, k) for c in (1, 3, 32) for k in (1, 7, 40) if (c, k) != (1, 40)],
)
def test_chunked_explanations_equal_all_at_once(explainer, photos, chunked, topk, chunk):
    reference = all_at_once(explainer, photos, topk)
    results = chunked(chunk).explain_batch(photos, topk=topk)
    exact = chunk >= len(photos) * topk  # one chunk: the same passes, the same numbers
    assert len(results) == len(photos)
    for im, ref, got in zip(photos, reference, results, strict=True):
        assert [e.class_index for e in got] == [e.class_index for e in ref]  # same order
        assert len(got) == topk
        for a, b in zip(ref, got, strict=True):
            assert b.class_name == a.class_name
            assert b.mask.shape == (im.height, im.width)
            assert b.box == a.box
            if exact:
                assert torch.equal(b.mask, a.mask)
                assert (b.p_image, b.p_preserved, b.p_destroyed, b.area) == (
                    a.p_image,
                    a.p_preserved,
                    a.p_destroyed,
                    a.area,
                )
            else:
                assert float((b.mask - a.mask).abs().max()) <= TOLERANCE
                for name in ("p_image", "p_preserved", "p_destroyed", "area"):
                    assert getattr(b, name) == pytest.approx(getattr(a, name), abs=TOLERANCE)


def test_streamed_explanations_equal_the_batch(photos, chunked):
    """iter_explanations gives what explain_batch gives, one at a time, masks at full size from
    the start; explain_batch keeps them at model resolution until read, with the same numbers."""
    explainer = chunked(3)
    batch = explainer.explain_batch(photos, topk=4)
    streamed = list(explainer.iter_explanations(photos, topk=4))
    assert [i for i, _ in streamed] == [0] * 4 + [1] * 4
    for (_, e), b in zip(streamed, [e for es in batch for e in es], strict=True):
        assert (e.class_index, e.p_image, e.p_preserved, e.p_destroyed, e.box) == (
            b.class_index,
            b.p_image,
            b.p_preserved,
            b.p_destroyed,
            b.box,
        )
        assert isinstance(e.__dict__["_mask"], torch.Tensor)  # full size, made in its chunk
        assert not isinstance(b.__dict__["_mask"], torch.Tensor)  # at model resolution, unread
        assert torch.equal(b.mask, e.mask)
        assert b.mask is b.mask  # resized once, then kept
        assert b.area == float(b.mask.mean())


def test_pairs_in_one_pass_never_exceed_the_chunk_size(explainer, photos, chunked, monkeypatch):
    """The masking model's decoder and the black box (on image x mask, image x (1 - mask)) see
    at most ``chunk`` rows at a time, and every pair exactly once."""
    decode = explainer.model.decode
    for chunk in (3, 16):
        decoded: list[int] = []
        scored: list[int] = []

        def recording_decode(feats, classes, size, decoded=decoded):
            decoded.append(int(classes.shape[0]))
            return decode(feats, classes, size)

        monkeypatch.setattr(explainer.model, "decode", recording_decode)
        hook = explainer.black_box.register_forward_pre_hook(
            lambda module, args, scored=scored: scored.append(int(args[0].shape[0]))
        )
        try:
            chunked(chunk).explain_batch(photos, topk=20)
        finally:
            hook.remove()
        pairs = len(photos) * 20
        assert max(decoded) <= chunk and sum(decoded) == pairs
        assert max(scored) <= chunk and sum(scored) == 2 * pairs  # x * M and x * (1 - M)
        assert decoded == [min(chunk, pairs - s) for s in range(0, pairs, chunk)]


def test_topk_above_the_number_of_classes_is_refused(explainer, photos, tmp_path):
    assert explainer.black_box.num_classes == 1000
    assert explainer.classes_per_image(None, 1000) == 1000  # every class: allowed
    with pytest.raises(RtsalError, match="--topk 1001 is more than the 1000 classes"):
        explainer.explain_batch(photos, topk=1001)
    photos[0].save(tmp_path / "chelsea.jpg")
    run = run_main(
        "explain", tmp_path / "chelsea.jpg", "--topk", "5000", "--out", tmp_path / "out",
        env=LITE_PLUGIN,
    )  # fmt: skip
    assert_one_line_error(run, "--topk 5000", "1000 classes", "1000 at most")
    assert not (tmp_path / "out").exists()  # refused before any output


def test_guard_refuses_before_any_work(explainer, photos, chunked, monkeypatch):
    """What chunking cannot bound is refused in one line naming what to lower: all pairs in one
    chunk, or every mask held in explain_batch's results; the decoder never runs."""
    decoded: list[int] = []
    monkeypatch.setattr(explainer.model, "decode", lambda *a: decoded.append(1))
    with pytest.raises(RtsalError, match=r"lower the chunk size.*RTSAL_MEMORY_LIMIT") as info:
        chunked(ALL_AT_ONCE).explain_batch(photos[:1], topk=1000)  # about 47 GB
    assert "\n" not in str(info.value) and "8.0 GB limit" in str(info.value)
    assert "1000 (image, class) pairs at a time" in str(info.value)
    sixteen = photos[:1] * 16
    monkeypatch.setattr(explainer, "memory_limit", 2 * 10**9)
    with pytest.raises(RtsalError, match="every mask held.*lower topk.*iter_explanations"):
        chunked(16).explain_batch(sixteen, topk=1000)  # 16,000 masks at 224 x 352: 5 GB
    explainer.iter_explanations(sixteen, topk=1000)  # one at a time: allowed (not run here)
    monkeypatch.setattr(explainer, "memory_limit", 0)  # no limit
    explainer.iter_explanations(photos[:1], topk=1000)
    assert decoded == []


def test_guard_on_rtsal_explain(explainer, photos, tmp_path):
    from rtsal.runs.explain import check_run_memory

    with pytest.raises(RtsalError, match="a record kept for each.*lower --topk or explain fewer"):
        check_run_memory(explainer, 10**6, None, 1000, 16)  # a billion records
    check_run_memory(explainer, 1000, None, 1000, 16)  # a million: about 4 GB, allowed
    photos[0].save(tmp_path / "chelsea.jpg")
    run = run_main(
        "explain", tmp_path / "chelsea.jpg", "--out", tmp_path / "out",
        env={**LITE_PLUGIN, "RTSAL_MEMORY_LIMIT": "100M"},
    )  # fmt: skip
    assert_one_line_error(run, "above the 0.1 GB limit", "RTSAL_MEMORY_LIMIT")
    run = run_main(
        "explain", tmp_path / "chelsea.jpg", env={**LITE_PLUGIN, "RTSAL_MEMORY_LIMIT": "lots"}
    )
    assert_one_line_error(run, "RTSAL_MEMORY_LIMIT", "8G")
    run = run_main("explain", tmp_path / "chelsea.jpg", "--chunk-size", "0")
    assert run.code == 2 and "--chunk-size" in run.stderr


def test_rtsal_explain_in_chunks_writes_what_it_wrote_all_at_once(photos, tmp_path):
    """The command streams: each explanation written and let go. Records and files match a run
    with every pair in one chunk."""
    for im, name in zip(photos, ("chelsea.png", "coffee.png"), strict=True):
        im.save(tmp_path / name)
    runs = {}
    for chunk in ("3", str(ALL_AT_ONCE)):
        out = tmp_path / f"out{chunk}"
        run = run_main(
            "explain", tmp_path / "chelsea.png", tmp_path / "coffee.png", "--topk", "5",
            "--chunk-size", chunk, "--json", "--out", out, env=LITE_PLUGIN,
        )  # fmt: skip
        assert run.code == 0, run.stderr
        runs[chunk] = [json.loads(line) for line in run.stdout.splitlines()]
        assert (out / "index.html").read_text().count("<tr>") == 1 + 10
    chunked, whole = runs["3"], runs[str(ALL_AT_ONCE)]
    assert [(r["input"], r["class_index"], r["box"]) for r in chunked] == [
        (r["input"], r["class_index"], r["box"]) for r in whole
    ]
    for a, b in zip(chunked, whole, strict=True):
        for key in ("p_image", "p_image_times_mask", "p_image_times_inverse_mask", "mask_area"):
            assert a[key] == pytest.approx(b[key], abs=TOLERANCE)
        ma = np.asarray(Image.open(a["files"]["mask"]), dtype=np.int16)
        mb = np.asarray(Image.open(b["files"]["mask"]), dtype=np.int16)
        assert np.abs(ma - mb).max() <= 1  # 8-bit PNGs: a rounding step at most
