"""Quantus through ``rtsal.explain_func`` (docs/api.md, "Quantus"): its PointingGame on real
ImageNet-val photos with their exact boxes, and its FaithfulnessCorrelation, with answers known
in advance (a method returning the box itself, one returning each pixel's exact contribution to
a linear black box's logit), the masking model and Grad-CAM; and what explain_func returns,
caches and refuses."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import rtsal
from rtsal import hookimpl
from rtsal.errors import CheckpointError, RtsalError, UnknownClassError
from tests.helpers import SHARED_DATA, lite_plugin_only

quantus = pytest.importorskip("quantus")
pytest.importorskip("rtsal_efficientnet_lite")

VAL_BOXES = SHARED_DATA / "imagenet-val-boxes"
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (VAL_BOXES / "boxes.json").is_file(),
        reason="../shared/data/imagenet-val-boxes is not present",
    ),
]
PHOTOS = 8


class _BoxOracle:
    """The ground-truth box of each photo as its mask (``outside``: 1 - box, peaking outside),
    found by the photo's pixels among those it was given."""

    def __init__(self, black_box, images, masks, outside=False):
        self.images, self.masks, self.outside = images, masks, outside

    def explain(self, images, classes):
        rows = [
            next(j for j, known in enumerate(self.images) if torch.equal(known, im.cpu()))
            for im in images
        ]
        m = self.masks[rows]
        return 1 - m if self.outside else m


class _Contribution:
    """Each pixel's exact share of a linear black box's logit for the class, relative to the
    image's darkest value (Quantus's "black" baseline), scaled to [0, 1]; ``invert``: 1 - it."""

    def __init__(self, black_box, invert=False):
        self.weight = black_box.network[-1].weight
        self.invert = invert

    def explain(self, images, classes):
        w = self.weight[classes].view(images.shape)
        base = images.flatten(1).min(1).values.view(-1, 1, 1, 1)
        share = (w * (images - base)).sum(1, keepdim=True)
        share = share / share.flatten(1).max(1).values.view(-1, 1, 1, 1)
        return 1 - share if self.invert else share


class _TestMethods:
    @hookimpl
    def register_methods(self, register):
        register("box-oracle", _BoxOracle, summary="the ground-truth box")
        register("contribution", _Contribution, summary="a linear model's exact shares")


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """The EfficientNet-Lite plugin (the shipped model's black box) and the methods above."""
    from rtsal.integrations.quantus import clear_cache
    from rtsal.registry.plugins import make_plugin_manager, reset_plugin_manager

    with lite_plugin_only():
        pm = make_plugin_manager()
        pm.register(_TestMethods(), name="quantus-test-methods")
        reset_plugin_manager(pm)
        yield
    clear_cache()


