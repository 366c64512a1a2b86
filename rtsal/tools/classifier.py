"""Reference classifiers for small data sets (CIFAR-10, Fashion-MNIST) and their training.

The paper's CIFAR-10 black box is not public; ``rtsal classifier train`` makes one. The result is
a self-describing checkpoint directory that ``--blackbox DIR`` accepts.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rtsal import __version__
from rtsal.errors import CheckpointError, RtsalError

CLASSIFIER_FORMAT = "rtsal-classifier"
ARCHS = ("resnet9", "resnet18", "vit")
# peak learning rate by architecture: SGD for the ResNets, AdamW for the transformer
DEFAULT_LR = {"resnet9": 0.2, "resnet18": 0.2, "vit": 1e-3}


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
    from rtsal.errors import UnknownNameError

    raise UnknownNameError("classifier architecture", arch, ARCHS)


# --------------------------------------------------------------------------- training


@dataclass
class ClassifierConfig:
    data: str = "cifar10"
    data_root: str | None = None
    arch: str = "resnet9"
    width: int = 32
    epochs: int = 10
    batch_size: int = 256
    lr: float | None = None  # peak of the one-cycle schedule; None: DEFAULT_LR of the arch
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    limit: int | None = None  # train on a seeded subset
    max_steps: int | None = None
    workers: int = 0
    device: str = "auto"
    out: str = "classifier"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClassifierResult:
    out: Path
    test_accuracy: float
    train_seconds: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)


def evaluate_accuracy(model: nn.Module, loader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    return correct / max(total, 1)


def train_classifier(cfg: ClassifierConfig, progress=None) -> ClassifierResult:
    from rtsal.data.folders import (
        DataSpec,
        make_loader,
        named_class_names,
        open_dataset,
        split_folder,
    )
    from rtsal.device import resolve_device
    from rtsal.files import prepare_out_dir
    from rtsal.registry.classes import ClassResolver

    named = DataSpec(cfg.data).named
    folder = split_folder(cfg.data) if named is None else None
    if named is None and folder is None:
        raise RtsalError(
            "rtsal classifier train takes --data cifar10, fashion-mnist or a folder with train/ "
            "and test/ class sub-folders"
        )
    out = prepare_out_dir(cfg.out)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if folder is not None:
        class_names, channels = folder
        resolver = ClassResolver(class_names)
        spec, dataset_name = cfg.data, str(Path(cfg.data).expanduser().resolve())
    else:
        class_names = named_class_names(named)
        channels = 1 if named == "fashion-mnist" else 3
        resolver, spec, dataset_name = None, named, named
    train_ds = open_dataset(
        spec,
        split="train",
        train=True,
        data_root=cfg.data_root,
        channels=channels,
        limit=cfg.limit,
        seed=cfg.seed,
        resolver=resolver,
    )
    test_ds = open_dataset(
        spec, split="test", data_root=cfg.data_root, channels=channels, resolver=resolver
    )
    size = tuple(train_ds.images.shape[-2:])
    model = build_classifier(cfg.arch, len(class_names), channels, cfg.width, size).to(device)
    model = model.to(memory_format=torch.channels_last)
    mean = train_ds.images.float().div(255).mean(dim=(0, 2, 3)).tolist()
    std = train_ds.images.float().div(255).std(dim=(0, 2, 3)).tolist()
    norm_mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    norm_std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    loader = make_loader(
        train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, drop_last=True
    )
    steps_per_epoch = len(loader)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.arch, 0.2)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.arch == "vit":  # transformers train with AdamW and a larger weight decay
        groups[0]["weight_decay"] = 0.05
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=lr,
        total_steps=total,
        pct_start=0.25,
        anneal_strategy="linear",
        div_factor=10,
        final_div_factor=100,
    )
    history: list[dict[str, float]] = []
    step, t0 = 0, time.time()
    task = progress.add_task("classifier", total=total) if progress else None
    model.train()
    while step < total:
        for x, y in loader:
            x = ((x.to(device) - norm_mean) / norm_std).contiguous(
                memory_format=torch.channels_last
            )
            loss = F.cross_entropy(model(x), y.to(device), label_smoothing=cfg.label_smoothing)
            if not math.isfinite(loss.item()):
                raise RtsalError(f"classifier training diverged at step {step} (lr {lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 20 == 0 or step == total:
                history.append(
                    {
                        "step": step,
                        "loss": loss.item(),
                        "lr": sched.get_last_lr()[0],
                        "seconds": time.time() - t0,
                    }
                )
            if progress:
                progress.update(task, advance=1, description=f"classifier loss {loss.item():.3f}")
            if step >= total:
                break
    seconds = time.time() - t0

    class _Normalised(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - norm_mean) / norm_std)

    test_loader = make_loader(test_ds, 500, shuffle=False)
    acc = evaluate_accuracy(_Normalised(model), test_loader, device)
    meta = {
        "format": CLASSIFIER_FORMAT,
        "rtsal_version": __version__,
        "arch": cfg.arch,
        "width": cfg.width,
        "num_classes": len(class_names),
        "in_channels": channels,
        "class_names": list(class_names),
        "mean": mean,
        "std": std,
        "input_size": list(size),
        "dataset": dataset_name,
        "test_accuracy": acc,
        "train_seconds": seconds,
        "steps": step,
        "training": cfg.to_dict(),
    }
    save_classifier(model, meta, out)
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    return ClassifierResult(out, acc, seconds, step, history)


def save_classifier(model: nn.Module, meta: dict[str, Any], out: Path) -> None:
    from rtsal.engine.checkpoint import write_checkpoint

    write_checkpoint(
        out,
        {k: v.detach().cpu() for k, v in model.state_dict().items()},
        meta,
        weights_name="classifier.safetensors",
    )


def load_classifier(path: str | Path):
    """A classifier checkpoint directory -> :class:`rtsal.BlackBox`."""
    from rtsal.engine.checkpoint import read_checkpoint
    from rtsal.registry.blackbox import BlackBox

    sd, meta, where = read_checkpoint(
        path, expected_format=CLASSIFIER_FORMAT, weights_name="classifier.safetensors"
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


@torch.inference_mode()
def black_box_accuracy(
    box, loader, device: torch.device | str = "cpu", progress=None
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of any black box on a labelled loader."""
    box.eval()
    top1 = top5 = total = 0
    task = progress.add_task("accuracy", total=len(loader)) if progress else None
    for x, y in loader:
        logits = box(x.to(device)).cpu()
        k = min(5, logits.shape[1])
        best = logits.topk(k, dim=1).indices
        top1 += int((best[:, 0] == y).sum())
        top5 += int((best == y[:, None]).any(dim=1).sum())
        total += len(y)
        if progress:
            progress.update(task, advance=1)
    return {"images": total, "top1": top1 / max(total, 1), "top5": top5 / max(total, 1)}
