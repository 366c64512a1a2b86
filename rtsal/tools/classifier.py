"""Training the reference classifiers (:mod:`rtsal.registry.classifiers`) on small data sets
(``rtsal classifier train``), and measuring any black box's accuracy
(``rtsal classifier evaluate``)."""

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
from rtsal.errors import RtsalError
from rtsal.registry.classifiers import CLASSIFIER_FORMAT, build_classifier, save_classifier

# peak learning rate by architecture: SGD for the ResNets, AdamW for the transformer
DEFAULT_LR = {"resnet9": 0.2, "resnet18": 0.2, "vit": 1e-3}


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
    from rtsal.data.arrays import DataSpec, named_class_names, split_folder
    from rtsal.data.folders import make_loader, open_dataset
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