@pytest.fixture(scope="module")
def model():
    return rtsal.create_black_box("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(model):
    """Eight photos (evenly spread, boxes covering under 90 % of the photo): x, y, s."""
    from rtsal.integrations.quantus import box_batch

    table = json.loads((VAL_BOXES / "boxes.json").read_text())
    names = [n for n in sorted(table) if _cover(table[n]) < 0.9][::60][:PHOTOS]
    return _Photos(*box_batch(VAL_BOXES, model, names), [table[n] for n in names])


class _Photos(tuple):
    """(x, y, s) and, as ``entries``, the photos' rows of boxes.json."""

    def __new__(cls, x, y, s, entries):
        self = super().__new__(cls, (x, y, s))
        self.entries = entries
        return self


def _cover(entry) -> float:
    """The share of a 227 x 227 photo inside its boxes."""
    m = np.zeros((227, 227), bool)
    for x0, y0, x1, y1 in entry["boxes"]:
        m[round(y0) : round(y1), round(x0) : round(x1)] = True
    return float(m.mean())


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def test_box_batch_is_quantus_shaped(photos, model):
    x, y, s = photos
    cover = [_cover(entry) for entry in photos.entries]
    assert x.shape == (PHOTOS, 3, 224, 224) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert y.shape == (PHOTOS,) and y.dtype == np.int64
    assert s.shape == (PHOTOS, 1, 224, 224) and set(np.unique(s)) == {0.0, 1.0}
    # each photo's boxes, scaled from 227 to 224 px, cover the same share of it
    assert s.mean((1, 2, 3)) == pytest.approx(cover, abs=0.01)
    with torch.no_grad():
        top1 = model(torch.from_numpy(x)).argmax(1).numpy()
    assert (top1 == y).sum() >= PHOTOS - 2  # the labels are the photos' classes


@pytest.mark.parametrize("method", ["masker", "gradcam"])
def test_explain_func_is_attribute_in_quantus_layout(photos, model, method):
    from rtsal.inference.explainer import Explainer

    x, y, _ = photos
    a = rtsal.explain_func(model=model, inputs=x, targets=y, method=method)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert a.shape == (PHOTOS, 1, 224, 224) and a.min() >= 0 and a.max() <= 1
    fresh = Explainer(method=method, black_box=copy.deepcopy(model), device="cpu")
    expected = fresh.attribute(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    assert np.abs(a - expected).max() <= 1e-5
    assert np.array_equal(rtsal.explain_func(model, torch.from_numpy(x), list(y), method), a)
    # one class for every photo: an int, a NumPy scalar or 0-d array, a class name
    tabby = fresh.attribute(torch.from_numpy(x[:2]), 281).numpy()
    for target in (281, np.int64(281), np.array(281), np.full(2, 281), "tabby"):
        got = rtsal.explain_func(model, x[:2], target, method=method)
        assert np.abs(got - tabby).max() <= 1e-5, target
    assert np.abs(a[:2] - tabby).max() > 0.1  # the class matters


def test_explainers_are_built_once(photos, model):
    from rtsal.integrations.quantus import _cache, explainer_for

    x, y, _ = photos
    rtsal.explain_func(model, x[:2], y[:2], method="gradcam")
    first = explainer_for(model, "gradcam")
    entries = len(_cache)
    rtsal.explain_func(model, x[2:4], y[2:4], method="gradcam")
    assert explainer_for(model, "gradcam") is first and len(_cache) == entries
    other = copy.deepcopy(model)  # another model (Quantus's randomised copies): its own
    assert explainer_for(other, "gradcam") is not first
    assert explainer_for(other, "gradcam").black_box is other
    assert explainer_for(model, "gradcam", method_options={"normalize": "minmax"}) is not first


def test_pointing_game_known_answers(photos, model):
    x, y, s = photos
    game = quantus.PointingGame(disable_warnings=True)

    def play(method, **options):
        kwargs = {"method": method, **options}
        scores = game(model=model, x_batch=x, y_batch=y, s_batch=s,
                      explain_func=rtsal.explain_func, explain_func_kwargs=kwargs)  # fmt: skip
        return np.array(scores, dtype=float)

    oracle = {"images": torch.from_numpy(x), "masks": torch.from_numpy(s)}
    assert (play("box-oracle", method_options=oracle) == 1).all()  # the box itself
    outside = {**oracle, "outside": True}
    assert (play("box-oracle", method_options=outside) == 0).all()  # peaking outside it
    for method in ("masker", "gradcam"):
        a = rtsal.explain_func(model, x, y, method=method).reshape(PHOTOS, -1)
        peak = a.argmax(1)
        assert (a == a.max(1, keepdims=True)).sum(1).tolist() == [1] * PHOTOS  # one maximum
        by_hand = s.reshape(PHOTOS, -1)[np.arange(PHOTOS), peak]  # is it in the box?
        scores = play(method)
        assert scores.tolist() == by_hand.tolist(), method
        assert scores.sum() >= PHOTOS - 2, method  # both point into the box on these photos


def _linear_black_box(size: int = 224) -> rtsal.BlackBox:
    """Two classes, linear in the pixels, the same weight for each channel of a pixel; class
    0 scores higher on every photo, so a top-1 explanation would be of the wrong class."""
    g = torch.Generator().manual_seed(0)
    pixel = torch.rand(2, 1, size, size, generator=g)
    pixel[0] *= 10
    layer = nn.Linear(3 * size * size, 2, bias=False)
    layer.weight.data = pixel.expand(2, 3, size, size).reshape(2, -1).clone()
    return rtsal.BlackBox(
        nn.Sequential(nn.Flatten(), layer),
        name="linear",
        class_names=["bright", "target"],
        mean=[0.0] * 3,
        std=[1.0] * 3,
        input_size=(size, size),
    )


def test_faithfulness_correlation_known_answers(photos):
    linear = _linear_black_box()
    grey = np.repeat(photos[0][:4].mean(1, keepdims=True), 3, axis=1)  # real photos, grey
    y = np.ones(4, dtype=np.int64)
    with torch.no_grad():
        assert (linear(torch.from_numpy(grey)).argmax(1) == 0).all()
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=20, subset_size=2000, return_aggregate=False, disable_warnings=True
    )

    def correlation(**options):
        np.random.seed(0)
        return metric(model=linear, x_batch=grey, y_batch=y, explain_func=rtsal.explain_func,
                      explain_func_kwargs={"method": "contribution", **options})  # fmt: skip

    assert correlation() == pytest.approx([1.0] * 4, abs=1e-4)
    inverted = correlation(method_options={"invert": True})
    assert inverted == pytest.approx([-1.0] * 4, abs=1e-4)


@pytest.mark.parametrize("method", ["masker", "gradcam"])
def test_faithfulness_correlation_of_real_methods(photos, model, method):
    """Through explain_func, the same scores as with the attributions given to Quantus."""
    x, y, _ = photos
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=5, subset_size=224, return_aggregate=False, disable_warnings=True
    )
    np.random.seed(1)
    scores = metric(model=model, x_batch=x, y_batch=y, explain_func=rtsal.explain_func,
                    explain_func_kwargs={"method": method})  # fmt: skip
    a = rtsal.explain_func(model, x, y, method=method)
    np.random.seed(1)
    given = metric(model=model, x_batch=x, y_batch=y, a_batch=a)
    assert len(scores) == PHOTOS and np.isfinite(scores).all()
    assert all(-1 <= v <= 1 for v in scores)
    assert scores == pytest.approx(given, abs=1e-6)


