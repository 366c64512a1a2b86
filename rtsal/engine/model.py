"""The masking model of Dabkowski & Gal (2017), Section 4.

    image --encoder--> multi-scale maps; coarsest map X --feature filter (Eq. 7)--> Y
    Y --upsampler blocks (transposed conv x2, skip concat, bottlenecks)--> stride-4 map
    --1x1 conv to (C0, C1), M = |C0| / (|C0| + |C1|) (Eq. 8)--> bilinear x4 --> mask (B, 1, H, W)

Explaining runs the encoder once per image and the decoder once per class asked for
(``encode_and_classify``, then ``masks_for_classes``); class ``TOP1`` (-1) is the image's top-1.

Two encoders: a frozen pretrained timm backbone (by default the black box's own network, so
``X_ij^T C_s`` can be tied to the classifier and one backbone pass gives both the logits and the
mask), or the paper's small-image encoder trained from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rtsal.engine.model_config import MaskerConfig
from rtsal.errors import RtsalError

TOP1 = -1  # the class id that asks for each image's top-1 class


class MaskerOutput(NamedTuple):
    mask: torch.Tensor  # (B, 1, H, W) in [0, 1], image resolution
    mask_lowres: torch.Tensor  # (B, 1, H/s, W/s) head resolution
    gate_max: torch.Tensor  # (B,) max_ij sigma(X_ij^T C_s), for the embedding speed-up term
    logits: torch.Tensor | None  # (B, K) black-box logits when the encoder is the black box


# --------------------------------------------------------------------------- encoders


@dataclass
class EncoderFeatures:
    skips: list[torch.Tensor]  # finest first, (B, C_k, H/s_k, W/s_k)
    coarsest: torch.Tensor  # (B, C, H/S, W/S), the map the feature filter gates
    logits: torch.Tensor | None = None  # (B, K) the black box's f(X)

    def rows(self, index: torch.Tensor) -> EncoderFeatures:
        """Image ``index[r]``'s features as row r, (B, ...) -> (R, ...): an image asked about
        several classes appears once per class."""
        logits = self.logits[index] if self.logits is not None else None
        return EncoderFeatures([t[index] for t in self.skips], self.coarsest[index], logits)


class TimmEncoder(nn.Module):
    """A frozen timm classifier read at every scale via ``forward_intermediates``.

    The coarsest map is ``forward_features`` (the classifier's penultimate map: 2048 channels for
    ResNet-50, 1280 for EfficientNet-Lite0), so ``forward_head`` on it gives the logits for free.
    A channels-last final map (Swin's ``NHWC``) is read as channels-first.

    A plain vision transformer (ViT, DeiT: every block at the patch stride s) has no pyramid; it
    gets a fixed one, as in ViTDet's simple feature pyramid but with no weights of its own: the
    outputs of the blocks at one, two and three thirds of the depth, bilinearly upsampled to
    strides s/4 and s/2 and kept at s, and for the coarsest map (stride 2s, what the feature
    filter reads) the final patch tokens, reshaped to their grid and average-pooled 2 x 2. The
    logits still come from the final tokens through ``forward_head``.
    """

    trainable = False

    def __init__(self, network: nn.Module, mean, std):
        super().__init__()
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        info = network.feature_info
        info = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
        strides = [int(d["reduction"]) for d in info]
        self.coarsest_channels = int(network.num_features)
        self.channels_last_final = getattr(network, "output_fmt", "NCHW") == "NHWC"
        self.tokens = len(info) > 1 and len(set(strides)) == 1  # one stride: a plain ViT
        if self.tokens:
            depth, s = len(info), strides[0]
            self.take = [max(0, depth // 3 - 1), max(0, 2 * depth // 3 - 1), depth - 1]
            self.skip_strides = [s // 4, s // 2, s]
            self.skip_channels = [int(info[i]["num_chs"]) for i in self.take]
            self.coarsest_stride = 2 * s
            self.prefix_tokens = int(getattr(network, "num_prefix_tokens", 0))
        else:
            self.skip_strides = strides
            self.skip_channels = [int(d["num_chs"]) for d in info]
            self.coarsest_stride = self.skip_strides[-1]

    def train(self, mode: bool = True) -> TimmEncoder:
        return super().train(False)

    def forward(self, x: torch.Tensor, with_logits: bool = False) -> EncoderFeatures:
        with torch.no_grad():
            x = (x - self.mean) / self.std
            if self.tokens:
                return self._token_features(x, with_logits)
            final, inter = self.network.forward_intermediates(x)
            logits = self.network.forward_head(final) if with_logits else None
            if self.channels_last_final:
                final = final.permute(0, 3, 1, 2)
        return EncoderFeatures(list(inter), final, logits)

    def _token_features(self, x: torch.Tensor, with_logits: bool) -> EncoderFeatures:
        final, inter = self.network.forward_intermediates(x, indices=self.take)
        logits = self.network.forward_head(final) if with_logits else None
        h, w = inter[-1].shape[-2:]
        grid = final[:, self.prefix_tokens :].transpose(1, 2).reshape(final.shape[0], -1, h, w)
        skips = [
            F.interpolate(m, scale_factor=f, mode="bilinear", align_corners=False)
            for m, f in zip(inter[:2], (4, 2), strict=True)
        ] + [inter[2]]
        coarsest = F.avg_pool2d(grid, 2, ceil_mode=True)
        return EncoderFeatures(skips, coarsest, logits)


def norm2d(c: int, kind: str = "batch") -> nn.Module:
    """BatchNorm, or GroupNorm with up to 8 groups (independent of the batch)."""
    if kind == "group":
        return nn.GroupNorm(next(g for g in (8, 4, 2, 1) if c % g == 0), c)
    return nn.BatchNorm2d(c)


def conv_bn_relu(
    c_in: int, c_out: int, stride: int = 1, k: int = 3, norm: str = "batch"
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
        norm2d(c_out, norm),
        nn.ReLU(inplace=True),
    )


class SmallEncoder(nn.Module):
    """The paper's CIFAR-10 encoder: downsampling blocks of ``layers`` 3x3 convs, from scratch."""

    trainable = True

    def __init__(
        self, in_channels: int, widths=(32, 64, 128), layers: int = 5, norm: str = "batch"
    ):
        super().__init__()
        blocks, c = [], in_channels
        for w in widths:
            convs = [conv_bn_relu(c, w, stride=2, norm=norm)]
            convs += [conv_bn_relu(w, w, norm=norm) for _ in range(layers - 1)]
            blocks.append(nn.Sequential(*convs))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.skip_strides = [2 ** (i + 1) for i in range(len(widths))]
        self.skip_channels = list(widths)
        self.coarsest_channels = widths[-1]
        self.coarsest_stride = self.skip_strides[-1]

    def forward(self, x: torch.Tensor, with_logits: bool = False) -> EncoderFeatures:
        skips = []
        for block in self.blocks:  # (B, w_k, H/2^k, W/2^k)
            x = block(x)
            skips.append(x)
        return EncoderFeatures(skips, x, None)


# --------------------------------------------------------------------------- decoder parts


class FeatureFilter(nn.Module):
    """Eq. 7: ``Y_ij = X_ij * sigma(X_ij^T C_s)`` with a class embedding ``C_s``.

    ``tied`` uses the black box's classifier rows (and biases) as ``C_s``, frozen, so that
    ``X_ij^T C_s + b_s`` is the class-activation map; a learned scale and shift then calibrate
    the gate.
    """

    def __init__(self, num_classes: int, channels: int, tied: bool = False):
        super().__init__()
        self.tied = tied
        if tied:
            # copied from the black box on every build, so not stored in checkpoints
            self.register_buffer("weight", torch.zeros(num_classes, channels), persistent=False)
            self.register_buffer("bias", torch.zeros(num_classes), persistent=False)
            self.scale = nn.Parameter(torch.tensor(1.0))
            self.shift = nn.Parameter(torch.tensor(0.0))
        else:
            self.embedding = nn.Embedding(num_classes, channels)
            nn.init.normal_(self.embedding.weight, std=channels**-0.5)

    def class_vectors(self, classes: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, C)
        return self.weight[classes] if self.tied else self.embedding(classes)

    def forward(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.class_vectors(classes)  # (B, C)
        logit = torch.einsum("bchw,bc->bhw", x, c).unsqueeze(1)  # X_ij^T C_s, (B, 1, h, w)
        if self.tied:
            logit = self.scale * (logit + self.bias[classes].view(-1, 1, 1, 1)) + self.shift
        gate = torch.sigmoid(logit)
        return x * gate, gate.flatten(1).amax(dim=1)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand, residual (projected if widths differ)."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__()
        mid = max(c_out // 4, 8)
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False),
            norm2d(mid, norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            norm2d(mid, norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
            norm2d(c_out, norm),
        )
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), norm2d(c_out, norm))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class UpsamplerBlock(nn.Module):
    """Transposed conv x2, concatenate the encoder map of that scale, bottleneck blocks."""

    # set while tracing a graph for one size class (rtsal.inference.size_classes): the
    # resize is kept only where the traced sizes differ, as for every size of that class
    static_shapes = False

    def __init__(self, c_in: int, c_skip: int, c_out: int, bottlenecks: int, norm: str = "batch"):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2, bias=False),  # x2, no overlap
            norm2d(c_out, norm),
            nn.ReLU(inplace=True),
        )
        blocks = [Bottleneck(c_out + c_skip, c_out, norm)]
        blocks += [Bottleneck(c_out, c_out, norm) for _ in range(bottlenecks - 1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, c_out, 2h, 2w)
        # odd input sizes (260 px: 9 -> 18 against a skip of 17); a traced (exported) graph
        # for any size resizes always, as the sizes are not known when it is made (at equal
        # sizes the resize is the identity)
        if x.shape[-2:] != skip.shape[-2:] or (torch.jit.is_tracing() and not self.static_shapes):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.blocks(torch.cat([x, skip], dim=1))


class MaskHead(nn.Module):
    """Eq. 8: 1x1 conv to two channels, ``M = |C0| / (|C0| + |C1|)``."""

    def __init__(self, c_in: int, eps: float = 1e-6):
        super().__init__()
        self.conv = nn.Conv2d(c_in, 2, kernel_size=1)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c, h, w) -> (B, 1, h, w)
        c = self.conv(x).abs()
        return (c[:, :1] + self.eps / 2) / (c[:, :1] + c[:, 1:] + self.eps)


