"""Reference classifiers for small data sets (CIFAR-10, Fashion-MNIST): their architectures
(a ResNet-9, a small ResNet-18, a small ViT) and their checkpoints.

The paper's CIFAR-10 black box is not public; ``rtsal classifier train``
(:mod:`rtsal.tools.classifier`) makes one. The result is a self-describing checkpoint directory
(``format: rtsal-classifier``) that ``--blackbox DIR`` accepts: the registry's checkpoint
provider (:mod:`rtsal.registry.providers.checkpoints`) loads it here as a black box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rtsal.errors import CheckpointError, RtsalError, UnknownNameError

CLASSIFIER_FORMAT = "rtsal-classifier"
CLASSIFIER_WEIGHTS = "classifier.safetensors"
ARCHS = ("resnet9", "resnet18", "vit")


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _MultiScale:
    """The timm-style interface that lets a masking model reuse a classifier as its encoder:
    ``forward_intermediates`` (every stage's map), ``forward_head``, ``feature_info``."""

    stage_ends: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_channels: tuple[int, ...]

    @property
    def feature_info(self) -> list[dict[str, int]]:
        return [
            {"reduction": s, "num_chs": c}
            for s, c in zip(self.stage_strides, self.stage_channels, strict=True)
        ]

    @property
    def num_features(self) -> int:
        return self.stage_channels[-1]

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def _stages(self) -> nn.Sequential:
        raise NotImplementedError

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inter = []
        for i, layer in enumerate(self._stages()):
            x = layer(x)
            if i in self.stage_ends:
                inter.append(x)
        return x, inter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self._stages()(x))


class ResNet9(_MultiScale, nn.Module):
    """The fast CIFAR ResNet ("ResNet-9"): prep, three pooled stages (two with residuals)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w),  # stride 1
            _conv_bn(w, 2 * w, pool=True),  # stride 2
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),  # stride 4
            _conv_bn(4 * w, 8 * w, pool=True),  # stride 8
            _Residual(8 * w),
        )
        self.stage_ends = (0, 2, 3, 5)
        self.stage_strides = (1, 2, 4, 8)
        self.stage_channels = (w, 2 * w, 4 * w, 8 * w)
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.logit_scale = 0.125  # keeps initial logits small

    def _stages(self) -> nn.Sequential:
        return self.features

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # (B, 8w, H/8, W/8) -> (B, K)
        return self.fc(torch.amax(x, dim=(2, 3))) * self.logit_scale


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c_out)
        self.short = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class ResNet18Small(_MultiScale, nn.Module):
    """ResNet-18 for 32 px inputs: 3x3 stem, no max-pool, four stages of two basic blocks."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        w = width
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)
            )
        ]
        c = w
        for i, mult in enumerate((1, 2, 4, 8)):
            stride = 1 if i == 0 else 2
            layers += [_BasicBlock(c, w * mult, stride), _BasicBlock(w * mult, w * mult, 1)]
            c = w * mult
        self.layers = nn.Sequential(*layers)
        self.stage_ends = (2, 4, 6, 8)
        self.stage_strides = (1, 2, 4, 8)
        self.stage_channels = (w, 2 * w, 4 * w, 8 * w)
        self.fc = nn.Linear(c, num_classes)

    def _stages(self) -> nn.Sequential:
        return self.layers

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def small_vit(
    num_classes: int, in_channels: int, width: int, image_size: tuple[int, int]
) -> nn.Module:
    """A small vision transformer (timm's ``VisionTransformer``): patches of the largest side
    up to 1/8 of the image's that divides it (8 x 8 patches of a 64 x 64 canvas, 2 x 2 of a
    28 x 28 Fashion-MNIST item), 6 blocks of width ``6 * width`` (192 for the default 32)
    with 3 heads, a class token; it takes ``image_size`` images only."""
    from timm.models.vision_transformer import VisionTransformer

    h, w = image_size
    patch = max(p for p in range(1, max(1, min(h, w) // 8) + 1) if h % p == 0 and w % p == 0)
    return VisionTransformer(
        img_size=tuple(image_size),
        patch_size=patch,
        in_chans=in_channels,
        num_classes=num_classes,
        embed_dim=6 * width,
        depth=6,
        num_heads=3,
        mlp_ratio=2.0,
    )


def build_classifier(
    arch: str,
    num_classes: int,
    in_channels: int,
    width: int,
    image_size: tuple[int, int] | None = None,
) -> nn.Module:
    if arch == "vit":
        if image_size is None:
            raise RtsalError("a vit classifier needs its image size")
        return small_vit(num_classes, in_channels, width, image_size)
    if arch == "resnet9":
        return ResNet9(num_classes, in_channels, width)
    if arch == "resnet18":
        return ResNet18Small(num_classes, in_channels, width)
    raise UnknownNameError("classifier architecture", arch, ARCHS)


def save_classifier(model: nn.Module, meta: dict[str, Any], out: Path) -> None:
    from rtsal.engine.checkpoint import write_checkpoint

    write_checkpoint(
        out,
        {k: v.detach().cpu() for k, v in model.state_dict().items()},
        meta,
        weights_name=CLASSIFIER_WEIGHTS,
    )


def load_classifier(path: str | Path):
    """A classifier checkpoint directory -> :class:`rtsal.BlackBox`."""
    from rtsal.engine.checkpoint import read_checkpoint
    from rtsal.registry.blackbox import BlackBox

    sd, meta, where = read_checkpoint(
        path, expected_format=CLASSIFIER_FORMAT, weights_name=CLASSIFIER_WEIGHTS
    )
    try:
        net = build_classifier(
            meta["arch"],
            meta["num_classes"],
            meta["in_channels"],
            meta["width"],
            tuple(meta["input_size"]),
        )
        net.load_state_dict(sd)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{where}: weights do not match the described classifier "
            f"({str(exc).splitlines()[0][:160]})"
        ) from None
    return BlackBox(
        net,
        name=str(where.resolve()),
        class_names=meta["class_names"],
        mean=meta["mean"],
        std=meta["std"],
        input_size=tuple(meta["input_size"]),
        interpolation="bilinear",
        provider="checkpoint",
        source=str(where.resolve()),
        fixed_input_size=meta["arch"] == "vit",
    )
