"""Training a masking model against a black box (Section 4 of the paper).

Defaults < preset < explicit options: ``TrainConfig`` holds the options, ``objective_preset``
the loss weights. The black box and a pretrained encoder stay frozen; 30 % of the samples get a
fake class selector, for which the mask should vanish.

Runs survive: every ``checkpoint_every`` steps (and on Ctrl-C / SIGTERM) the full training state
is written atomically to ``OUT/training_state.safetensors`` together with a usable checkpoint;
``rtsal train --resume OUT`` continues exactly where it stopped. Under ``torchrun`` the processes
share each global batch (see ``rtsal.distributed``).
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function

from rtsal import _rng
from rtsal.blackbox import BlackBox, create_black_box
from rtsal.checkpoint import (
    atomic_write_bytes,
    prepare_out_dir,
    remove_stale_temporaries,
    save_masker,
)
from rtsal.classes import ClassResolver
from rtsal.data import EpochBatchSampler, open_dataset
from rtsal.distributed import any_across, barrier, init_distributed, mean_across
from rtsal.errors import CheckpointError, RtsalError
from rtsal.model import MaskerConfig, MaskingModel, build_masking_model
from rtsal.objective import LossTerms, ObjectiveConfig, SaliencyObjective, objective_preset

TERMS = ("tv", "area", "preserve", "destroy")
STATE_NAME = "training_state.safetensors"
STATE_FORMAT = "rtsal-training-state"


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
    norm: str = "batch"  # batch or group (group: identical results on any number of processes)
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
    batch_size: int = 32  # the global batch, shared by all processes
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
    channels_last: bool = True  # NHWC layout for the networks and batches (faster on CPUs)
    max_bad_steps: int = 5
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: only at the end)
    init: str | None = None  # start from this masking-model checkpoint's weights (fine-tuning)
    labels: str = "folder"  # folder (class folders / synset names) or blackbox (its top-1)
    min_confidence: float = 0.3  # --labels blackbox: keep photos whose top-1 is at least this
    exclude: tuple[str, ...] = ()  # evaluation folders: their photos (and look-alikes) left out
    dedup: bool = True  # drop repeated photos (same difference hash)
    crop_scale: float = 0.35  # random resized crops keep at least this share of the photo
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter (0: off)
    mosaic: float = 0.0  # share of samples that are mosaics of 2 or 4 photos of other classes
    mosaic_tiles: tuple[int, ...] = (2, 4)
    val_every: int = 0  # steps between validations on held-out photos (needs --holdout)
    val_photos: int = 200  # held-out photos (and as many mosaics) used for validation
    keep_validated: bool = False  # keep the model of every validation in OUT/validated/step-N

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
        for k in ("upsampler_channels", "small_widths", "exclude", "mosaic_tiles"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


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


class Trainer:
    """Owns the model, the objective and the loop; ``fit()`` trains and writes the checkpoint."""

    def __init__(
        self,
        cfg: TrainConfig,
        black_box: BlackBox | None = None,
        resume: dict[str, Any] | None = None,
        index_progress: Callable[[int, int], None] | None = None,
    ):
        self.cfg = cfg
        if not 0 <= cfg.fake_prob < 1:
            raise RtsalError("--fake-prob must be in [0, 1)")
        if cfg.batch_size < 1:
            raise RtsalError("--batch-size must be at least 1")
        if not 0 <= cfg.mosaic <= 1:
            raise RtsalError("--mosaic must be in [0, 1]")
        if not cfg.mosaic_tiles or any(t not in (2, 4) for t in cfg.mosaic_tiles):
            raise RtsalError("--mosaic-tiles takes 2, 4 or 2,4")
        if cfg.val_every and cfg.holdout <= 0:
            raise RtsalError("--val-every needs held-out photos: give --holdout")
        if cfg.schedule not in ("cosine", "step", "constant"):
            raise RtsalError(f"--schedule must be cosine, step or constant, not {cfg.schedule!r}")
        self.dist, self.device = init_distributed(cfg.device)
        if cfg.batch_size % self.dist.world_size:
            raise RtsalError(
                f"--batch-size {cfg.batch_size} (the global batch) must be divisible by the "
                f"{self.dist.world_size} processes"
            )
        self.local_batch = cfg.batch_size // self.dist.world_size
        self.out = Path(cfg.out)
        if self.dist.is_main:
            self.out = prepare_out_dir(cfg.out)
            remove_stale_temporaries(self.out)
        barrier(self.dist)
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
            labels=cfg.labels,
            black_box=box,
            min_confidence=cfg.min_confidence,
            exclude=cfg.exclude,
            dedup=cfg.dedup,
            crop_scale=cfg.crop_scale,
            color_jitter=cfg.color_jitter,
            progress=index_progress if self.dist.is_main else None,
        )
        self.selection = getattr(self.dataset, "selection", None)
        if cfg.labels != "folder" and self.selection is None:
            raise RtsalError("--labels blackbox applies to image folders")
        ds_names = getattr(self.dataset, "class_names", None)
        if ds_names is not None and len(ds_names) != box.num_classes:
            raise RtsalError(
                f"data set {cfg.data!r} has {len(ds_names)} classes but black box "
                f"{box.name!r} has {box.num_classes}"
            )
        self.holdout: list[Path] = []
        self.held_out_samples: list[tuple[Path, int]] = []
        if cfg.holdout > 0:
            if not hasattr(self.dataset, "samples"):
                raise RtsalError("--holdout applies to image folders; named sets have a test split")
            self.dataset, self.held_out_samples = split_holdout(self.dataset, cfg.holdout, cfg.seed)
            self.holdout = [path for path, _ in self.held_out_samples]
            if self.dist.is_main:
                (self.out / "holdout.txt").write_text("".join(f"{p}\n" for p in self.holdout))
                (self.out / "holdout-labels.tsv").write_text(
                    "".join(f"{p}\t{label}\n" for p, label in self.held_out_samples)
                )
        self.validator = None
        self.validated_at = -1
        if cfg.val_every and self.dist.is_main:
            from rtsal.validation import Validator

            self.validator = Validator(
                self.held_out_samples, box, size, photos=cfg.val_photos, mosaics=cfg.val_photos
            )
        if cfg.mosaic > 0:
            if not hasattr(self.dataset, "load"):
                raise RtsalError("--mosaic applies to image folders")
            from rtsal.mosaic import MosaicDataset

            self.dataset = MosaicDataset(self.dataset, cfg.mosaic, cfg.mosaic_tiles)
        if len(self.dataset) < cfg.batch_size:
            raise RtsalError(
                f"{len(self.dataset)} training images are fewer than one batch of "
                f"{cfg.batch_size}; lower --batch-size"
            )
        self.model_config = masker_config_for(cfg, box)
        self.model: MaskingModel = build_masking_model(self.model_config, box)
        if cfg.init and resume is None:
            self._init_from(cfg.init)
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
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.black_box.to(memory_format=self.memory_format)
        self.objective = SaliencyObjective(self.objective_config, self.black_box)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = EpochBatchSampler(
            len(self.dataset),
            self.local_batch,
            seed=cfg.seed,
            epoch=0,
            world_size=self.dist.world_size,
        ).num_batches()
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
        self.step = 0
        self.epoch = 0
        self.position = 0  # batches of the current epoch already trained on
        self.seconds_before = 0.0  # wall time of the runs this one resumes
        if resume is not None:
            self._load_state(resume)
        self.train_module: torch.nn.Module = self.model
        if self.dist.enabled:
            self.train_module = self._wrap_ddp()

    def _init_from(self, path: str) -> None:
        """Start from a trained masking model of the same architecture and black box."""
        from rtsal.checkpoint import MASKER_FORMAT, check_black_box, read_checkpoint

        sd, meta, where = read_checkpoint(path, expected_format=MASKER_FORMAT)
        check_black_box(meta, self.black_box, where)
        theirs = MaskerConfig.from_dict(meta.get("model", {}))
        if theirs.to_dict() | {"embedding_init": ""} != self.model_config.to_dict() | {
            "embedding_init": ""
        }:
            raise CheckpointError(f"{where}: --init needs the same model options as this run")
        self.model.load_state_dict(sd, strict=False)

    # ---------------------------------------------------------------- distributed
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
        box = self.black_box
        n = labels.shape[0]
        classes, is_real = sample_selectors(
            labels,
            box.num_classes,
            self.cfg.fake_prob,
            generators=self._generators(_rng.SELECTOR, n),
            present=present,
        )
        gens = (self._generators(_rng.REMOVAL_KEEP, n), self._generators(_rng.REMOVAL_DROP, n))
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels = labels.to(self.device)
        classes, is_real = classes.to(self.device), is_real.to(self.device)
        self.model.train()
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            with record_function("rtsal: masking model"):
                out = self.train_module(x, classes)
            with record_function("rtsal: objective"):
                terms: LossTerms = self.objective(x, out, classes, labels, is_real, gens)
        finite = bool(torch.isfinite(terms.total))
        if any_across(self.dist, not finite) is not False:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            with record_function("rtsal: backward"):
                self.scaler.scale(terms.total).backward()
            with record_function("rtsal: optimizer"):
                self.scaler.step(self.optimizer)
                self.scaler.update()
        else:
            with record_function("rtsal: backward"):
                terms.total.backward()
            with record_function("rtsal: optimizer"):
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

    def fit(
        self, on_step: Callable[[int, int, dict[str, float]], None] | None = None
    ) -> TrainResult:
        cfg = self.cfg
        main = self.dist.is_main
        log_path = self.out / "train_log.jsonl"
        history = self._read_log(log_path) if self.step else []
        t0 = time.time()
        bad_in_row = 0
        interrupted = False
        log = log_path.open("w") if main else None
        if log is not None:
            log.writelines(json.dumps(h) + "\n" for h in history)
            log.flush()
        if cfg.val_every and self.step == 0:  # where the run starts (an --init model, say)
            self.validate(history, 0.0)
        try:
            with _StopRequest() as stop:
                while self.step < self.total_steps and not interrupted:
                    for batch in self._loader(self.epoch, self.position):
                        metrics = self.train_step(*batch)
                        self.position += 1
                        if metrics is None:
                            bad_in_row += 1
                            if main:
                                warnings.warn(
                                    f"step {self.step + 1}: non-finite loss, skipped", stacklevel=1
                                )
                            if bad_in_row >= cfg.max_bad_steps:
                                raise RtsalError(
                                    f"training diverged: {bad_in_row} non-finite losses in a "
                                    f"row at step {self.step + 1}; lower --lr"
                                )
                        else:
                            bad_in_row = 0
                            self.step += 1
                            metrics.update(
                                step=self.step,
                                epoch=self.epoch,
                                lr=self.scheduler.get_last_lr()[0],
                                seconds=round(self.seconds_before + time.time() - t0, 3),
                            )
                            history.append(metrics)
                            if log is not None:
                                log.write(json.dumps(metrics) + "\n")
                                log.flush()
                            if on_step and main:
                                on_step(self.step, self.total_steps, metrics)
                        if any_across(self.dist, stop.requested):
                            interrupted = True
                            break
                        if self.step >= self.total_steps:
                            break
                        if metrics is not None and cfg.val_every and self.step % cfg.val_every == 0:
                            self.validate(history, self.seconds_before + time.time() - t0)
                        if (
                            cfg.checkpoint_every
                            and self.step % cfg.checkpoint_every == 0
                            and metrics is not None
                        ):
                            self.save(history, self.seconds_before + time.time() - t0)
                    else:
                        self.epoch += 1
                        self.position = 0
        finally:
            if log is not None:
                log.close()
        seconds = self.seconds_before + time.time() - t0
        if cfg.val_every and not interrupted and self.validated_at != self.step:
            self.validate(history, seconds)
        self.save(history, seconds, interrupted=interrupted, final=not interrupted)
        if self.dist.enabled and os.environ.get("RTSAL_SAVE_EVERY_RANK"):
            # diagnostic: every process writes its replica, to check they agree
            from safetensors.torch import save_file

            sd = {
                k: v.detach().cpu().contiguous()
                for k, v in self.model.trainable_state_dict().items()
            }
            save_file(sd, str(self.out / f"replica-rank{self.dist.rank}.safetensors"))
        return TrainResult(
            self.out, self.step, seconds, summarise(history[-50:]), interrupted, history
        )

    # ---------------------------------------------------------------- validation
    def validate(self, history: list[dict[str, float]], seconds: float) -> dict[str, float]:
        """Validate on the held-out photos (OUT/val_log.jsonl); the best model by localisation
        so far is written to OUT/best."""
        result: dict[str, float] = {}
        self.validated_at = self.step
        if self.validator is not None:
            result = {"step": self.step, **self.validator(self.model)}
            result["seconds"] = round(seconds, 1)
            log = self.out / "val_log.jsonl"
            previous = (
                [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                if log.is_file()
                else []
            )
            previous = [r for r in previous if r["step"] < self.step]
            best = max((r["score"] for r in previous), default=-1.0)
            atomic_write_bytes(
                log, "".join(json.dumps(r) + "\n" for r in [*previous, result]).encode()
            )
            if result["score"] > best:
                self._save_checkpoint(self.out / "best", history, seconds, validation=result)
            if self.cfg.keep_validated:
                where = self.out / "validated" / f"step-{self.step}"
                self._save_checkpoint(where, history, seconds, validation=result)
        barrier(self.dist)
        return result

    # ---------------------------------------------------------------- checkpoints
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

    def save(
        self, history: list[dict[str, float]], seconds: float, *, interrupted=False, final=False
    ) -> None:
        """The usable checkpoint and the resumable state, each written atomically (rank 0)."""
        if self.dist.is_main:
            self._save_checkpoint(self.out, history, seconds, interrupted=interrupted)
            self._save_state(seconds)
        barrier(self.dist)

    def _save_state(self, seconds: float) -> None:
        from safetensors.torch import save

        tensors = {
            f"model.{k}": v.detach().cpu().contiguous()
            for k, v in self.model.trainable_state_dict().items()
        }
        opt = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for i, st in opt["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(i), {})[k] = v
        meta = {
            "format": STATE_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "seconds": seconds,
            "config": self.cfg.to_dict(),
            "optimizer_groups": [
                {k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]
            ],
            "optimizer_scalars": scalars,
            "scheduler": {
                k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"
            },
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        data = save(tensors, metadata={"state": json.dumps(meta)})
        atomic_write_bytes(self.out / STATE_NAME, data)

    def _load_state(self, state: dict[str, Any]) -> None:
        meta, tensors = state["meta"], state["tensors"]
        model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        expected = self.model.trainable_state_dict()
        if set(model_sd) != set(expected):
            raise CheckpointError(f"{self.out}: training state does not match the model")
        self.model.load_state_dict(model_sd, strict=False)
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                per_param.setdefault(int(i), {})[name] = v
        for i, sc in meta["optimizer_scalars"].items():
            per_param.setdefault(int(i), {}).update(sc)
        groups = self.optimizer.state_dict()["param_groups"]
        for g, saved in zip(groups, meta["optimizer_groups"], strict=True):
            g.update(saved)
        self.optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **meta["scheduler"]})
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.epoch, self.position = meta["step"], meta["epoch"], meta["position"]
        self.seconds_before = float(meta.get("seconds", 0.0))

    def _read_log(self, path: Path) -> list[dict[str, float]]:
        """The log up to the resumed step (steps after the last checkpoint are dropped)."""
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if row.get("step", 0) <= self.step:
                rows.append(row)
        return rows

    def black_box_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.cfg.weights:
            opts["weights"] = str(Path(self.cfg.weights).expanduser().resolve())
        if not self.cfg.pretrained:
            opts["pretrained"] = False
        return opts


def read_training_state(out: str | Path) -> dict[str, Any]:
    """The resumable state in ``out`` (written by :meth:`Trainer.save`)."""
    from safetensors import SafetensorError, safe_open

    path = Path(out).expanduser() / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {Path(out)}: no {STATE_NAME}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("state", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable training state ({exc})") from None
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an rtsal training state")
    return {"meta": meta, "tensors": tensors}


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