# --------------------------------------------------------------------------- the model


class MaskingModel(nn.Module):
    """Images in [0, 1] and class ids in, class-specific saliency masks in [0, 1] out."""

    def __init__(self, config: MaskerConfig, encoder: nn.Module):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.filter = FeatureFilter(
            config.num_classes,
            encoder.coarsest_channels,
            tied=config.embedding == "classifier-tied",
        )
        # upsample from the coarsest stride down to the head's stride, one block per x2
        steps, stride = [], encoder.coarsest_stride
        while stride > config.mask_stride:
            stride //= 2
            if stride not in encoder.skip_strides:
                raise RtsalError(f"encoder has no map at stride {stride} for the upsampler")
            steps.append(encoder.skip_strides.index(stride))
        if len(steps) > len(config.upsampler_channels):
            raise RtsalError(
                f"{len(steps)} upsampler blocks are needed (stride {encoder.coarsest_stride} -> "
                f"{config.mask_stride}) but upsampler_channels has {len(config.upsampler_channels)}"
            )
        self.skip_index = steps
        blocks, c = [], encoder.coarsest_channels
        for idx, c_out in zip(steps, config.upsampler_channels, strict=False):
            blocks.append(
                UpsamplerBlock(
                    c, encoder.skip_channels[idx], c_out, config.bottlenecks, config.norm
                )
            )
            c = c_out
        self.upsamplers = nn.ModuleList(blocks)
        self.head = MaskHead(c)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights a checkpoint stores: all but a frozen pretrained encoder."""
        sd = self.state_dict()
        if not getattr(self.encoder, "trainable", True):
            sd = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
        return sd

    def encode(self, images: torch.Tensor, with_logits: bool = False) -> EncoderFeatures:
        """The encoder pass; with a shared encoder it also yields the black box's logits."""
        return self.encoder(images, with_logits=with_logits)

    def decode(
        self, feats: EncoderFeatures, classes: torch.Tensor, size: tuple[int, int]
    ) -> MaskerOutput:
        """Class-specific mask from encoder features (one encoder pass serves many classes)."""
        x, gate_max = self.filter(feats.coarsest, classes)  # Eq. 7, (B, C, H/32, W/32)
        for block, idx in zip(self.upsamplers, self.skip_index, strict=True):
            x = block(x, feats.skips[idx])
        low = self.head(x)  # Eq. 8, (B, 1, H/4, W/4)
        mask = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        return MaskerOutput(mask.clamp(0, 1), low, gate_max, feats.logits)

    def forward(
        self, images: torch.Tensor, classes: torch.Tensor, with_logits: bool = False
    ) -> MaskerOutput:
        feats = self.encode(images, with_logits=with_logits)
        return self.decode(feats, classes, images.shape[-2:])

    # ------------------------------------------------------------ explaining: one encoder pass

    @property
    def shared_encoder(self) -> bool:
        """The encoder is the black box's own network, so its pass gives f(X) as well."""
        return self.config.encoder == "blackbox"

    def encode_and_classify(
        self, images: torch.Tensor, black_box: Callable[[torch.Tensor], torch.Tensor]
    ) -> EncoderFeatures:
        """The encoder pass with the black box's logits f(X) (B, K) in ``logits``: from that
        same backbone pass with a shared encoder, else from ``black_box(images)``."""
        if self.shared_encoder:
            return self.encode(images, with_logits=True)
        return replace(self.encode(images), logits=black_box(images))

    def masks_for_classes(
        self,
        feats: EncoderFeatures,
        classes: torch.Tensor,
        size: tuple[int, int],
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (R, 1, H, W) for R (image, class) rows of one encoder pass, and the classes
        explained (R,). Row r explains class ``classes[r]`` of image ``image_index[r]`` (default:
        row r is image r); class ``TOP1`` is that image's argmax of ``feats.logits``."""
        if image_index is not None:
            feats = feats.rows(image_index)  # (R, ...)
        if feats.logits is not None:
            classes = torch.where(classes < 0, feats.logits.argmax(dim=1), classes)  # (R,)
        return self.decode(feats, classes, size).mask, classes


def build_encoder(config: MaskerConfig, black_box: Any | None) -> nn.Module:
    """The encoder a config names; ``"blackbox"`` reuses the black box's own network."""
    if config.encoder == "small":
        return SmallEncoder(
            config.in_channels, config.small_widths, config.small_layers, config.norm
        )
    if config.encoder == "blackbox":
        if black_box is None or not black_box.shares_features:
            raise RtsalError(
                "this black box cannot serve as the encoder (not a timm model); "
                "choose --encoder small or --encoder timm:NAME"
            )
        return TimmEncoder(black_box.network, black_box.mean_values, black_box.std_values)
    if config.encoder.startswith("timm:"):
        import timm
        from timm.data import resolve_data_config

        name = config.encoder[5:]
        try:
            net = timm.create_model(name, pretrained=config.encoder_pretrained)
        except Exception as exc:
            raise RtsalError(
                f"cannot build encoder {name!r} ({type(exc).__name__}; pretrained weights "
                "need a connection): use --encoder blackbox or --encoder small"
            ) from None
        cfg = resolve_data_config({}, model=net)
        return TimmEncoder(net, cfg["mean"], cfg["std"])
    raise RtsalError(f"unknown encoder {config.encoder!r}: use blackbox, small or timm:NAME")


def build_masking_model(config: MaskerConfig, black_box: Any | None = None) -> MaskingModel:
    model = MaskingModel(config, build_encoder(config, black_box))
    if config.embedding != "learned":
        init_embedding_from_classifier(model, black_box)
    return model


def has_linear_classifier(black_box: Any) -> bool:
    """The black box's classifier is one linear layer on its features (its rows can start the
    class embedding); not so for, e.g., DeiT's two distillation heads."""
    network = getattr(black_box, "network", None)
    get_classifier = getattr(network, "get_classifier", None)
    if not callable(get_classifier):
        return False
    head = get_classifier()
    return isinstance(head, nn.Linear) and head.in_features == getattr(network, "num_features", -1)


def init_embedding_from_classifier(model: MaskingModel, black_box: Any) -> None:
    """Copy the black box's classifier rows into the class embedding (needs a shared encoder)."""
    if black_box is None or model.config.encoder != "blackbox":
        raise RtsalError("classifier-initialised embeddings need --encoder blackbox")
    if not has_linear_classifier(black_box):  # its features are the encoder's coarsest map
        raise RtsalError("the black box's classifier is not a linear layer on its feature map")
    head = black_box.network.get_classifier()
    with torch.no_grad():
        if model.filter.tied:
            model.filter.weight.copy_(head.weight)
            model.filter.bias.copy_(head.bias if head.bias is not None else 0)
        else:
            model.filter.embedding.weight.copy_(head.weight)
    model.config.embedding_init = black_box.name


__all__ = [
    "TOP1",
    "EncoderFeatures",
    "MaskerConfig",
    "MaskerOutput",
    "MaskingModel",
    "FeatureFilter",
    "has_linear_classifier",
    "UpsamplerBlock",
    "MaskHead",
    "SmallEncoder",
    "TimmEncoder",
    "build_masking_model",
]
