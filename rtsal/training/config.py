"""The options of a training run, in one place: every default lives here (the command line
reads its defaults from this class), a config file may set any of them, and the checkpoint
stores them all. No torch here, so ``rtsal train --help`` stays fast."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rtsal.engine.model_config import MaskerConfig
from rtsal.errors import RtsalError

# A preset names the objective's weights (rtsal.engine.objective.PRESETS) and, here, the training
# options that go with them. An option left unset (None) takes its preset's value, else the
# fallback below. "auto" is "photos" when the masker's encoder is a pretrained classifier's
# features (the black box itself or a timm backbone) and its inputs are photos (96 px or more),
# "paper" for the small from-scratch encoder and small images (CIFAR-10, Fashion-MNIST).
PRESET_NAMES = ("auto", "photos", "paper", "authors")
RECIPES: dict[str, dict[str, Any]] = {
    "photos": {"lr": 5e-4, "batch_size": 12, "mosaic": 0.3, "color_jitter": 0.1},
}
RECIPE_FALLBACK: dict[str, Any] = {"lr": 1e-3, "batch_size": 32, "mosaic": 0.0, "color_jitter": 0.0}
LABEL_CHOICES = ("auto", "folder", "blackbox")


@dataclass
class TrainConfig:
    blackbox: str
    data: str
    out: str = "runs/masker"
    data_root: str | None = None
    weights: str | None = None
    pretrained: bool = True
    encoder: str = "auto"  # auto: the black box itself when it can share features, else "small"
    embedding: str = "auto"  # auto: classifier-init with a shared encoder, else learned
    norm: str = MaskerConfig.norm  # batch or group (group: identical on any number of processes)
    preset: str = "auto"  # see PRESET_NAMES; resolved once the black box is known
    tv_weight: float | None = None
    area_weight: float | None = None
    area_power: float | None = None
    preserve_weight: float | None = None
    destroy_weight: float | None = None
    destroy_power: float | None = None
    destroy_dilation: int | None = None
    keep_blur_prob: float | None = None
    embed_weight: float | None = None
    fake_prob: float = 0.3
    epochs: float | None = None
    steps: int | None = None
    batch_size: int | None = None  # the global batch, shared by all processes (preset: 12 / 32)
    image_size: int | None = None
    lr: float | None = None  # preset: 5e-4 (photos) / 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 0
    upsampler_channels: tuple[int, ...] = MaskerConfig.upsampler_channels
    bottlenecks: int = MaskerConfig.bottlenecks
    small_widths: tuple[int, ...] = MaskerConfig.small_widths
    mask_stride: int | None = None
    limit: int | None = None
    holdout: float = 0.0  # fraction of an image folder kept out of training (listed in out/)
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True  # NHWC layout for the networks and batches (faster on CPUs)
    max_bad_steps: int = 5
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: only at the end)
    init: str | None = None  # start from this masking-model checkpoint's weights (fine-tuning)
    labels: str = "auto"  # folder (class folders / synset names), blackbox (its top-1), or auto:
    # folder labels when the folder has them, else the black box's
    min_confidence: float = 0.3  # --labels blackbox: keep photos whose top-1 is at least this
    exclude: tuple[str, ...] = ()  # evaluation folders: their photos (and look-alikes) left out
    dedup: bool = True  # drop repeated photos (same difference hash)
    crop_scale: float = 0.35  # random resized crops keep at least this share of the photo
    color_jitter: float | None = None  # brightness/contrast/saturation jitter (preset: 0.1 / 0)
    mosaic: float | None = None  # share of samples that are mosaics of 2 or 4 photos of other
    # classes (preset: 0.3 / 0)
    mosaic_tiles: tuple[int, ...] = (2, 4)
    val_every: int = 0  # steps between validations on held-out photos (needs --holdout)
    val_photos: int = 200  # held-out photos (and as many mosaics) used for validation
    keep_validated: bool = False  # keep the model of every validation in OUT/validated/step-N
    val_boxes: str | None = None  # photos with exact boxes (boxes.json): validate by localisation

    def resolved(self, photos: bool) -> TrainConfig:
        """The config with its preset named ("auto" decided: ``photos`` when the masker's
        encoder is a pretrained classifier's and its inputs are photos, else ``paper``) and
        every option the preset sets filled in where it was left unset."""
        preset = self.preset
        if preset == "auto":
            preset = "photos" if photos else "paper"
        values = {**RECIPE_FALLBACK, **RECIPES.get(preset, {})}
        unset = {k: v for k, v in values.items() if getattr(self, k) is None}
        return replace(self, preset=preset, **unset)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["upsampler_channels"] = list(self.upsampler_channels)
        d["small_widths"] = list(self.small_widths)
        d["exclude"] = list(self.exclude)
        d["mosaic_tiles"] = list(self.mosaic_tiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls._typed(d)

    @classmethod
    def _typed(cls, d: dict[str, Any]) -> TrainConfig:
        for k in ("upsampler_channels", "small_widths", "exclude", "mosaic_tiles"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    @classmethod
    def from_sources(
        cls, file: str | Path | None = None, options: dict[str, Any] | None = None
    ) -> TrainConfig:
        """Defaults < a config file (TOML or JSON, keys named as the fields) < ``options``
        (explicitly given command-line options)."""
        values: dict[str, Any] = {}
        if file is not None:
            values.update(read_config_file(file))
        values.update(options or {})
        for key in ("blackbox", "data"):
            if not values.get(key):
                raise RtsalError(f"rtsal train needs --{key} (or a config file naming it)")
        return cls._typed(values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The fields a training config file sets; unknown keys are an error with close matches."""
    import tomllib

    from rtsal.errors import UnknownNameError

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise RtsalError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RtsalError(f"{path}: cannot read ({exc})") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise RtsalError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})"
        ) from None
    if not isinstance(values, dict):
        raise RtsalError(f"{path}: expected a table of options")
    known = [f.name for f in fields(TrainConfig)]
    values = {k.replace("-", "_"): v for k, v in values.items()}
    for k in values:
        if k not in known:
            raise UnknownNameError(f"option in {path}", k, known)
    return values