def test_refusals_are_one_line(photos, model):
    x, y, s = photos
    with pytest.raises(UnknownClassError) as exc:
        rtsal.explain_func(model, x[:2], np.array([1, 1000]))
    assert "0 to 999" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model, x[:2], np.array([1.0, 2.0]))
    assert "integer" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model, x[:2], [1, 2, 3])
    assert "3 classes for 2 images" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model, (x[:2] - 0.45) / 0.225, y[:2])  # normalised images
    assert "[0, 1]" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model, x[:2].transpose(0, 2, 3, 1), y[:2])  # channels last
    assert "(B, C, H, W)" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model.network, x[:2], y[:2])  # a network, not a black box
    assert "rtsal.BlackBox" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model, x[:2], y[:2], method="gradcm")
    assert "'gradcam'" in one_line(exc)
    with pytest.raises(RtsalError) as exc:
        rtsal.explain_func(model, x[:2], y[:2], reduce_axes=(1,))
    assert "unknown option 'reduce_axes'" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        rtsal.explain_func(model, x[:2], y[:2], checkpoint="nowhere")
    assert "nowhere" in one_line(exc)
    with pytest.raises(RtsalError) as exc:  # Quantus lets the error through as it is
        quantus.PointingGame(disable_warnings=True)(
            model=model, x_batch=x[:2], y_batch=np.array([1, 1000]), s_batch=s[:2],
            explain_func=rtsal.explain_func, explain_func_kwargs={"method": "gradcam"},
        )  # fmt: skip
    one_line(exc)
