"""The masking model: mask head (Eq. 8), feature filter (Eq. 7), shapes, ranges and gradients."""

import pytest
import torch
from torch import nn

from rtsal.engine.model import (
    TOP1,
    FeatureFilter,
    MaskerConfig,
    MaskHead,
    MaskingModel,
    SmallEncoder,
    build_masking_model,
)
from rtsal.engine.objective import PRESETS, SaliencyObjective
from rtsal.errors import RtsalError
from rtsal.registry.blackbox import BlackBox
from rtsal.registry.providers.timm_provider import timm_black_box


class TinyNet(nn.Module):
    def __init__(self, in_channels=3, num_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


def tiny_box(in_channels=3, num_classes=4):
    return BlackBox(
        TinyNet(in_channels, num_classes),
        name="tiny",
        class_names=[f"c{i}" for i in range(num_classes)],
        mean=[0.5] * in_channels,
        std=[0.25] * in_channels,
        input_size=(32, 32),
    )


def small_config(num_classes=4, in_channels=3, mask_stride=4):
    return MaskerConfig(
        num_classes=num_classes,
        in_channels=in_channels,
        encoder="small",
        small_widths=(8, 16, 32),
        small_layers=2,
        upsampler_channels=(16, 8),
        mask_stride=mask_stride,
    )


@pytest.fixture(scope="module")
def resnet18_box():
    torch.manual_seed(0)
    return timm_black_box("resnet18", pretrained=False)


def tied_config():
    return MaskerConfig(
        num_classes=1000,
        encoder="blackbox",
        embedding="classifier-tied",
        upsampler_channels=(32, 16, 8),
    )


# --------------------------------------------------------------------------- mask head


def set_head(head, w0, w1, b0=0.0, b1=0.0):
    with torch.no_grad():
        head.conv.weight.copy_(torch.tensor([w0, w1], dtype=torch.float32).view(2, -1, 1, 1))
        head.conv.bias.copy_(torch.tensor([b0, b1]))


@pytest.mark.parametrize("scale", [1.0, 1e-8, 1e6])
def test_mask_head_output_in_unit_interval(scale):
    torch.manual_seed(0)
    head = MaskHead(5)
    m = head(torch.randn(3, 5, 7, 7) * scale)
    assert m.shape == (3, 1, 7, 7)
    assert torch.isfinite(m).all()
    assert m.min() >= 0 and m.max() <= 1


def test_mask_head_zero_inputs_give_half():
    head = MaskHead(3)
    set_head(head, [0, 0, 0], [0, 0, 0])
    assert torch.allclose(head(torch.randn(1, 3, 2, 2)), torch.full((1, 1, 2, 2), 0.5))


def test_mask_head_channel0_zero_gives_zero():
    torch.manual_seed(0)
    head = MaskHead(3)
    set_head(head, [0, 0, 0], [1, 2, 3], b1=1.0)
    x = torch.rand(2, 3, 4, 4) + 0.1  # C1 = x.[1,2,3] + 1 >= 1.6
    assert head(x).max().item() < 1e-6


def test_mask_head_channel1_zero_gives_one():
    torch.manual_seed(0)
    head = MaskHead(3)
    set_head(head, [-1, 2, -3], [0, 0, 0], b0=-5.0)
    x = torch.rand(2, 3, 4, 4)  # C0 = -x0 + 2 x1 - 3 x2 - 5 <= -3
    assert head(x).min().item() > 1 - 1e-6


def test_mask_head_equal_magnitudes_give_half():
    torch.manual_seed(0)
    head = MaskHead(3)
    set_head(head, [1, -2, 0.5], [-1, 2, -0.5])  # C1 = -C0
    assert torch.allclose(head(torch.randn(2, 3, 4, 4)), torch.full((2, 1, 4, 4), 0.5))


def test_mask_head_ratio():
    head = MaskHead(1)
    set_head(head, [3.0], [-1.0])
    # |C0| = 3, |C1| = 1 -> 3 / 4
    assert head(torch.ones(1, 1, 1, 1)).item() == pytest.approx(0.75, abs=1e-6)


# --------------------------------------------------------------------------- feature filter


def test_feature_filter_gates_by_sigmoid_of_dot_product():
    f = FeatureFilter(num_classes=3, channels=2)
    with torch.no_grad():
        f.embedding.weight[1] = torch.tensor([1.0, 1.0])
    x = torch.ones(1, 2, 1, 1)
    y, gate_max = f(x, torch.tensor([1]))
    s2 = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(y, s2 * x)
    assert gate_max.shape == (1,)
    assert gate_max.item() == pytest.approx(s2.item())


def test_feature_filter_huge_negative_embedding_closes_gate():
    f = FeatureFilter(num_classes=2, channels=2)
    with torch.no_grad():
        f.embedding.weight[0] = torch.tensor([-1e4, -1e4])
    y, gate_max = f(torch.ones(1, 2, 3, 3), torch.tensor([0]))
    assert y.abs().max().item() < 1e-6
    assert gate_max.item() < 1e-6


def test_feature_filter_gate_max_over_positions_and_per_sample_class():
    f = FeatureFilter(num_classes=2, channels=2)
    with torch.no_grad():
        f.embedding.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    x = torch.tensor([[1.0, 3.0], [1.0, 0.0]]).view(1, 2, 1, 2).repeat(2, 1, 1, 1)
    # class 0: logits 2 and 3; class 1: logits -1 and 0
    y, gate_max = f(x, torch.tensor([0, 1]))
    sig = torch.sigmoid
    assert gate_max.tolist() == pytest.approx([sig(torch.tensor(3.0)).item(), 0.5])
    want0 = x[0] * sig(torch.tensor([2.0, 3.0])).view(1, 1, 2)
    assert torch.allclose(y[0], want0)


def test_feature_filter_tied_uses_weight_bias_scale_shift():
    f = FeatureFilter(num_classes=2, channels=2, tied=True)
    assert "weight" in dict(f.named_buffers()) and "weight" not in dict(f.named_parameters())
    with torch.no_grad():
        f.weight[1] = torch.tensor([1.0, 1.0])
        f.bias[1] = 0.5
        f.scale.fill_(2.0)
        f.shift.fill_(-1.0)
    x = torch.ones(1, 2, 2, 2)
    y, gate_max = f(x, torch.tensor([1]))
    s4 = torch.sigmoid(torch.tensor(4.0))  # 2 * (2 + 0.5) - 1 = 4
    assert torch.allclose(y, s4 * x)
    assert gate_max.item() == pytest.approx(s4.item())


# --------------------------------------------------------------------------- tied mode


def test_tied_gate_logit_is_class_activation_map(resnet18_box):
    torch.manual_seed(1)
    box = resnet18_box
    model = build_masking_model(tied_config(), box).eval()
    head = box.network.get_classifier()
    assert torch.equal(model.filter.weight, head.weight)
    assert torch.equal(model.filter.bias, head.bias)
    images = torch.rand(2, 3, 64, 64)
    classes = torch.tensor([3, 700])
    feats = model.encoder(images)
    x = feats.coarsest  # (2, 512, 2, 2)
    f = model.filter
    logit = torch.einsum("bchw,bc->bhw", x, f.weight[classes]) + f.bias[classes].view(-1, 1, 1)
    # the filter computes exactly this logit (scale 1, shift 0 at init)
    y, gate_max = f(x, classes)
    assert torch.allclose(y, x * torch.sigmoid(logit).unsqueeze(1), atol=1e-6)
    assert torch.allclose(gate_max, torch.sigmoid(logit).flatten(1).amax(1), atol=1e-6)
    # global average pooling + linear: the spatial mean of the CAM is the class logit
    logits = box(images)
    want = logits[torch.arange(2), classes]
    assert torch.allclose(logit.mean(dim=(1, 2)), want, rtol=1e-4, atol=1e-4)
    # and the model's own logits (one backbone pass) match the black box's
    out = model(images, classes, with_logits=True)
    assert torch.allclose(out.logits, logits, rtol=1e-4, atol=1e-4)


def test_timm_encoder_mask_shape_and_range(resnet18_box):
    torch.manual_seed(2)
    model = build_masking_model(tied_config(), resnet18_box).eval()
    out = model(torch.rand(2, 3, 64, 64), torch.tensor([0, 999]))
    assert out.mask.shape == (2, 1, 64, 64)
    assert out.mask_lowres.shape == (2, 1, 16, 16)
    assert out.gate_max.shape == (2,)
    assert out.logits is None
    assert out.mask.min() >= 0 and out.mask.max() <= 1


def test_too_few_upsampler_blocks(resnet18_box):
    cfg = MaskerConfig(num_classes=1000, encoder="blackbox", upsampler_channels=(32, 16))
    with pytest.raises(RtsalError, match="3 upsampler blocks"):
        build_masking_model(cfg, resnet18_box)


def test_blackbox_encoder_needs_timm_black_box():
    cfg = MaskerConfig(num_classes=4, encoder="blackbox")
    with pytest.raises(RtsalError, match="encoder"):
        build_masking_model(cfg, tiny_box())


def test_unknown_embedding_mode():
    with pytest.raises(RtsalError, match="embedding"):
        MaskerConfig(num_classes=4, embedding="frozen")


# --------------------------------------------------------------------------- small encoder


@pytest.mark.parametrize(
    ("in_channels", "size", "stride"), [(1, 28, 4), (3, 32, 4), (3, 32, 2), (3, 30, 2)]
)
def test_small_encoder_mask_shape_and_range(in_channels, size, stride):
    torch.manual_seed(0)
    model = build_masking_model(small_config(10, in_channels, stride)).eval()
    out = model(torch.rand(3, in_channels, size, size), torch.tensor([0, 5, 9]))
    assert out.mask.shape == (3, 1, size, size)
    assert out.mask_lowres.shape[:2] == (3, 1)
    assert out.gate_max.shape == (3,)
    assert out.mask.min() >= 0 and out.mask.max() <= 1


def test_small_encoder_strides_and_channels():
    enc = SmallEncoder(3, widths=(8, 16, 32), layers=2)
    feats = enc(torch.rand(1, 3, 32, 32))
    assert [tuple(s.shape[1:]) for s in feats.skips] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert feats.coarsest is feats.skips[-1]
    assert len(enc.blocks[0]) == 2


def test_masks_depend_on_class_only_through_the_gate():
    torch.manual_seed(0)
    model = build_masking_model(small_config()).eval()
    with torch.no_grad():  # classes 1 and 2: gate closed (encoder features are >= 0 after ReLU)
        model.filter.embedding.weight[1:3] = -1e4
    x = torch.rand(1, 3, 32, 32).expand(3, -1, -1, -1)
    out = model(x, torch.tensor([0, 1, 2]))
    assert out.gate_max[0].item() > 0.4
    assert out.gate_max[1:].max().item() < 1e-20
    assert torch.equal(out.mask[1], out.mask[2])
    assert not torch.equal(out.mask[0], out.mask[1])


# --------------------------------------------------------------------------- gradients


def assert_decoder_has_grads(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert named
    missing = [n for n, p in named if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for _, p in named)
    assert any(p.grad.abs().sum() > 0 for _, p in named)


def assert_frozen(module):
    for n, p in module.named_parameters():
        assert not p.requires_grad, n
        assert p.grad is None, n


def test_gradients_small_encoder_stub_black_box():
    torch.manual_seed(0)
    box = tiny_box()
    model = build_masking_model(small_config(), box).train()
    images = torch.rand(2, 3, 32, 32)
    classes = torch.tensor([1, 3])
    out = model(images, classes)
    SaliencyObjective(PRESETS["paper"], box)(images, out, classes).total.backward()
    assert_decoder_has_grads(model)
    assert any(n.startswith("encoder.") for n, p in model.named_parameters() if p.grad is not None)
    assert_frozen(box)


def test_gradients_authors_form_small_encoder():
    torch.manual_seed(0)
    box = tiny_box()
    model = build_masking_model(small_config(), box).train()
    images = torch.rand(2, 3, 32, 32)
    classes = torch.tensor([1, 3])
    out = model(images, classes)
    SaliencyObjective(PRESETS["authors"], box)(
        images, out, classes, labels=classes, is_real=torch.tensor([True, False])
    ).total.backward()
    assert_decoder_has_grads(model)
    assert_frozen(box)


def test_gradients_timm_encoder_frozen(resnet18_box):
    torch.manual_seed(3)
    box = resnet18_box
    model = build_masking_model(tied_config(), box).train()
    assert not model.encoder.training  # a frozen encoder stays in eval mode
    images = torch.rand(2, 3, 64, 64)
    classes = torch.tensor([5, 6])
    out = model(images, classes)
    SaliencyObjective(PRESETS["paper"], box)(images, out, classes).total.backward()
    assert_decoder_has_grads(model)
    assert_frozen(model.encoder)
    assert_frozen(box)
    assert model.filter.scale.grad is not None and model.filter.shift.grad is not None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("encoder.") for n in trainable)


def test_learned_embedding_gets_gradient_with_timm_encoder(resnet18_box):
    torch.manual_seed(4)
    cfg = MaskerConfig(num_classes=1000, encoder="blackbox", upsampler_channels=(32, 16, 8))
    model = build_masking_model(cfg, resnet18_box).train()
    images = torch.rand(2, 3, 64, 64)
    classes = torch.tensor([5, 6])
    out = model(images, classes)
    SaliencyObjective(PRESETS["paper"], resnet18_box)(images, out, classes).total.backward()
    grad = model.filter.embedding.weight.grad
    assert grad is not None
    # only the selected classes' rows receive gradient
    rows = grad.abs().sum(1).nonzero().flatten().tolist()
    assert rows == [5, 6]
    assert_frozen(resnet18_box)


@pytest.mark.parametrize(("mask_stride", "blocks", "low"), [(4, 0, 8), (2, 1, 16)])
def test_upsampler_blocks_follow_strides(mask_stride, blocks, low):
    # encoder strides 2 and 4: one x2 block per halving from 4 down to the head's stride
    enc = SmallEncoder(3, widths=(8, 16), layers=1)
    model = MaskingModel(small_config(mask_stride=mask_stride), enc).eval()
    assert len(model.upsamplers) == blocks
    out = model(torch.rand(1, 3, 32, 32), torch.tensor([0]))
    assert out.mask_lowres.shape == (1, 1, low, low)
    assert out.mask.shape == (1, 1, 32, 32)


# --------------------------------------------------------------------------- one encoder pass


def test_one_encoder_pass_serves_every_class():
    """Rows (image, class) decoded from one encoder pass equal one forward pass per row; class
    TOP1 is the black box's top-1 for that image."""
    torch.manual_seed(0)
    box = tiny_box()
    model = build_masking_model(small_config(), box).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.encode_and_classify(images, box)
        top1 = box(images).argmax(1)
        image_index = torch.tensor([0, 0, 1, 1])
        classes = torch.tensor([1, 3, 2, TOP1])
        masks, explained = model.masks_for_classes(feats, classes, (32, 32), image_index)
        assert explained.tolist() == [1, 3, 2, int(top1[1])]
        assert masks.shape == (4, 1, 32, 32)
        for row, (i, c) in enumerate(zip(image_index, explained, strict=True)):
            alone = model(images[i : i + 1], c.view(1)).mask  # the training-time forward
            assert torch.allclose(masks[row : row + 1], alone, atol=1e-6)


def test_shared_encoder_classifies_in_the_same_pass(resnet18_box):
    """With the black box as encoder, f(X) comes from the encoder's pass (the black box is not
    called again) and equals the black box's own logits."""
    model = build_masking_model(tied_config(), resnet18_box).eval()
    images = torch.rand(2, 3, 64, 64)

    def not_called(x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the black box ran a second pass")

    with torch.no_grad():
        feats = model.encode_and_classify(images, not_called)
        assert torch.allclose(feats.logits, resnet18_box(images), atol=1e-5)
        masks, top1 = model.masks_for_classes(feats, torch.full((2,), TOP1), (64, 64))
    assert top1.tolist() == feats.logits.argmax(1).tolist()
    assert masks.shape == (2, 1, 64, 64)
