"""Training a masking model against a black box (Section 4 of the paper).

Defaults < preset < explicit options: ``TrainConfig`` holds the options, ``objective_preset``
the loss weights. The black box and a pretrained encoder stay frozen; 30 % of the samples get a
fake class selector, for which the mask should vanish.

Runs survive: every ``checkpoint_every`` steps (and on Ctrl-C / SIGTERM) the full training state
is written atomically to ``OUT/training_state.safetensors`` together with a usable checkpoint;
``rtsal train --resume OUT`` continues exactly where it stopped. Under ``torchrun`` the processes
share each global batch (see ``rtsal.engine.distributed``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function

from rtsal.data.folders import EpochBatchSampler, open_dataset
from rtsal.engine import _rng
from rtsal.engine.checkpoint import save_masker
from rtsal.engine.distributed import any_across, barrier, init_distributed, mean_across
from rtsal.engine.model import (
    MaskerConfig,
    MaskingModel,
    build_masking_model,
    has_linear_classifier,
)
from rtsal.engine.objective import LossTerms, ObjectiveConfig, SaliencyObjective, objective_preset
from rtsal.engine.training_state import (
    STATE_FORMAT,
    STATE_NAME,
    TrainingLog,
    load_training_state,
    read_training_state,
    save_training_state,
)
from rtsal.errors import CheckpointError, RtsalError
from rtsal.files import atomic_write_bytes, prepare_out_dir, remove_temporaries
from rtsal.registry.blackbox import BlackBox, create_black_box
from rtsal.registry.classes import ClassResolver
from rtsal.training.config import RECIPE_FALLBACK, TrainConfig, read_config_file

TERMS = ("tv", "area", "preserve", "destroy")
# --preset auto is "photos" for a pretrained classifier of photos (input at least this many
# pixels a side) and "paper" for small images (CIFAR-10, Fashion-MNIST) and the small encoder
PHOTO_SIZE = 96
__all__ = [
    "STATE_FORMAT",
    "STATE_NAME",
    "TrainConfig",
    "Trainer",
    "read_config_file",
    "read_training_state",
    "train",
]


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    final_losses: dict[str, float]
    interrupted: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def masker_encoder(cfg: TrainConfig, box: BlackBox) -> str:
    """The encoder a run uses: ``auto`` is the black box itself when it can share features."""
    if cfg.encoder == "auto":
        return "blackbox" if box.shares_features else "small"
    return cfg.encoder


def masker_config_for(cfg: TrainConfig, box: BlackBox) -> MaskerConfig:
    encoder = masker_encoder(cfg, box)
    embedding = cfg.embedding
    if embedding == "auto":
        linear = encoder == "blackbox" and has_linear_classifier(box)
        embedding = "classifier-init" if linear else "learned"
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
        norm=cfg.norm,
    )


def sample_selectors(
    labels: torch.Tensor,
    num_classes: int,
    fake_prob: float,
    generator: torch.Generator | None = None,
    generators: list[torch.Generator] | None = None,
    present: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class selectors: the true label, or (with ``fake_prob``) a uniformly drawn other class.

    Draws come from one ``generator`` for the batch or from ``generators``, one per sample.
    ``present`` (B, T), padded with -1, lists every class shown in a sample (a mosaic's tiles):
    a fake selector is never one of them.
    """
    B = labels.shape[0]
    K = max(num_classes, 2)
    if generators is None:
        u = torch.rand(B, generator=generator)
        shift = torch.randint(1, K, (B,), generator=generator)
    else:
        u = torch.stack([torch.rand((), generator=g) for g in generators])
        shift = torch.stack([torch.randint(1, K, (), generator=g) for g in generators])
    fake = u < fake_prob
    if present is not None and num_classes > present.shape[1]:
        for _ in range(present.shape[1]):  # step past the classes shown (at most T of them)
            shown = ((labels + shift) % num_classes)[:, None].eq(present).any(1)
            if not bool(shown.any()):
                break
            shift = torch.where(shown, shift + 1, shift)
    classes = torch.where(fake, (labels + shift) % num_classes, labels)
    return classes, ~fake


