"""Training a masking model against a black box (Section 4 of the paper).

Defaults < preset < explicit options: ``TrainConfig`` holds the options, ``objective_preset``
the loss weights. The black box and a pretrained encoder stay frozen; 30 % of the samples get a
fake class selector, for which the mask should vanish.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rtsal.blackbox import BlackBox, create_black_box
from rtsal.checkpoint import prepare_out_dir, save_masker
from rtsal.classes import ClassResolver
from rtsal.data import make_loader, open_dataset
from rtsal.device import resolve_device
from rtsal.errors import RtsalError
from rtsal.model import MaskerConfig, MaskingModel, build_masking_model
from rtsal.objective import LossTerms, ObjectiveConfig, SaliencyObjective, objective_preset

TERMS = ("tv", "area", "preserve", "destroy")


@dataclass
class TrainConfig:
    blackbox: str
    data: str
    out: str = "runs/masker"
    data_root: str | None = None
    weights: str | None = None
    pretrained: bool = True
    encoder: str = "auto"  # auto: the black box itself when it is a timm model, else "small"
    embedding: str = "auto"  # auto: classifier-init with a shared encoder, else learned
    preset: str = "paper"
    tv_weight: float | None = None
    area_weight: float | None = None
    preserve_weight: float | None = None
    destroy_weight: float | None = None
    destroy_power: float | None = None
    embed_weight: float | None = None
    fake_prob: float = 0.3
    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 32
    image_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 0
    upsampler_channels: tuple[int, ...] = (256, 128, 64)
    bottlenecks: int = 1
    small_widths: tuple[int, ...] = (32, 64, 128)
    mask_stride: int | None = None
    limit: int | None = None
    holdout: float = 0.0  # fraction of an image folder kept out of training (listed in out/)
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    max_bad_steps: int = 5

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["upsampler_channels"] = list(self.upsampler_channels)
        d["small_widths"] = list(self.small_widths)
        return d


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    final_losses: dict[str, float]
    interrupted: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def masker_config_for(cfg: TrainConfig, box: BlackBox) -> MaskerConfig:
    encoder = cfg.encoder
    if encoder == "auto":
        encoder = "blackbox" if box.shares_features else "small"
    embedding = cfg.embedding
    if embedding == "auto":
        embedding = "classifier-init" if encoder == "blackbox" else "learned"
    stride = cfg.mask_stride or (4 if encoder != "small" else 2)
    return MaskerConfig(
        num_classes=box.num_classes,
        in_channels=box.in_channels,
        encoder=encoder,
        upsampler_channels=tuple(cfg.upsampler_channels),
        bottlenecks=cfg.bottlenecks,
        small_widths=tuple(cfg.small_widths),
        mask_stride=stride,
        embedding=embedding,
    )


def sample_selectors(
    labels: torch.Tensor, num_classes: int, fake_prob: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class selectors: the true label, or (with ``fake_prob``) a uniformly drawn other class."""
    B = labels.shape[0]
    fake = torch.rand(B, generator=generator) < fake_prob
    shift = torch.randint(1, max(num_classes, 2), (B,), generator=generator)
    classes = torch.where(fake, (labels + shift) % num_classes, labels)
    return classes, ~fake


