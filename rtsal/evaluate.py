"""How good is a trained masking model? The quantities the paper reports for CIFAR-10.

On a labelled set: black-box accuracy; mean ``f_c(X)``, ``f_c(Phi(X, M))`` and
``f_c(Phi(X, 1 - M))`` for the true class c (Phi with the training preset's evidence removal,
seeded) and the same with plain multiplication (``X * M``, ``X * (1 - M)``, black fill); mean mask
area for the true class and for a fake class (class selectivity: fake masks should be near empty).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rtsal.removal import EvidenceRemoval, RemovalConfig


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


@dataclass
class SaliencyReport:
    """Photo-level quality of a method: the saliency metric and what the masks keep."""

    method: str
    images: int
    saliency_metric: float  # mean s (lower is better)
    crop_area: float  # mean area fraction of the salient box
    crop_probability: float  # mean f_c(crop)
    p_image: float  # mean f_c(X)
    p_image_times_mask: float  # mean f_c(X * M)
    p_image_times_inverse: float  # mean f_c(X * (1 - M))
    keep_ratio: float  # mean f_c(X * M) / f_c(X)
    area_true: float  # mean mask area, true class
    area_absent: float  # mean mask area, a random class absent from the image
    seconds_per_image: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def evaluate_saliency(
    explainer, samples, *, method: str = "masker", seed: int = 0, progress=None, on_row=None
) -> SaliencyReport:
    """Saliency metric and mask statistics over ``samples`` = [(path, class index), ...]."""
    import time

    from rtsal.images import load_image, pil_to_tensor
    from rtsal.metrics import saliency_metric, salient_box

    gen = torch.Generator().manual_seed(seed)
    K = explainer.black_box.num_classes
    rows = []
    task = progress.add_task("metric", total=len(samples)) if progress else None
    seconds = 0.0
    for path, label in samples:
        im = load_image(path)
        absent = (label + int(torch.randint(1, max(K, 2), (1,), generator=gen))) % K
        t0 = time.perf_counter()
        (e,) = explainer.explain_batch([im], [label])[0]
        seconds += time.perf_counter() - t0
        (e_absent,) = explainer.explain_batch([im], [absent], with_probabilities=False)[0]
        box = salient_box(e.mask)
        s = saliency_metric(explainer.black_box, pil_to_tensor(im), box, label)
        row = {
            "input": str(path),
            "class_index": label,
            "score": s["score"],
            "crop_area": s["area"],
            "crop_probability": s["probability"],
            "p_image": e.p_image,
            "p_image_times_mask": e.p_preserved,
            "p_image_times_inverse": e.p_destroyed,
            "area_true": e.area,
            "area_absent": e_absent.area,
            "box": list(box),
        }
        rows.append(row)
        if on_row:
            on_row(row)
        if progress:
            progress.update(task, advance=1)

    def mean(k: str) -> float:
        return float(sum(r[k] for r in rows) / max(len(rows), 1))

    keep = [r["p_image_times_mask"] / max(r["p_image"], 1e-12) for r in rows]
    return SaliencyReport(
        method=method,
        images=len(rows),
        saliency_metric=mean("score"),
        crop_area=mean("crop_area"),
        crop_probability=mean("crop_probability"),
        p_image=mean("p_image"),
        p_image_times_mask=mean("p_image_times_mask"),
        p_image_times_inverse=mean("p_image_times_inverse"),
        keep_ratio=float(sum(keep) / max(len(keep), 1)),
        area_true=mean("area_true"),
        area_absent=mean("area_absent"),
        seconds_per_image=seconds / max(len(rows), 1),
    )
