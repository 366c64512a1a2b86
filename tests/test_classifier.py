"""Reference classifiers: the multi-scale interface that lets a masking model share them."""

from __future__ import annotations

import pytest
import torch

from rtsal.engine.model import MaskerConfig, build_masking_model
from rtsal.registry.blackbox import BlackBox
from rtsal.registry.classifiers import build_classifier


@pytest.mark.parametrize("arch", ["resnet9", "resnet18"])
def test_intermediates_match_the_forward_pass(arch):
    torch.manual_seed(0)
    net = build_classifier(arch, 10, 3, 8).eval()
    x = torch.rand(2, 3, 32, 32)
    final, inter = net.forward_intermediates(x)
    torch.testing.assert_close(net.forward_head(final), net(x))
    assert [t.shape[-1] for t in inter] == [32 // d["reduction"] for d in net.feature_info]
    assert [t.shape[1] for t in inter] == [d["num_chs"] for d in net.feature_info]
    assert final.shape[1] == net.num_features == net.get_classifier().in_features


def test_a_classifier_serves_as_the_masking_models_encoder():
    torch.manual_seed(0)
    net = build_classifier("resnet9", 10, 3, 8)
    box = BlackBox(
        net,
        name="r9",
        class_names=[str(i) for i in range(10)],
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        input_size=(32, 32),
    )
    assert box.shares_features
    cfg = MaskerConfig(
        num_classes=10,
        encoder="blackbox",
        embedding="classifier-init",
        upsampler_channels=(16, 8),
        mask_stride=2,
    )
    model = build_masking_model(cfg, box)
    torch.testing.assert_close(model.filter.embedding.weight, net.fc.weight)
    x = torch.rand(3, 3, 32, 32)
    out = model(x, torch.tensor([1, 2, 3]), with_logits=True)
    assert out.mask.shape == (3, 1, 32, 32) and out.mask_lowres.shape == (3, 1, 16, 16)
    torch.testing.assert_close(out.logits, box(x))  # one backbone pass gives the logits too
