"""Every registered explanation method on two small timm black boxes (random weights, 64 px):
the masks' contract, no trace left on the black box, agreement with independent
implementations (pytorch-grad-cam, Captum), and known answers for the methods' pieces."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rtsal
from rtsal.errors import RtsalError, UnknownNameError
from rtsal.methods.contrast import (
    ContrastMethod,
    colour_contrast,
    descend_on_input,
    superpixel_mean,
)
from rtsal.methods.gradcam import GradCAMMethod, default_target_layer
from rtsal.methods.guided import GuidedBackpropMethod
from rtsal.methods.iterative import IterativeMaskMethod
from rtsal.registry.methods import create_method
from rtsal.registry.plugins import make_plugin_manager, reset_plugin_manager
from rtsal.registry.providers.timm_provider import timm_black_box

skdata = pytest.importorskip("skimage.data")

MODELS = ("resnet18", "mobilenetv3_small_050")
SIZE = 64  # image side: small, so the whole file stays fast on a CPU
OPTIONS = {"iterative-mask": {"steps": 3}, "contrast": {"steps": 3}}  # fewer steps for speed


def builtin_methods() -> list[str]:
    """Names registered by the built-in plugins (never by whatever happens to be installed)."""
    names: list[str] = []
    for impl in make_plugin_manager(load_entry_points=False).hook.register_methods.get_hookimpls():
        impl.function(register=lambda name, factory, **_: names.append(name))
    return names


METHODS = builtin_methods()


@pytest.fixture(scope="module", autouse=True)
def builtin_plugins():
    reset_plugin_manager(make_plugin_manager(load_entry_points=False))
    yield
    reset_plugin_manager(None)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models at 64 px run as fast on one thread, and do not fight other work for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two photographs (a cat, an astronaut) at SIZE x SIZE; (2, 3, SIZE, SIZE) in [0, 1]."""
    photos = [
        torch.from_numpy(f()).permute(2, 0, 1).float() / 255
        for f in (skdata.chelsea, skdata.astronaut)
    ]
    return torch.stack(
        [F.interpolate(p[None], size=(SIZE, SIZE), mode="area")[0] for p in photos]
    ).clamp(0, 1)


_BOXES: dict[str, rtsal.BlackBox] = {}


def black_box(name: str) -> rtsal.BlackBox:
    if name not in _BOXES:
        torch.manual_seed(0)
        _BOXES[name] = timm_black_box(name, pretrained=False)
    return _BOXES[name]


