"""How good is a trained masking model? The quantities the paper reports for CIFAR-10.

On a labelled set: black-box accuracy; mean ``f_c(X)``, ``f_c(Phi(X, M))`` and
``f_c(Phi(X, 1 - M))`` for the true class c (Phi with the training preset's evidence removal,
seeded) and the same with plain multiplication (``X * M``, ``X * (1 - M)``, black fill); mean mask
area for the true class and for a fake class (class selectivity: fake masks should be near empty).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from rtsal.engine.objective import ObjectiveConfig
from rtsal.engine.removal import EvidenceRemoval, RemovalConfig


@dataclass
class MaskerReport:
    images: int
    accuracy: float
    p_image: float  # mean f_c(X)
    p_preserved: float  # mean f_c(Phi(X, M))
    p_destroyed: float  # mean f_c(Phi(X, 1 - M))
    p_image_times_mask: float  # mean f_c(X * M)
    p_image_times_inverse: float  # mean f_c(X * (1 - M))
    area_true: float  # mean mask area, true class
    area_fake: float  # mean mask area, a random other class
    area_true_median: float
    area_fake_median: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def training_removal(meta: dict[str, Any]) -> RemovalConfig:
    """The evidence removal Phi a checkpoint was trained with (its metadata's objective)."""
    objective = {k: v for k, v in meta.get("objective", {}).items() if k != "preset"}
    return ObjectiveConfig.from_dict(objective).removal


def _p(box, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return box.probabilities(x).gather(1, c[:, None]).squeeze(1)


@torch.inference_mode()
def evaluate_masker(
    model,
    black_box,
    loader,
    *,
    removal: RemovalConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress=None,
) -> MaskerReport:
    """Evaluate over ``loader``."""
    gen = torch.Generator().manual_seed(seed)
    phi = EvidenceRemoval(removal or RemovalConfig(), generator=gen)
    model.eval()
    cols: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("correct", "p", "keep", "drop", "keep_mul", "drop_mul", "area", "area_fake")
    }
    task = progress.add_task("evaluate", total=len(loader)) if progress else None
    K = black_box.num_classes
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        fake = (y + torch.randint(1, max(K, 2), y.shape, generator=gen).to(device)) % K
        logits = black_box(x)
        m = model(x, y).mask
        m_fake = model(x, fake).mask
        xc = x.cpu()
        keep = phi(xc, m.cpu()).to(device)
        drop = phi(xc, 1 - m.cpu()).to(device)
        cols["correct"].append((logits.argmax(1) == y).float().cpu())
        cols["p"].append(logits.softmax(1).gather(1, y[:, None]).squeeze(1).cpu())
        cols["keep"].append(_p(black_box, keep, y).cpu())
        cols["drop"].append(_p(black_box, drop, y).cpu())
        cols["keep_mul"].append(_p(black_box, x * m, y).cpu())
        cols["drop_mul"].append(_p(black_box, x * (1 - m), y).cpu())
        cols["area"].append(m.flatten(1).mean(1).cpu())
        cols["area_fake"].append(m_fake.flatten(1).mean(1).cpu())
        if progress:
            progress.update(task, advance=1)
    c = {k: torch.cat(v) for k, v in cols.items()}
    report = MaskerReport(
        images=int(c["p"].numel()),
        accuracy=float(c["correct"].mean()),
        p_image=float(c["p"].mean()),
        p_preserved=float(c["keep"].mean()),
        p_destroyed=float(c["drop"].mean()),
        p_image_times_mask=float(c["keep_mul"].mean()),
        p_image_times_inverse=float(c["drop_mul"].mean()),
        area_true=float(c["area"].mean()),
        area_fake=float(c["area_fake"].mean()),
        area_true_median=float(c["area"].median()),
        area_fake_median=float(c["area_fake"].median()),
    )
    return report