def make_scheduler(opt, cfg: TrainConfig, total: int):
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if cfg.schedule == "step":  # x0.1 at 2/3 of training
            return 0.1 if t >= 2 / 3 else 1.0
        return 1.0

    if cfg.schedule not in ("cosine", "step", "constant"):
        raise RtsalError(f"--schedule must be cosine, step or constant, not {cfg.schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def split_holdout(dataset, fraction: float, seed: int):
    """Hold out a seeded fraction of an image-file data set; returns (train, held-out paths)."""
    n = len(dataset.samples)
    k = int(round(n * fraction))
    g = torch.Generator().manual_seed(seed + 7919)
    perm = torch.randperm(n, generator=g).tolist()
    held = sorted(perm[:k])
    held_set = set(held)
    held_paths = [dataset.samples[i][0] for i in held]
    dataset.samples = [s for i, s in enumerate(dataset.samples) if i not in held_set]
    return dataset, held_paths


class Trainer:
    """Owns the model, the objective and the loop; ``fit()`` trains and writes the checkpoint."""

    def __init__(self, cfg: TrainConfig, black_box: BlackBox | None = None):
        self.cfg = cfg
        if not 0 <= cfg.fake_prob < 1:
            raise RtsalError("--fake-prob must be in [0, 1)")
        if cfg.batch_size < 1:
            raise RtsalError("--batch-size must be at least 1")
        self.out = prepare_out_dir(cfg.out)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.black_box = black_box or create_black_box(
            cfg.blackbox, pretrained=cfg.pretrained, weights=cfg.weights
        )
        box = self.black_box
        self.resolver = ClassResolver.for_black_box(box)
        size = (cfg.image_size, cfg.image_size) if cfg.image_size else box.input_size
        self.dataset = open_dataset(
            cfg.data,
            split="train",
            size=size,
            train=True,
            resolver=self.resolver,
            data_root=cfg.data_root,
            interpolation=box.interpolation,
            crop_pct=box.crop_pct,
            channels=box.in_channels,
            limit=cfg.limit,
            seed=cfg.seed,
        )
        ds_names = getattr(self.dataset, "class_names", None)
        if ds_names is not None and len(ds_names) != box.num_classes:
            raise RtsalError(
                f"data set {cfg.data!r} has {len(ds_names)} classes but black box "
                f"{box.name!r} has {box.num_classes}"
            )
        self.holdout: list[Path] = []
        if cfg.holdout > 0:
            if not hasattr(self.dataset, "samples"):
                raise RtsalError("--holdout applies to image folders; named sets have a test split")
            self.dataset, self.holdout = split_holdout(self.dataset, cfg.holdout, cfg.seed)
            (self.out / "holdout.txt").write_text("".join(f"{p}\n" for p in self.holdout))
        self.model_config = masker_config_for(cfg, box)
        self.model: MaskingModel = build_masking_model(self.model_config, box)
        self.objective_config: ObjectiveConfig = objective_preset(
            cfg.preset,
            tv_weight=cfg.tv_weight,
            area_weight=cfg.area_weight,
            preserve_weight=cfg.preserve_weight,
            destroy_weight=cfg.destroy_weight,
            destroy_power=cfg.destroy_power,
            embed_weight=cfg.embed_weight,
        )
        self.model.to(self.device)
        self.black_box.to(self.device)
        self.objective = SaliencyObjective(self.objective_config, self.black_box)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.loader = make_loader(
            self.dataset,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            workers=cfg.workers,
            drop_last=len(self.dataset) >= cfg.batch_size,
        )
        per_epoch = max(1, len(self.loader))
        if cfg.steps is not None:
            self.total_steps = cfg.steps
        elif cfg.epochs is not None:
            self.total_steps = max(1, int(round(cfg.epochs * per_epoch)))
        else:
            self.total_steps = per_epoch
        self.steps_per_epoch = per_epoch
        self.scheduler = make_scheduler(self.optimizer, cfg, self.total_steps)
        self.selector_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.amp_dtype = None
        self.scaler = None
        if cfg.amp and self.device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                self.amp_dtype = torch.bfloat16
            else:
                self.amp_dtype = torch.float16
                self.scaler = torch.amp.GradScaler("cuda")
        self.step = 0

    # ---------------------------------------------------------------- one step
    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float] | None:
        box = self.black_box
        classes, is_real = sample_selectors(
            labels, box.num_classes, self.cfg.fake_prob, self.selector_gen
        )
        x, labels = x.to(self.device, non_blocking=True), labels.to(self.device)
        classes, is_real = classes.to(self.device), is_real.to(self.device)
        self.model.train()
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            out = self.model(x, classes)
            terms: LossTerms = self.objective(x, out, classes, labels, is_real)
        if not torch.isfinite(terms.total):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(terms.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            terms.total.backward()
            self.optimizer.step()
        self.scheduler.step()
        area = out.mask.detach().flatten(1).mean(1)
        metrics = terms.as_floats()
        metrics["mask_area_real"] = float(area[is_real].mean()) if is_real.any() else float("nan")
        metrics["mask_area_fake"] = (
            float(area[~is_real].mean()) if (~is_real).any() else float("nan")
        )
        return metrics

    # ---------------------------------------------------------------- the loop
    def fit(
        self, on_step: Callable[[int, int, dict[str, float]], None] | None = None
    ) -> TrainResult:
        cfg = self.cfg
        log_path = self.out / "train_log.jsonl"
        history: list[dict[str, float]] = []
        t0 = time.time()
        bad_in_row = 0
        interrupted = False
        epoch = 0
        with log_path.open("w") as log:
            try:
                while self.step < self.total_steps:
                    for x, y in self.loader:
                        metrics = self.train_step(x, y)
                        if metrics is None:
                            bad_in_row += 1
                            warnings.warn(
                                f"step {self.step}: non-finite loss, step skipped", stacklevel=1
                            )
                            if bad_in_row >= cfg.max_bad_steps:
                                raise RtsalError(
                                    f"training diverged: {bad_in_row} non-finite losses in a row "
                                    f"at step {self.step}; lower --lr"
                                )
                            continue
                        bad_in_row = 0
                        self.step += 1
                        metrics.update(
                            step=self.step,
                            epoch=epoch,
                            lr=self.scheduler.get_last_lr()[0],
                            seconds=round(time.time() - t0, 3),
                        )
                        history.append(metrics)
                        log.write(json.dumps(metrics) + "\n")
                        log.flush()
                        if on_step:
                            on_step(self.step, self.total_steps, metrics)
                        if self.step >= self.total_steps:
                            break
                    epoch += 1
            except KeyboardInterrupt:
                interrupted = True
        seconds = time.time() - t0
        final = summarise(history[-50:])
        save_masker(
            self.out,
            self.model,
            self.black_box,
            training={
                **cfg.to_dict(),
                "steps_done": self.step,
                "seconds": round(seconds, 1),
                "interrupted": interrupted,
                "train_images": len(self.dataset),
            },
            final_losses=final,
            objective={"preset": cfg.preset, **self.objective_config.to_dict()},
            extra={"black_box_options": self.black_box_options()},
        )
        return TrainResult(self.out, self.step, seconds, final, interrupted, history)

    def black_box_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.cfg.weights:
            opts["weights"] = str(Path(self.cfg.weights).expanduser().resolve())
        if not self.cfg.pretrained:
            opts["pretrained"] = False
        return opts


def summarise(history: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each logged quantity over the given steps (NaNs ignored)."""
    keys = ("total", *TERMS, "embed", "mask_area_real", "mask_area_fake")
    out = {}
    for k in keys:
        vals = [h[k] for h in history if k in h and h[k] == h[k]]
        if vals:
            out[k] = round(sum(vals) / len(vals), 6)
    return out


def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    return Trainer(cfg).fit(on_step)