def top_classes(box: rtsal.BlackBox, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return box(images).argmax(1)  # (B,)


def build(method: str, box: rtsal.BlackBox):
    if method == "masker":  # an untrained masking model: the contract, not the quality
        from rtsal.engine.model import MaskerConfig, build_masking_model

        torch.manual_seed(0)
        config = MaskerConfig(
            num_classes=box.num_classes, encoder="blackbox", upsampler_channels=(8, 8, 8)
        )
        return create_method(method, box, model=build_masking_model(config, box))
    return create_method(method, box, **OPTIONS.get(method, {}))


def hooks_of(module: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, m in module.named_modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            n = len(getattr(m, attr, {}))
            if n:
                counts[f"{name}.{attr}"] = n
    return counts


@dataclass
class Run:
    box: rtsal.BlackBox
    before: dict[str, torch.Tensor]  # the black box's state before explaining
    masks: torch.Tensor  # first call, grad mode on
    again: torch.Tensor  # second call, under torch.inference_mode()
    images: torch.Tensor


_RUNS: dict[tuple[str, str], Run] = {}


def explained(method: str, model: str, images: torch.Tensor) -> Run:
    """Each method on each model is run twice (once under inference mode), then cached."""
    key = (method, model)
    if key not in _RUNS:
        box = black_box(model)
        before = {k: v.detach().clone() for k, v in box.state_dict().items()}
        classes = top_classes(box, images)
        x = images.clone()
        explainer = build(method, box)
        masks = explainer.explain(x, classes)
        with torch.inference_mode():  # as callers run it: images and classes are inference tensors
            again = explainer.explain(x.clone(), classes.clone())
        _RUNS[key] = Run(box, before, masks, again.clone(), x)
    return _RUNS[key]


every_method_and_model = pytest.mark.parametrize(
    ("method", "model"), [(m, b) for m in METHODS for b in MODELS]
)


def test_every_new_method_is_registered():
    assert {"gradient", "gradcam", "guided-backprop", "iterative-mask", "contrast"} <= set(METHODS)


@every_method_and_model
def test_masks_have_the_shape_and_range_of_the_interface(method, model, images):
    masks = explained(method, model, images).masks
    assert masks.shape == (images.shape[0], 1, SIZE, SIZE)
    assert masks.dtype == torch.float32
    assert torch.isfinite(masks).all()
    assert masks.min() >= 0 and masks.max() <= 1


@every_method_and_model
def test_masks_are_deterministic_and_work_under_inference_mode(method, model, images):
    run = explained(method, model, images)
    torch.testing.assert_close(run.again, run.masks, rtol=0, atol=1e-6)


@every_method_and_model
def test_no_hooks_or_gradients_are_left_behind(method, model, images):
    run = explained(method, model, images)
    assert hooks_of(run.box) == {}
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_backward_hooks
    for name, p in run.box.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name
    assert not run.images.requires_grad and run.images.grad is None
    assert not run.masks.requires_grad


@every_method_and_model
def test_black_box_state_is_unchanged(method, model, images):
    run = explained(method, model, images)
    after = run.box.state_dict()
    assert after.keys() == run.before.keys()
    for k, v in run.before.items():
        assert torch.equal(after[k], v), k
    assert not any(m.training for m in run.box.network.modules())


# --------------------------------------------------------------------------- agreement


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image correlation of two stacks of maps; (B, ...) x (B, ...) -> (B,)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@pytest.mark.parametrize("model", MODELS)
def test_gradcam_agrees_with_pytorch_grad_cam(model, images):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    box = black_box(model)
    classes = top_classes(box, images)
    ours = explained("gradcam", model, images).masks  # (B, 1, H, W)
    layer = box.network.get_submodule(GradCAMMethod(box).resolve_target_layer(images))
    x = images.clone().requires_grad_(True)  # the black box is frozen: the graph starts here
    with GradCAM(model=box, target_layers=[layer]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    theirs = torch.from_numpy(theirs)  # (B, H, W)
    assert (pearson(ours, theirs) >= 0.99).all(), pearson(ours, theirs)
    assert hooks_of(box) == {}


@pytest.mark.parametrize("model", MODELS)
def test_gradcam_minmax_matches_pytorch_grad_cam_values(model, images):
    """normalize="minmax" rescales like pytorch-grad-cam: the same values, not only the same
    ranking, so a 0.5 threshold marks the same pixels."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    box = black_box(model)
    classes = top_classes(box, images)
    method = GradCAMMethod(box, normalize="minmax")
    ours = method.explain(images, classes)[:, 0].detach()  # (B, H, W)
    by_max = GradCAMMethod(box).explain(images, classes)[:, 0].detach()
    floor = by_max.flatten(1).amin(1).view(-1, 1, 1)
    assert torch.allclose(ours, (by_max - floor) / (1 - floor), atol=1e-5)  # by hand
    layer = box.network.get_submodule(method.resolve_target_layer(images))
    x = images.clone().requires_grad_(True)
    with GradCAM(model=box, target_layers=[layer]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    theirs = torch.from_numpy(theirs)
    assert (ours - theirs).abs().mean() < 0.02
    assert ((ours > 0.5) != (theirs > 0.5)).float().mean() < 0.02
    with pytest.raises(RtsalError, match="minmax"):
        GradCAMMethod(box, normalize="mean")


@pytest.mark.parametrize("model", MODELS)
def test_gradient_agrees_with_captum_saliency(model, images):
    pytest.importorskip("captum")
    from captum.attr import Saliency

    box = black_box(model)
    classes = top_classes(box, images)
    ours = explained("gradient", model, images).masks
    x = images.clone().requires_grad_(True)
    theirs = Saliency(box).attribute(x, target=classes, abs=True).amax(1)
    assert (pearson(ours, theirs) >= 0.99).all(), pearson(ours, theirs)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_guided_backprop_agrees_with_captum_on_a_relu_network(images):
    pytest.importorskip("captum")
    from captum.attr import GuidedBackprop

    box = black_box("resnet18")
    assert not any(isinstance(m, (nn.SiLU, nn.GELU, nn.Hardswish, nn.ReLU6)) for m in box.modules())
    classes = top_classes(box, images)
    ours = explained("guided-backprop", "resnet18", images).masks
    x = images.clone().requires_grad_(True)
    theirs = GuidedBackprop(box).attribute(x, target=classes).abs().amax(1)
    plain = explained("gradient", "resnet18", images).masks
    assert (pearson(ours, theirs) >= 0.99).all(), pearson(ours, theirs)
    assert not torch.allclose(ours, plain)  # the guidance did something
    assert hooks_of(box) == {}


# --------------------------------------------------------------------------- known answers


def tiny_box(network: nn.Module, channels: int = 3) -> rtsal.BlackBox:
    """A black box whose normalisation is the identity, so its input is the network's input."""
    return rtsal.BlackBox(
        network,
        name="tiny",
        class_names=["a", "b"],
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        input_size=(2, 2),
    )


def two_layer(activation: nn.Module) -> tuple[rtsal.BlackBox, nn.Linear, nn.Linear]:
    torch.manual_seed(1)
    first, second = nn.Linear(12, 5), nn.Linear(5, 2)
    return tiny_box(nn.Sequential(nn.Flatten(), first, activation, second)), first, second


def max_channel_scaled(grad: torch.Tensor) -> torch.Tensor:  # (1, 12) -> (1, 1, 2, 2)
    saliency = grad.view(1, 3, 2, 2).abs().amax(1, keepdim=True)
    return saliency / saliency.max()


def test_gradient_is_the_scaled_channel_max_of_the_logit_gradient():
    box, first, second = two_layer(nn.Identity())
    x = torch.rand(1, 3, 2, 2)
    mask = create_method("gradient", box).explain(x, torch.tensor([1]))
    expected = max_channel_scaled(second.weight[1:2] @ first.weight)  # d logit_1 / dx: linear net
    torch.testing.assert_close(mask, expected)


@pytest.mark.parametrize(
    ("activation", "derivative"),
    [
        (nn.ReLU(), lambda h: (h > 0).float()),
        (nn.ReLU6(), lambda h: ((h > 0) & (h < 6)).float()),
        (nn.SiLU(), lambda h: torch.sigmoid(h) * (1 + h * (1 - torch.sigmoid(h)))),
    ],
)
def test_guided_backprop_drops_negative_gradients_at_each_rectifier(activation, derivative):
    box, first, second = two_layer(activation)
    x = torch.rand(1, 3, 2, 2)
    with torch.no_grad():
        h = first(x.flatten(1))  # (1, 5) pre-activation
    # guided: max(d logit_1 / d out, 0) * activation'(h), then back through the first layer
    expected = max_channel_scaled((second.weight[1:2].clamp(min=0) * derivative(h)) @ first.weight)
    mask = GuidedBackpropMethod(box).explain(x, torch.tensor([1]))
    torch.testing.assert_close(mask, expected)
    assert hooks_of(box) == {}


class Failure(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the network failed")


@pytest.mark.parametrize("method", ["gradcam", "guided-backprop"])
def test_hooks_are_released_when_the_black_box_fails(method):
    box = tiny_box(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), Failure(), nn.Flatten(), nn.Linear(16, 2))
    )
    explainer = create_method(method, box, **({"target_layer": "1"} if method == "gradcam" else {}))
    with pytest.raises(RuntimeError, match="the network failed"):
        explainer.explain(torch.rand(1, 3, 2, 2), torch.tensor([0]))
    assert hooks_of(box) == {}


def test_default_target_layer_is_the_last_spatial_map():
    torch.manual_seed(0)
    lite0 = timm_black_box("tf_efficientnet_lite0", pretrained=False).network
    probe = torch.zeros(1, 3, 32, 32)
    # bn2 (BatchNorm + ReLU6) returns the last map; ReLU6 zeroes the gradient above 6, so
    # Grad-CAM takes the map going into it
    assert default_target_layer(lite0, probe) == "conv_head"
    assert default_target_layer(black_box("resnet18").network, probe) == "layer4"
    assert default_target_layer(black_box("mobilenetv3_small_050").network, probe) == "blocks"
    plain = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert default_target_layer(plain, probe) == "3"  # the ReLU before global pooling
    assert hooks_of(lite0) == {} and hooks_of(plain) == {}
    saturating = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert default_target_layer(saturating, probe) == "1"  # the map going into the ReLU6


def test_gradcam_target_layer_option(images):
    box = black_box("resnet18")
    method = GradCAMMethod(box, target_layer="layer3")
    masks = method.explain(images, top_classes(box, images))
    assert masks.shape == (2, 1, SIZE, SIZE) and method.target_layer == "layer3"
    with pytest.raises(UnknownNameError, match="layer4"):
        GradCAMMethod(box, target_layer="layer5")
    with pytest.raises(RtsalError, match="feature map"):
        GradCAMMethod(box, target_layer="fc").explain(images, top_classes(box, images))
    assert hooks_of(box) == {}


def test_gradcam_target_layer_as_a_module(images):
    box = black_box("resnet18")
    by_module = GradCAMMethod(box, target_layer=box.network.layer3)
    assert by_module.target_layer == "layer3"
    classes = top_classes(box, images)
    by_name = GradCAMMethod(box, target_layer="layer3").explain(images, classes)
    assert torch.equal(by_module.explain(images, classes), by_name)
    with pytest.raises(RtsalError, match="not a module of the black box"):
        GradCAMMethod(box, target_layer=nn.Conv2d(3, 3, 1))


def test_gradcam_on_a_linear_map_is_relu_of_the_weighted_channels():
    # network: 2-channel 2x2 map -> global average pool -> linear; alpha_k = w_ck / 4
    conv = nn.Conv2d(3, 2, 1, bias=False)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
        head.weight.copy_(torch.tensor([[2.0, -1.0], [0.0, 1.0]]))
    box = tiny_box(nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head))
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # channel 0 of the map
    x[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # channel 1 of the map
    mask = GradCAMMethod(box, target_layer="0").explain(x, torch.tensor([0]))
    # cam = ReLU(2/4 * A0 - 1/4 * A1) = [[0.5, 0], [0, 0]], scaled by its max
    torch.testing.assert_close(mask, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))


def test_iterative_mask_with_no_steps_returns_its_initial_mask(images):
    box = black_box("resnet18")
    masks = IterativeMaskMethod(box, steps=0, initial=0.25).explain(images, torch.tensor([0, 1]))
    torch.testing.assert_close(masks, torch.full((2, 1, SIZE, SIZE), 0.25))
    with pytest.raises(RtsalError):
        IterativeMaskMethod(box, mask_size=1)
    with pytest.raises(UnknownNameError):
        IterativeMaskMethod(box, objective="papr")


def test_superpixel_mean_on_a_hand_made_segmentation():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    labels = torch.tensor([[3, 3, 10, 10], [3, 3, 10, 7]])  # ids need not be consecutive
    expected = torch.tensor([[3.5, 3.5, 14 / 3, 14 / 3], [3.5, 3.5, 14 / 3, 8.0]])
    torch.testing.assert_close(superpixel_mean(values, labels), expected)


def test_colour_contrast_by_hand():
    # regions: A (4 px, LAB 0,0,0), B (2 px, 30,40,0), C (2 px, 0,0,100)
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    colours = {0: (0.0, 0.0, 0.0), 1: (30.0, 40.0, 0.0), 2: (0.0, 0.0, 100.0)}
    lab = torch.stack([torch.tensor(colours[int(i)]) for i in labels.flatten()], 1).view(3, 2, 4)
    d_ab, d_ac, d_bc = 50.0, 100.0, math.sqrt(30**2 + 40**2 + 100**2)
    a = (2 * d_ab + 2 * d_ac) / 8  # sum_j n_j / N * ||c_i - c_j||
    b = (4 * d_ab + 2 * d_bc) / 8
    c = (4 * d_ac + 2 * d_bc) / 8
    alpha = 0.3
    middle = alpha + (b - a) / (c - a)
    expected = torch.tensor([[alpha, alpha, middle, middle], [alpha, alpha, 1 + alpha, 1 + alpha]])
    torch.testing.assert_close(colour_contrast(lab, labels, alpha), expected)
    uniform = colour_contrast(torch.ones(3, 2, 4), labels, alpha)
    torch.testing.assert_close(uniform, torch.full((2, 4), alpha))


def test_descent_on_a_linear_black_box_by_hand():
    torch.manual_seed(2)
    linear = nn.Linear(12, 3)
    box = tiny_box(nn.Sequential(nn.Flatten(), linear))
    x0, classes = torch.rand(2, 3, 2, 2), torch.tensor([0, 2])
    # gamma = 0: F = a_l, a constant gradient w_l: X_T = X_0 - T * eps * max(w_l, 0)
    xt = descend_on_input(box, x0, classes, gamma=0.0, epsilon=0.1, steps=4)
    step = linear.weight[classes].clamp(min=0).view(2, 3, 2, 2)
    torch.testing.assert_close(xt, x0 - 4 * 0.1 * step)
    # at X_0 the other logits have not moved: the first step does not depend on gamma
    one = descend_on_input(box, x0, classes, gamma=5.0, epsilon=0.1, steps=1)
    torch.testing.assert_close(one, x0 - 0.1 * step)


def test_contrast_masks_follow_superpixels(images):
    box = black_box("resnet18")
    method = ContrastMethod(box, steps=2)
    raw = method.raw_maps(images, top_classes(box, images))  # (B, H, W)
    assert (raw >= 0).all() and raw.flatten(1).amax(1).gt(0).all()
    zero = method.refine(torch.zeros(SIZE, SIZE), images[0])
    assert torch.equal(zero, torch.zeros(SIZE, SIZE))
    mask = method.refine(raw[0], images[0])
    assert mask.max() == 1 and mask.min() == 0
    # constant inside each superpixel
    from rtsal.methods.contrast import slic_superpixels

    labels = slic_superpixels(images[0].permute(1, 2, 0).double().numpy(), 100, 10.0)
    for label in np.unique(labels):
        assert mask[torch.from_numpy(labels == label)].unique().numel() == 1
    with pytest.raises(RtsalError):
        ContrastMethod(box, threshold=1.5)
