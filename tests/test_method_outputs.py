"""What an explanation method (a plugin's too) returns is checked before anything uses it:
(B, 1, h, w) or (B, h, w) at any resolution becomes masks (B, 1, H, W) in [0, 1]; anything else
is an error naming the method, not a traceback deep in the explainer."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal import hookimpl
from rtsal.errors import RtsalError
from rtsal.registry.methods import check_method_output
from rtsal.registry.plugins import make_plugin_manager, reset_plugin_manager
from tests.helpers import LITE_PLUGIN

# ---------------------------------------------------------------- hand-made outputs


def test_maps_without_a_channel_at_low_resolution_are_resized():
    out = check_method_output(torch.full((2, 4, 4), 0.5), 2, (8, 8), "half")
    assert out.shape == (2, 1, 8, 8) and out.dtype == torch.float32
    assert torch.equal(out, torch.full((2, 1, 8, 8), 0.5))


def test_resizing_is_bilinear():
    ramp = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2)
    out = check_method_output(ramp, 1, (1, 4), "ramp")
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))


def test_masks_of_the_right_shape_pass_unchanged_and_values_are_clamped():
    masks = torch.rand(3, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(check_method_output(masks, 3, torch.Size((5, 7)), "m"), masks)
    wild = torch.tensor([[[-2.0, 0.3], [1.0, 7.0]]], dtype=torch.float64)
    out = check_method_output(wild, 1, (2, 2), "wild")
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[[[0.0, 0.3], [1.0, 1.0]]]]))
    assert torch.equal(
        check_method_output(torch.ones(1, 2, 2, dtype=torch.bool), 1, (2, 2), "b"),
        torch.ones(1, 1, 2, 2),
    )


@pytest.mark.parametrize(
    "maps, what",
    [
        (torch.full((2, 1, 8, 8), float("nan")), "128 non-finite values"),
        (torch.tensor([0.5, float("inf")]).repeat(2, 1, 8, 4), "64 non-finite values"),
        (torch.rand(3, 1, 8, 8), r"shape \(3, 1, 8, 8\) for a batch of 2"),
        (torch.rand(1, 8, 8), r"shape \(1, 8, 8\) for a batch of 2"),
        (torch.rand(2, 3, 8, 8), r"shape \(2, 3, 8, 8\) for a batch of 2"),
        (torch.rand(2), r"shape \(2,\) for a batch of 2"),
        (torch.rand(2, 1, 1, 8, 8), r"shape \(2, 1, 1, 8, 8\)"),
        (torch.rand(2, 1, 0, 8), r"shape \(2, 1, 0, 8\)"),
        (np.ones((2, 1, 8, 8)), "a ndarray"),
        (None, "a NoneType"),
    ],
)
def test_wrong_outputs_raise_naming_the_method(maps, what):
    with pytest.raises(RtsalError) as info:
        check_method_output(maps, 2, (8, 8), "my-method")
    message = str(info.value)
    assert message.startswith("method 'my-method' returned ")
    assert message.endswith(": expected (B, 1, H, W) or (B, H, W) with finite values")
    assert re.search(what, message), message


# ---------------------------------------------------------------- through a plugin, end to end


class _Constant:
    """Every pixel 0.25, as (B, h, w) at a seventh of the resolution."""

    def __init__(self, black_box, **options):
        self.black_box = black_box

    def explain(self, images, classes):
        return torch.full((images.shape[0], images.shape[-2] // 7, images.shape[-1] // 7), 0.25)


class _NaN(_Constant):
    def explain(self, images, classes):
        return torch.full((images.shape[0], 1, *images.shape[-2:]), float("nan"))


class _ThreeChannels(_Constant):
    def explain(self, images, classes):
        return images.clone()  # the image itself, not a mask


class _WrongMethods:
    @hookimpl
    def register_methods(self, register):
        register("quarter", _Constant, summary="0.25 everywhere, at low resolution")
        register("nan-maps", _NaN, summary="NaN everywhere")
        register("image-not-mask", _ThreeChannels, summary="the image back")


@pytest.fixture(scope="module")
def lite0():
    """The shipped model's black box (EfficientNet-Lite0, from its plugin), then a plugin
    manager with the built-in plugins and the in-process one above."""
    pytest.importorskip("rtsal_efficientnet_lite")
    mp = pytest.MonkeyPatch()
    for key, value in LITE_PLUGIN.items():
        mp.setenv(key, value)
    reset_plugin_manager(None)
    from rtsal import create_black_box

    box = create_black_box("efficientnet_lite0")
    mp.undo()
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(_WrongMethods(), name="wrong-methods")
    reset_plugin_manager(pm)
    yield box
    reset_plugin_manager(None)


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    skdata = pytest.importorskip("skimage.data")
    return Image.fromarray(skdata.chelsea())  # 451x300


def test_a_low_resolution_map_without_a_channel_becomes_a_full_mask(lite0, cat):
    from rtsal.inference.explainer import Explainer

    explainer = Explainer(black_box=lite0, method="quarter", device="cpu")
    (e,) = explainer.explain_batch([cat], [285])[0]  # Egyptian cat
    assert e.mask.shape == (300, 451)
    assert torch.allclose(e.mask, torch.full((300, 451), 0.25))
    assert e.area == pytest.approx(0.25)
    x = explainer.prepare(cat)[None]
    masks, logits, classes = explainer.masks(x, None)
    assert masks.shape == (1, 1, *x.shape[-2:]) and torch.allclose(masks, torch.tensor(0.25))
    assert logits.shape == (1, 1000) and classes.shape == (1,)


@pytest.mark.parametrize("method", ["nan-maps", "image-not-mask"])
def test_a_wrong_method_is_an_error_naming_it(lite0, cat, method):
    from rtsal.inference.explainer import Explainer

    explainer = Explainer(black_box=lite0, method=method, device="cpu")
    with pytest.raises(RtsalError, match=f"^method '{method}' returned "):
        explainer.explain_batch([cat])
    with pytest.raises(RtsalError, match=f"^method '{method}' returned "):
        explainer.masks(explainer.prepare(cat)[None], None)
