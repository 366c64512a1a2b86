"""What rebuilds a masking model: its configuration, stored in every checkpoint (no torch here,
so options and checkpoints can be read without loading a network)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rtsal.errors import RtsalError

EMBEDDING_MODES = ("learned", "classifier-init", "classifier-tied")


@dataclass
class MaskerConfig:
    """Everything needed to rebuild a masking model (stored in every checkpoint)."""

    num_classes: int
    in_channels: int = 3
    encoder: str = "blackbox"  # "blackbox" | "small" | "timm:<name>"
    encoder_pretrained: bool = True
    small_widths: tuple[int, ...] = (32, 64, 128)  # small encoder: one width per downsampling
    small_layers: int = 5  # conv layers per downsampling block (paper: 5)
    upsampler_channels: tuple[int, ...] = (256, 128, 64)  # one per upsampler block
    bottlenecks: int = 1  # bottleneck blocks per upsampler (paper: 3 at ImageNet scale)
    mask_stride: int = 4  # resolution of the head relative to the image (paper: 4)
    embedding: str = "learned"  # see EMBEDDING_MODES
    embedding_init: str = ""  # where classifier-initialised vectors came from
    norm: str = "batch"  # "batch" or "group" (batch-independent: same result on any sharding)

    def __post_init__(self) -> None:
        self.small_widths = tuple(self.small_widths)
        self.upsampler_channels = tuple(self.upsampler_channels)
        if self.norm not in ("batch", "group"):
            raise RtsalError(f"norm must be batch or group, got {self.norm!r}")
        if self.embedding not in EMBEDDING_MODES:
            raise RtsalError(f"embedding must be one of {EMBEDDING_MODES}, got {self.embedding!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskerConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