def lr_factor(cfg: TrainConfig, total: int, step: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.schedule == "step":  # x0.1 at 2/3 of training
        return 0.1 if t >= 2 / 3 else 1.0
    return 1.0


def split_holdout(dataset, fraction: float, seed: int):
    """Hold out a seeded fraction of an image-file data set; returns (train, held-out samples)."""
    n = len(dataset.samples)
    k = int(round(n * fraction))
    g = torch.Generator().manual_seed(seed + 7919)
    perm = torch.randperm(n, generator=g).tolist()
    held = sorted(perm[:k])
    held_set = set(held)
    held_samples = [dataset.samples[i] for i in held]
    dataset.samples = [s for i, s in enumerate(dataset.samples) if i not in held_set]
    return dataset, held_samples


class _StopRequest:
    """Ctrl-C / SIGTERM set a flag that the loop honours at the next step boundary; a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def check_options(cfg: TrainConfig) -> None:
    """Refuse option values that cannot work, before any data or model is loaded (options the
    preset fills in later are None here and checked again once filled)."""
    from rtsal.errors import UnknownNameError
    from rtsal.training.config import LABEL_CHOICES, PRESET_NAMES

    if cfg.preset not in PRESET_NAMES:
        raise UnknownNameError("preset", cfg.preset, PRESET_NAMES)
    if cfg.labels not in LABEL_CHOICES:
        raise RtsalError(f"--labels must be one of {', '.join(LABEL_CHOICES)}, not {cfg.labels!r}")
    # steps / epochs: None when not given (then one epoch); given, they must train something
    if cfg.steps is not None and cfg.steps < 1:
        raise RtsalError(f"--steps must be at least 1, not {cfg.steps}")
    if cfg.epochs is not None and not 0 < cfg.epochs < math.inf:
        raise RtsalError(f"--epochs must be a positive number, not {cfg.epochs}")
    if cfg.lr is not None and not 0 < cfg.lr < math.inf:
        raise RtsalError(f"--lr must be a positive number, not {cfg.lr}")
    if not 0 <= cfg.holdout < 1:
        raise RtsalError(f"--holdout must be in [0, 1), not {cfg.holdout}")
    if cfg.val_every and cfg.holdout > 0 and cfg.val_photos < 1:
        raise RtsalError(
            f"--val-photos must be at least 1 to validate on held-out photos, not {cfg.val_photos}"
        )
    if not 0 <= cfg.fake_prob < 1:
        raise RtsalError("--fake-prob must be in [0, 1)")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise RtsalError("--batch-size must be at least 1")
    if cfg.destroy_dilation is not None and cfg.destroy_dilation < 0:
        raise RtsalError(f"--destroy-dilation must be 0 or more pixels, not {cfg.destroy_dilation}")
    if cfg.keep_blur_prob is not None and not 0 <= cfg.keep_blur_prob <= 1:
        raise RtsalError(f"--keep-blur-prob must be in [0, 1], not {cfg.keep_blur_prob}")
    if cfg.area_power is not None and not cfg.area_power > 0:
        raise RtsalError(f"--area-power must be a positive number, not {cfg.area_power}")
    if cfg.mosaic is not None and not 0 <= cfg.mosaic <= 1:
        raise RtsalError("--mosaic must be in [0, 1]")
    if not cfg.mosaic_tiles or any(t not in (2, 4) for t in cfg.mosaic_tiles):
        raise RtsalError("--mosaic-tiles takes 2, 4 or 2,4")
    if cfg.val_every and cfg.holdout <= 0 and not cfg.val_boxes:
        raise RtsalError("--val-every needs photos to validate on: give --holdout or --val-boxes")
    if cfg.val_boxes and not cfg.val_every:
        raise RtsalError("--val-boxes is used every --val-every steps: give --val-every")
    if cfg.schedule not in ("cosine", "step", "constant"):
        raise RtsalError(f"--schedule must be cosine, step or constant, not {cfg.schedule!r}")


def _validation_folders(cfg: TrainConfig) -> list[str]:
    """The folder of --val-boxes: its photos, and look-alikes of them, stay out of training."""
    if not cfg.val_boxes:
        return []
    p = Path(cfg.val_boxes).expanduser()
    return [str(p if p.is_dir() else p.parent)]


class Trainer:
    """A training run: built from a config (data, model, objective, optimizer), then ``fit()``
    runs the loop and writes the checkpoint. Read top to bottom: build, one step, the loop,
    validation, saving."""

    def __init__(
        self,
        cfg: TrainConfig,
        black_box: BlackBox | None = None,
        resume: dict[str, Any] | None = None,
        index_progress: Callable[[int, int], None] | None = None,
    ):
        check_options(cfg)
        self.dist, self.device = init_distributed(cfg.device)
        self.out = Path(cfg.out)
        if self.dist.is_main:
            self.out = prepare_out_dir(cfg.out)
            remove_temporaries(self.out)
        barrier(self.dist)
        torch.manual_seed(cfg.seed)
        self.black_box = black_box or create_black_box(
            cfg.blackbox, pretrained=cfg.pretrained, weights=cfg.weights
        )
        self.preset_filled = {k for k in RECIPE_FALLBACK if getattr(cfg, k) is None}
        photos = masker_encoder(cfg, self.black_box) != "small" and (
            min(self.black_box.input_size) >= PHOTO_SIZE
        )
        cfg = cfg.resolved(photos=photos)
        check_options(cfg)
        self.cfg = cfg
        if cfg.batch_size % self.dist.world_size:
            raise RtsalError(
                f"--batch-size {cfg.batch_size} (the global batch) must be divisible by the "
                f"{self.dist.world_size} processes"
            )
        self.local_batch = cfg.batch_size // self.dist.world_size
        self._open_data(index_progress)
        self._build_model()
        self._build_optimizer()
        self.step = 0
        self.epoch = 0
        self.position = 0  # batches of the current epoch already trained on
        self.seconds_before = 0.0  # wall time of the runs this one resumes
        self.validated_at = -1
        if resume is not None:
            counters = load_training_state(
                resume, self.model, self.optimizer, self.scheduler, self.scaler, self.out
            )
            self.step, self.epoch, self.position = (
                counters[k] for k in ("step", "epoch", "position")
            )
            self.seconds_before = counters["seconds"]
        self.train_module: torch.nn.Module = self.model
        if self.dist.enabled:
            self.train_module = self._wrap_ddp()

    # ---------------------------------------------------------------- building the run
    def _open_data(self, index_progress) -> None:
        """The training photos (evaluation photos and duplicates out), the held-out split,
        the validation sets and the mosaics."""
        cfg, box = self.cfg, self.black_box
        self.resolver = ClassResolver.for_black_box(box)
        self.size = (cfg.image_size, cfg.image_size) if cfg.image_size else box.input_size
        self.dataset = open_dataset(
            cfg.data,
            split="train",
            size=self.size,
            train=True,
            resolver=self.resolver,
            data_root=cfg.data_root,
            interpolation=box.interpolation,
            crop_pct=box.crop_pct,
            channels=box.in_channels,
            limit=cfg.limit,
            seed=cfg.seed,
            labels=cfg.labels,
            black_box=box,
            min_confidence=cfg.min_confidence,
            exclude=(*cfg.exclude, *_validation_folders(cfg)),
            dedup=cfg.dedup,
            crop_scale=cfg.crop_scale,
            color_jitter=cfg.color_jitter,
            progress=index_progress if self.dist.is_main else None,
        )
        self.selection = getattr(self.dataset, "selection", None)
        if cfg.labels == "blackbox" and self.selection is None:
            raise RtsalError("--labels blackbox applies to image folders")
        ds_names = getattr(self.dataset, "class_names", None)
        if ds_names is not None and len(ds_names) != box.num_classes:
            raise RtsalError(
                f"data set {cfg.data!r} has {len(ds_names)} classes but black box "
                f"{box.name!r} has {box.num_classes}"
            )
        self.held_out_samples: list[tuple[Path, int]] = []
        if cfg.holdout > 0:
            self._hold_out()
        if self.dist.is_main and hasattr(self.dataset, "samples"):
            self._write_training_classes()
        self.validator = None
        if cfg.val_every and self.dist.is_main:
            from rtsal.training.validation import Validator, read_box_photos

            box_photos = (
                read_box_photos(cfg.val_boxes, self.resolver, cfg.exclude) if cfg.val_boxes else ()
            )
            self.validator = Validator(
                self.held_out_samples,
                box,
                self.size,
                photos=cfg.val_photos,
                mosaics=cfg.val_photos,
                box_photos=box_photos,
            )
        if cfg.mosaic > 0 and not hasattr(self.dataset, "load"):
            if "mosaic" not in self.preset_filled:
                raise RtsalError("--mosaic applies to image folders")
            self.cfg = cfg = replace(cfg, mosaic=0.0)  # the preset's mosaics need photo files
        if cfg.mosaic > 0:
            from rtsal.data.mosaic import MosaicDataset

            self.dataset = MosaicDataset(self.dataset, cfg.mosaic, cfg.mosaic_tiles)
        if len(self.dataset) < cfg.batch_size:
            raise RtsalError(
                f"{len(self.dataset)} training images are fewer than one batch of "
                f"{cfg.batch_size}; lower --batch-size"
            )

    def _write_training_classes(self) -> None:
        """``OUT/train-classes.tsv``: each class the training photos show, with its count, so
        that evaluations can tell classes seen in training from unseen ones."""
        from collections import Counter

        counts = Counter(label for _, label in self.dataset.samples)
        names = self.black_box.class_names
        rows = [f"{c}\t{names[c]}\t{n}\n" for c, n in sorted(counts.items())]
        atomic_write_bytes(self.out / "train-classes.tsv", "".join(rows).encode())

    def _hold_out(self) -> None:
        if not hasattr(self.dataset, "samples"):
            raise RtsalError("--holdout applies to image folders; named sets have a test split")
        self.dataset, self.held_out_samples = split_holdout(
            self.dataset, self.cfg.holdout, self.cfg.seed
        )
        if self.dist.is_main:
            held = self.held_out_samples
            (self.out / "holdout.txt").write_text("".join(f"{p}\n" for p, _ in held))
            (self.out / "holdout-labels.tsv").write_text(
                "".join(f"{p}\t{label}\n" for p, label in held)
            )

    def _build_model(self) -> None:
        """The masking model (encoder frozen) and the objective, on the device."""
        cfg = self.cfg
        self.init_note = ""
        self.model_config = masker_config_for(cfg, self.black_box)
        self.model: MaskingModel = build_masking_model(self.model_config, self.black_box)
        if cfg.init:
            self._init_from(cfg.init)
        self.objective_config: ObjectiveConfig = objective_preset(
            cfg.preset,
            tv_weight=cfg.tv_weight,
            area_weight=cfg.area_weight,
            area_power=cfg.area_power,
            preserve_weight=cfg.preserve_weight,
            destroy_weight=cfg.destroy_weight,
            destroy_power=cfg.destroy_power,
            destroy_dilation=cfg.destroy_dilation,
            keep_blur_prob=cfg.keep_blur_prob,
            embed_weight=cfg.embed_weight,
        )
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for net in (self.model, self.black_box):
            net.to(self.device)
            net.to(memory_format=self.memory_format)
        self.objective = SaliencyObjective(self.objective_config, self.black_box)

    def _build_optimizer(self) -> None:
        """AdamW over the trainable parameters, the lr schedule and mixed precision."""
        cfg = self.cfg
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = EpochBatchSampler(
            len(self.dataset), self.local_batch, seed=cfg.seed, epoch=0,
            world_size=self.dist.world_size,
        ).num_batches()  # fmt: skip
        if cfg.steps is not None:
            self.total_steps = cfg.steps
        elif cfg.epochs is not None:
            self.total_steps = max(1, int(round(cfg.epochs * self.steps_per_epoch)))
        else:
            self.total_steps = self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(cfg, self.total_steps, s)
        )
        self.amp_dtype = None
        self.scaler = None
        if cfg.amp and self.device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                self.amp_dtype = torch.bfloat16
            else:
                self.amp_dtype = torch.float16
                self.scaler = torch.amp.GradScaler("cuda")

    def _init_from(self, path: str) -> None:
        """Start from a trained masking model. Trained for this black box with the same model
        options, all of it is loaded. Otherwise the tensors whose names and shapes fit are
        reused and the rest keep this run's initialisation, said in one line: for another
        black box (transfer) the decoder, with the class embedding from this black box's
        classifier; for this one with other decoder options (a cheaper decoder, say) the class
        embedding too."""
        from rtsal.engine.checkpoint import check_black_box
        from rtsal.engine.locate import open_checkpoint

        ckpt = open_checkpoint(path)
        meta, where = ckpt.meta, ckpt.folder
        try:
            check_black_box(meta, self.black_box, where)
            same_black_box = True
        except CheckpointError:
            same_black_box = False
        sd = ckpt.read_weights()
        ours = self.model.trainable_state_dict()
        if same_black_box:
            theirs = MaskerConfig.from_dict(meta.get("model", {})).to_dict()
            mine = self.model_config.to_dict()
            changed = [k for k in mine if k != "embedding_init" and theirs.get(k) != mine[k]]
            if not changed:
                self.model.load_state_dict(sd, strict=False)
                return
            if any(k in changed for k in ("encoder", "in_channels", "num_classes", "embedding")):
                raise CheckpointError(
                    f"{where}: --init needs the same encoder and classes as this run "
                    f"(differs: {', '.join(changed)})"
                )
            embedding = []  # the same classes: the class embedding is reused too
        else:
            embedding = [k for k in ours if k.startswith("filter.")]
        fits = {
            k: v
            for k, v in sd.items()
            if k in ours and k not in embedding and v.shape == ours[k].shape
        }
        self.model.load_state_dict(fits, strict=False)
        misfit = [k for k in ours if k not in fits and k not in embedding]
        count = sum(v.numel() for v in fits.values())
        total = sum(v.numel() for k, v in ours.items() if k not in embedding)
        if same_black_box:
            options = ", ".join(f"{k} {theirs.get(k)} -> {mine[k]}" for k in changed)
            self.init_note = (
                f"--init {path}: other model options ({options}); reused {len(fits)} of "
                f"{len(fits) + len(misfit)} tensors ({count / 1e6:.2f} M of {total / 1e6:.2f} M "
                "parameters)"
                + (
                    f"; re-initialised {len(misfit)} tensor{'s' * (len(misfit) > 1)} "
                    "not in it or of other shapes"
                    if misfit
                    else ""
                )
            )
            return
        other = meta.get("black_box", {}).get("name", "another black box")
        self.init_note = (
            f"--init {path}: trained for {other}, not {self.black_box.name}; reused {len(fits)} "
            f"of {len(fits) + len(misfit)} decoder tensors ({count / 1e6:.2f} M of "
            f"{total / 1e6:.2f} M parameters); re-initialised the class embedding"
            + (" (from this black box's classifier)" if embedding else "")
            + (f" and {len(misfit)} tensors whose shapes differ" if misfit else "")
        )

    def _wrap_ddp(self) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.model_config.norm == "batch":
            if self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            elif self.dist.is_main:
                warnings.warn(
                    "BatchNorm statistics are computed per process on CPU (no SyncBatchNorm); "
                    "use --norm group for results identical to a single process",
                    stacklevel=2,
                )
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids, broadcast_buffers=False)

    # ---------------------------------------------------------------- one step
    def _generators(self, stream: int, n: int) -> list[torch.Generator]:
        first = self.dist.rank * self.local_batch  # this process's place in the global batch
        return _rng.sample_generators(self.cfg.seed, self.step, stream, range(first, first + n))

    def train_step(
        self, x: torch.Tensor, labels: torch.Tensor, present: torch.Tensor | None = None
    ) -> dict[str, float] | None:
        """One optimizer step on a batch; None when the loss was not finite (skipped)."""
        n = labels.shape[0]
        classes, is_real = sample_selectors(
            labels,
            self.black_box.num_classes,
            self.cfg.fake_prob,
            generators=self._generators(_rng.SELECTOR, n),
            present=present,
        )
        gens = (self._generators(_rng.REMOVAL_KEEP, n), self._generators(_rng.REMOVAL_DROP, n))
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels, classes, is_real = (t.to(self.device) for t in (labels, classes, is_real))
        self.model.train()
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=amp):
            with record_function("rtsal: masking model"):
                out = self.train_module(x, classes)
            with record_function("rtsal: objective"):
                terms: LossTerms = self.objective(x, out, classes, labels, is_real, gens)
        self.optimizer.zero_grad(set_to_none=True)
        if any_across(self.dist, not bool(torch.isfinite(terms.total))) is not False:
            return None
        loss = self.scaler.scale(terms.total) if self.scaler is not None else terms.total
        with record_function("rtsal: backward"):
            loss.backward()
        with record_function("rtsal: optimizer"):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.scheduler.step()
        area = out.mask.detach().flatten(1).mean(1)
        metrics = terms.as_floats()
        metrics["mask_area_real"] = float(area[is_real].mean()) if is_real.any() else float("nan")
        metrics["mask_area_fake"] = (
            float(area[~is_real].mean()) if (~is_real).any() else float("nan")
        )
        return mean_across(self.dist, metrics)

    # ---------------------------------------------------------------- the loop
    def _loader(self, epoch: int, start: int):
        from torch.utils.data import DataLoader

        self.dataset.set_epoch(epoch, self.cfg.seed)
        sampler = EpochBatchSampler(
            len(self.dataset),
            self.local_batch,
            seed=self.cfg.seed,
            epoch=epoch,
            start=start,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.workers,
            collate_fn=getattr(self.dataset, "collate", None),
        )

    def _batches(self):
        """Batches forever, epoch after epoch, from where the run stands (resumable)."""
        while True:
            for batch in self._loader(self.epoch, self.position):
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def fit(
        self, on_step: Callable[[int, int, dict[str, float]], None] | None = None
    ) -> TrainResult:
        cfg, main = self.cfg, self.dist.is_main
        t0 = time.time()

        def elapsed() -> float:
            return self.seconds_before + time.time() - t0

        bad_in_row, interrupted = 0, False
        log = TrainingLog(self.out / "train_log.jsonl", self.step, enabled=main)
        if cfg.val_every and self.step == 0:  # where the run starts (an --init model, say)
            self.validate(log.rows, 0.0)
        with log, _StopRequest() as stop:
            batches = self._batches()
            while self.step < self.total_steps:
                metrics = self.train_step(*next(batches))
                if metrics is None:
                    bad_in_row = self._skip_bad_step(bad_in_row + 1)
                else:
                    bad_in_row = 0
                    self.step += 1
                    metrics.update(
                        step=self.step, epoch=self.epoch, lr=self.scheduler.get_last_lr()[0],
                        seconds=round(elapsed(), 3),
                    )  # fmt: skip
                    log.write(metrics)
                    if on_step and main:
                        on_step(self.step, self.total_steps, metrics)
                if any_across(self.dist, stop.requested):
                    interrupted = True
                    break
                if metrics is not None and self.step < self.total_steps:
                    self._periodic(log.rows, elapsed())
        if cfg.val_every and not interrupted and self.validated_at != self.step:
            self.validate(log.rows, elapsed())
        seconds = elapsed()
        self.save(log.rows, seconds, interrupted=interrupted)
        self._save_replica()
        return TrainResult(
            self.out, self.step, seconds, summarise(log.rows[-50:]), interrupted, log.rows
        )

    def _skip_bad_step(self, bad_in_row: int) -> int:
        if self.dist.is_main:
            warnings.warn(f"step {self.step + 1}: non-finite loss, skipped", stacklevel=2)
        if bad_in_row >= self.cfg.max_bad_steps:
            raise RtsalError(
                f"training diverged: {bad_in_row} non-finite losses in a row at step "
                f"{self.step + 1}; lower --lr"
            )
        return bad_in_row

    def _periodic(self, history: list[dict[str, float]], seconds: float) -> None:
        """Validation and resumable checkpoints every so many steps."""
        cfg = self.cfg
        if cfg.val_every and self.step % cfg.val_every == 0:
            self.validate(history, seconds)
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save(history, seconds)

    # ---------------------------------------------------------------- validation
    def validate(self, history: list[dict[str, float]], seconds: float) -> dict[str, float]:
        """Validate on the held-out photos (OUT/val_log.jsonl); the best model by localisation
        so far is written to OUT/best."""
        result: dict[str, float] = {}
        self.validated_at = self.step
        if self.validator is not None:
            result = {"step": self.step, **self.validator(self.model), "seconds": round(seconds, 1)}
            log = self.out / "val_log.jsonl"
            lines = log.read_text().splitlines() if log.is_file() else []
            rows = [json.loads(line) for line in lines if line.strip()]
            rows = [r for r in rows if r["step"] < self.step]
            best = max((r["score"] for r in rows), default=-1.0)
            atomic_write_bytes(log, "".join(json.dumps(r) + "\n" for r in [*rows, result]).encode())
            if result["score"] > best:
                self._save_checkpoint(self.out / "best", history, seconds, validation=result)
            if self.cfg.keep_validated:
                where = self.out / "validated" / f"step-{self.step}"
                self._save_checkpoint(where, history, seconds, validation=result)
        barrier(self.dist)
        return result

    # ---------------------------------------------------------------- saving
    def _save_checkpoint(
        self, out: Path, history, seconds: float, *, interrupted=False, validation=None
    ) -> None:
        save_masker(
            out,
            self.model,
            self.black_box,
            training={
                **self.cfg.to_dict(),
                "steps_done": self.step,
                "seconds": round(seconds, 1),
                "interrupted": interrupted,
                "train_images": len(self.dataset),
                "processes": self.dist.world_size,
                **({"validation": validation} if validation else {}),
            },
            final_losses=summarise(history[-50:]),
            objective={"preset": self.cfg.preset, **self.objective_config.to_dict()},
            extra={"black_box_options": self.black_box_options()},
        )

    def save(self, history: list[dict[str, float]], seconds: float, *, interrupted=False) -> None:
        """The usable checkpoint and the resumable state, each written atomically (rank 0)."""
        if self.dist.is_main:
            self._save_checkpoint(self.out, history, seconds, interrupted=interrupted)
            counters = {"step": self.step, "epoch": self.epoch, "position": self.position}
            save_training_state(
                self.out, self.model, self.optimizer, self.scheduler, self.scaler,
                {**counters, "seconds": seconds}, self.cfg.to_dict(),
            )  # fmt: skip
        barrier(self.dist)

    def _save_replica(self) -> None:
        """Diagnostic (RTSAL_SAVE_EVERY_RANK): every process writes its replica."""
        if not (self.dist.enabled and os.environ.get("RTSAL_SAVE_EVERY_RANK")):
            return
        from safetensors.torch import save_file

        sd = {
            k: v.detach().cpu().contiguous() for k, v in self.model.trainable_state_dict().items()
        }
        save_file(sd, str(self.out / f"replica-rank{self.dist.rank}.safetensors"))

    def black_box_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.cfg.weights:
            opts["weights"] = str(Path(self.cfg.weights).expanduser().resolve())
        if not self.cfg.pretrained:
            opts["pretrained"] = False
        return opts


def resume_trainer(out: str | Path, **overrides: Any) -> Trainer:
    """A trainer that continues the run in ``out``; ``overrides`` may extend ``steps``."""
    state = read_training_state(out)
    cfg = TrainConfig.from_dict({**state["meta"]["config"], "out": str(out), **overrides})
    return Trainer(cfg, resume=state)


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
