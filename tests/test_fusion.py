"""Folding BatchNorm into convolutions: hand-computed weights, equal outputs, shared encoders."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rtsal.engine.fusion import count_batch_norms, fold_batch_norms
from rtsal.engine.model import MaskerConfig, MaskingModel, TimmEncoder, build_masking_model
from rtsal.errors import RtsalError
from tests.helpers import drop_batch_norms, randomise_batch_norms

EPS = 2.0**-10  # exact in float32, so var + eps below is exactly 4 and 1


def set_bn(bn: nn.BatchNorm2d, mean, var, gamma=None, beta=None) -> None:
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
        if gamma is not None:
            bn.weight.copy_(torch.tensor(gamma))
            bn.bias.copy_(torch.tensor(beta))


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert (a - b).abs().max().item() <= tol


def masker_inputs(num_classes: int, size: int = 32, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, size, size, generator=g)
    classes = torch.randint(0, num_classes, (batch,), generator=g)
    return images, classes


def small_masker(norm: str = "batch") -> MaskingModel:
    torch.manual_seed(0)
    cfg = MaskerConfig(
        num_classes=5, encoder="small", upsampler_channels=(32, 16), mask_stride=2, norm=norm
    )
    model = build_masking_model(cfg)
    randomise_batch_norms(model)
    return model.eval()


def test_conv2d_hand_computed():
    # conv 1 -> 2 channels, weights (2, -1), no bias; std = sqrt(var + eps) = (2, 1)
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
    bn = nn.BatchNorm2d(2, eps=EPS)
    set_bn(bn, mean=[0.5, 1.0], var=[4 - EPS, 1 - EPS], gamma=[3.0, 0.5], beta=[1.0, -2.0])
    net = nn.Sequential(conv, bn, nn.ReLU()).eval()
    folded = fold_batch_norms(net)

    assert isinstance(folded[1], nn.Identity) and isinstance(folded[2], nn.ReLU)
    # scale = gamma / std = (1.5, 0.5); bias = beta + (0 - mean) * scale
    assert torch.equal(folded[0].weight.flatten(), torch.tensor([3.0, -0.5]))
    assert torch.equal(folded[0].bias, torch.tensor([0.25, -2.5]))
    assert not folded[0].weight.requires_grad and not folded[0].bias.requires_grad
    x = torch.randn(3, 1, 5, 5)
    assert_close(folded(x), net(x), 1e-6)
    # the original is untouched
    assert net[1] is bn and net[0].bias is None
    assert torch.equal(net[0].weight.flatten(), torch.tensor([2.0, -1.0]))


def test_conv_bias_and_non_affine_bn_hand_computed():
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 2.0]))
    bn = nn.BatchNorm2d(2, eps=EPS, affine=False)
    set_bn(bn, mean=[0.5, 1.0], var=[4 - EPS, 1 - EPS])
    net = nn.Sequential(conv, bn).eval()
    folded = fold_batch_norms(net)
    # scale = 1 / std = (0.5, 1); bias = (b - mean) * scale
    assert torch.equal(folded[0].weight.flatten(), torch.tensor([1.0, -1.0]))
    assert torch.equal(folded[0].bias, torch.tensor([0.25, 1.0]))
    x = torch.randn(3, 1, 5, 5)
    assert_close(folded(x), net(x), 1e-6)


@pytest.mark.parametrize(
    "conv",
    [
        nn.ConvTranspose2d(6, 4, kernel_size=2, stride=2, bias=False),
        nn.ConvTranspose2d(6, 4, kernel_size=3, stride=2, padding=1, groups=2),
        nn.ConvTranspose2d(4, 6, kernel_size=3, stride=2, output_padding=1, groups=2),
        nn.Conv2d(6, 4, 3, padding=1, groups=2, bias=False),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4),
    ],
    ids=["convT", "convT-groups", "convT-groups-outpad", "conv-groups", "conv-groups-bias"],
)
def test_random_stats_outputs_equal(conv):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(conv.out_channels)
    randomise_batch_norms(bn, seed=3)
    net = nn.Sequential(conv, bn, nn.ReLU()).eval()
    folded = fold_batch_norms(net)
    assert count_batch_norms(net) == 1 and count_batch_norms(folded) == 0
    x = torch.randn(2, conv.in_channels, 7, 7)
    assert_close(folded(x), net(x))


def test_masking_model_small_encoder():
    model = small_masker()
    images, classes = masker_inputs(5)
    with torch.no_grad():
        before = model(images, classes)
    n_bn = count_batch_norms(model)
    assert n_bn > 0

    folded = fold_batch_norms(model)
    assert count_batch_norms(folded) == 0  # the small encoder is not a TimmEncoder: folded too
    assert folded.config == model.config and folded.skip_index == model.skip_index
    assert folded.encoder is not model.encoder
    # indices stay: the names of all other parameters are unchanged
    bn_names = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    kept = {k for k in model.state_dict() if k.rsplit(".", 1)[0] not in bn_names}
    assert kept <= set(folded.state_dict())
    convs = [(n, p) for n, p in folded.named_parameters() if p.ndim == 4]
    assert all(p.requires_grad == n.startswith("head.") for n, p in convs)  # head: no BN after
    with torch.no_grad():
        out = folded(images, classes)
        after = model(images, classes)
    assert_close(out.mask, before.mask)
    assert_close(out.mask_lowres, before.mask_lowres)
    assert_close(out.gate_max, before.gate_max)
    assert before.mask.std() > 1e-3  # the comparison is not trivial
    dropped = copy.deepcopy(model)
    drop_batch_norms(dropped)
    with torch.no_grad():
        assert (dropped(images, classes).mask - before.mask).abs().max() > 1e-2  # BNs matter
    # the original still has its BatchNorms and gives the same masks
    assert count_batch_norms(model) == n_bn
    assert torch.equal(after.mask, before.mask)


def test_channels_last():
    model = small_masker().to(memory_format=torch.channels_last)
    folded = fold_batch_norms(model)
    conv = folded.upsamplers[0].blocks[0].body[3]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    images, classes = masker_inputs(5)
    with torch.no_grad():
        ref = model(images, classes).mask
        out = folded(images.contiguous(memory_format=torch.channels_last), classes).mask
    assert_close(out, ref)


def test_contiguous_weights_stay_contiguous():
    folded = fold_batch_norms(small_masker())
    assert folded.upsamplers[0].blocks[0].body[3].weight.is_contiguous()


def test_training_mode_raises():
    model = small_masker().train()
    with pytest.raises(RtsalError, match="training mode"):
        fold_batch_norms(model)
    assert model.training  # untouched


def test_no_running_stats_raises():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(RtsalError, match="running statistics"):
        fold_batch_norms(net)


def test_unfoldable_batch_norms_are_left():
    class Wrapped(nn.Module):  # conv and BN as attributes: the forward may not chain them
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    net = nn.Sequential(
        nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4), Wrapped()
    )
    randomise_batch_norms(net)
    net.eval()
    folded = fold_batch_norms(net)
    assert count_batch_norms(folded) == 3
    x = torch.randn(2, 3, 6, 6)
    assert_close(folded(x), net(x), 0.0)


def test_shared_sequential_folded_once():
    block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
    net = nn.Sequential(block, nn.ReLU(), block)
    randomise_batch_norms(net)
    net.eval()
    folded = fold_batch_norms(net)
    assert folded[0] is folded[2] and count_batch_norms(folded) == 0
    x = torch.randn(2, 4, 6, 6)
    assert_close(folded(x), net(x))


def test_group_norm_model_unchanged():
    model = small_masker(norm="group")
    assert count_batch_norms(model) == 0
    folded = fold_batch_norms(model)
    assert folded is not model
    images, classes = masker_inputs(5)
    with torch.no_grad():
        assert torch.equal(folded(images, classes).mask, model(images, classes).mask)


def test_timm_encoder_is_shared():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    randomise_batch_norms(net, seed=5)
    encoder = TimmEncoder(net, (0.5,) * 3, (0.5,) * 3)
    model = MaskingModel(MaskerConfig(num_classes=10, upsampler_channels=(32, 16, 8)), encoder)
    randomise_batch_norms(model.upsamplers, seed=6)
    model.eval()
    encoder_bns = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    encoder_state = {k: v.clone() for k, v in encoder.state_dict().items()}

    folded = fold_batch_norms(model)
    assert folded.encoder is model.encoder and folded.encoder.network is net
    assert count_batch_norms(folded) == 0  # the decoder; TimmEncoders are not counted
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == encoder_bns
    assert all(torch.equal(v, encoder_state[k]) for k, v in encoder.state_dict().items())
    images, classes = masker_inputs(10, size=64)
    with torch.no_grad():
        ref = model(images, classes, with_logits=True)
        out = folded(images, classes, with_logits=True)
    assert_close(out.mask, ref.mask)
    assert torch.equal(out.logits, ref.logits)
