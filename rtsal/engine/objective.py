"""The saliency objective, Eq. 4 of the paper, and the authors'-code variant, as named presets.

Paper (Eq. 4), for class c:
    L(M) = l1 * TV(M) + l2 * AV(M) - log f_c(Phi(X, M)) + l3 * f_c(Phi(X, 1 - M)) ** l4

Scale. Both classifier terms are minimised by M = 1 everywhere, so only AV and TV keep the mask
from filling the image. With AV the *mean* of the mask, the published l2 = 1e-3 is far too weak
(masks grow to cover the image for real and fake classes alike). The "paper" preset therefore
keeps the published l1, l3, l4 and uses TV as the mean squared neighbour difference at the mask's
own (stride-4) resolution and AV as the mean, with l2 rescaled to a working value.

Authors' code ("authors" preset): hinge (Carlini-Wagner style) preserve/destroy terms with margins
1 and 5 computed against the *true* label, area term ``mean((M + 5e-4) ** 0.3)`` weight 8, the
preserve term weight 0.3, smoothness 0.005 on the image-resolution mask (sum, per image, with a
border penalty 0.3), and their evidence removal (blur sigma 11, grey-ish colour +- 0.0825, noise).
For fake class selectors the paper applies only the area term; the authors' code instead asks
that the preserved image *loses* the true class and the destroyed image keeps it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from rtsal.engine.model import MaskerOutput
from rtsal.engine.removal import EvidenceRemoval, RemovalConfig
from rtsal.errors import UnknownNameError


@dataclass(frozen=True)
class ObjectiveConfig:
    form: str = "paper"  # "paper" (Eq. 4) or "authors" (hinge terms)
    tv_weight: float = 10.0  # l1
    area_weight: float = 6.0  # l2 (on the mean; see module docstring)
    preserve_weight: float = 1.0
    destroy_weight: float = 5.0  # l3
    destroy_power: float = 0.3  # l4
    area_power: float = 1.0
    preserve_margin: float = 1.0  # authors: hinge margins on logits
    destroy_margin: float = 5.0
    border_penalty: float = 0.0
    destroy_dilation: int = 0  # pixels: the destroy term removes a mask grown by this much
    # share of blurred alternatives in Phi(X, M), the preserved image (None: the removal's
    # blur_prob, the paper's 0.5 for both terms); 0 asks the kept region alone to carry the class
    keep_blur_prob: float | None = None
    embed_weight: float = 0.0  # optional speed-up term on max sigma(X^T C_s)
    removal: RemovalConfig = field(default_factory=RemovalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectiveConfig:
        d = dict(d)
        removal = RemovalConfig(**d.pop("removal", {}))
        return cls(removal=removal, **d)


PRESETS: dict[str, ObjectiveConfig] = {
    "paper": ObjectiveConfig(),
    # Eq. 4 with the weights that trained rtsal's shipped ImageNet maskers on real photos
    # (docs/training.md, "The photos preset"): smoother (TV 40) and tighter (area 9) masks, and a
    # destroy term twice the paper's (10), which makes a mask cover the whole object.
    # The preserved image's removed part is filled with colour and noise only (no blur), so the
    # kept region alone must carry the class, as it must when a user blacks out the rest
    # (f_c(X * M)): on EfficientNet-Lite2 from scratch that halved the share of held-out photos
    # whose mask is "the wrong way round" (docs/training.md).
    "photos": ObjectiveConfig(
        tv_weight=40.0, area_weight=9.0, destroy_weight=10.0, keep_blur_prob=0.0
    ),
    "authors": ObjectiveConfig(
        form="authors",
        tv_weight=0.005,
        area_weight=8.0,
        preserve_weight=0.3,
        destroy_weight=1.0,
        destroy_power=1.0,
        area_power=0.3,
        preserve_margin=1.0,
        destroy_margin=5.0,
        border_penalty=0.3,
        removal=RemovalConfig(
            blur_prob=0.5,
            blur_sigma=11.0,
            color_low=0.5 - 0.0825,  # their +-0.33 on a (-2, 2) image scale
            color_high=0.5 + 0.0825,
            noise_std=0.0275,
            preserved_noise_std=0.0075,
        ),
    ),
}


def objective_preset(name: str, **overrides: Any) -> ObjectiveConfig:
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------- terms


def total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Mean squared neighbour difference per image: (B, 1, h, w) -> (B,).

    ``mean_ij (M_ij - M_i+1,j)^2 + mean_ij (M_ij - M_i,j+1)^2``, i.e. the paper's TV divided
    by the number of neighbour pairs in each direction.
    """
    dv = (mask[:, :, 1:, :] - mask[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dh = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return dv + dh


def smoothness_sum(mask: torch.Tensor, border_penalty: float = 0.3) -> torch.Tensor:
    """Authors' smoothness: summed squared differences plus a border term, halved; (B,)."""
    dv = (mask[:, :, 1:, :] - mask[:, :, :-1, :]).pow(2).flatten(1).sum(1)
    dh = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).pow(2).flatten(1).sum(1)
    m2 = mask.pow(2)
    border = (
        m2[:, :, 0, :].flatten(1).sum(1)
        + m2[:, :, -1, :].flatten(1).sum(1)
        + m2[:, :, :, 0].flatten(1).sum(1)
        + m2[:, :, :, -1].flatten(1).sum(1)
    )
    return (dv + dh + border_penalty * border) / 2


def area(mask: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """AV: the mean of the mask per image, optionally of ``(M + 5e-4) ** power``; (B,)."""
    if power != 1.0:
        mask = (mask + 5e-4).pow(power)
    return mask.flatten(1).mean(1)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """The mask grown by ``radius`` pixels (a square max filter); the mask itself for 0."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def class_log_prob(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(dim=1).gather(1, classes[:, None]).squeeze(1)  # (B,)


def margin_to_best_other(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``logit_c - max_{k != c} logit_k``; (B,)."""
    this = logits.gather(1, classes[:, None]).squeeze(1)
    others = logits.scatter(1, classes[:, None], float("-inf"))
    return this - others.amax(dim=1)


class LossTerms(NamedTuple):
    total: torch.Tensor
    tv: torch.Tensor
    area: torch.Tensor
    preserve: torch.Tensor
    destroy: torch.Tensor
    embed: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self._asdict().items()}


class Terms(NamedTuple):
    """Per-sample loss terms, each (B,), already weighted."""

    tv: torch.Tensor
    area: torch.Tensor
    preserve: torch.Tensor
    destroy: torch.Tensor


def paper(
    cfg: ObjectiveConfig,
    out: MaskerOutput,
    classes: torch.Tensor,  # (B,) selectors
    is_real: torch.Tensor,  # (B,) bool
    keep: torch.Tensor,  # (R, K) logits of Phi(X, M) for the R real selectors, in order
    drop: torch.Tensor,  # (R, K) logits of Phi(X, 1 - M)
) -> Terms:
    """Eq. 4: l1 TV(M) + l2 AV(M) - log f_c(Phi(X, M)) + l3 f_c(Phi(X, 1 - M))^l4.

    Fake selectors get the area term only (the mask should vanish)."""
    zero = out.mask.new_zeros(classes.shape[0])
    idx = is_real.nonzero().squeeze(1)
    c = classes[idx]
    tv = cfg.tv_weight * total_variation(out.mask_lowres) * is_real
    av = cfg.area_weight * area(out.mask, cfg.area_power)
    preserve = zero.index_put((idx,), -cfg.preserve_weight * class_log_prob(keep, c))
    p_drop = class_log_prob(drop, c).exp()
    destroy = zero.index_put((idx,), cfg.destroy_weight * (p_drop + 1e-6).pow(cfg.destroy_power))
    return Terms(tv, av, preserve, destroy)


def authors(
    cfg: ObjectiveConfig,
    out: MaskerOutput,
    labels: torch.Tensor,  # (B,) true labels
    is_real: torch.Tensor,  # (B,) bool
    keep: torch.Tensor,  # (B, K) logits of Phi(X, M)
    drop: torch.Tensor,  # (B, K) logits of Phi(X, 1 - M)
) -> Terms:
    """The authors' code: hinge terms on logit margins against the true label.

    Real selectors: the preserved image is the class by a margin, the destroyed one is not.
    Fake selectors: the preserved image loses the true class, the destroyed one keeps it."""
    tv = cfg.tv_weight * smoothness_sum(out.mask, cfg.border_penalty)
    av = cfg.area_weight * area(out.mask, cfg.area_power)
    m_keep, m_drop = margin_to_best_other(keep, labels), margin_to_best_other(drop, labels)
    real = is_real.to(keep.dtype)
    preserve = cfg.preserve_weight * (
        real * F.relu(cfg.preserve_margin - m_keep) + (1 - real) * F.relu(1 + m_keep)
    )
    destroy = cfg.destroy_weight * (
        real * F.relu(cfg.destroy_margin + m_drop) + (1 - real) * F.relu(1 - m_drop)
    )
    return Terms(tv, av, preserve, destroy)


class SaliencyObjective:
    """Computes the loss terms for a batch of masks; calls the black box once per batch.

    ``classes`` are the class selectors given to the masking model, ``labels`` the true labels
    and ``is_real`` says which selectors are true (the others are fake, ~30 % in training).
    Every term is a mean over the whole batch (terms that do not apply to a sample count 0).
    The paper's form removes evidence only for real selectors; the authors' for all.
    """

    def __init__(self, config: ObjectiveConfig, black_box: torch.nn.Module, generator=None):
        if config.form not in ("paper", "authors"):
            raise ValueError(f"unknown objective form {config.form!r}")
        self.config = config
        self.black_box = black_box
        self.removal = EvidenceRemoval(config.removal, generator)

    def _keep_and_drop(self, images, mask, rows, generators):
        """Black-box logits of Phi(X, M) and Phi(X, 1 - M) for the given rows (None: all of
        them, without copying the batch): (R, K) each."""
        x, m = (images, mask) if rows is None else (images[rows], mask[rows])
        outside = 1 - dilate(m, self.config.destroy_dilation)  # what Phi(X, 1 - M) keeps
        gk, gd = generators if generators is not None else (None, None)
        if generators is not None and rows is not None:
            gk = [gk[i] for i in rows.tolist()]
            gd = [gd[i] for i in rows.tolist()]
        with record_function("rtsal: evidence removal"):
            kept = self.removal(x, m, gk, blur_prob=self.config.keep_blur_prob)
            removed = torch.cat([kept, self.removal(x, outside, gd)])
        with record_function("rtsal: black box"):
            return self.black_box(removed).chunk(2)

    def __call__(
        self,
        images: torch.Tensor,  # (B, C, H, W) in [0, 1]
        out: MaskerOutput,
        classes: torch.Tensor,  # (B,) selectors
        labels: torch.Tensor | None = None,  # (B,) true labels
        is_real: torch.Tensor | None = None,  # (B,) bool
        generators: tuple[list, list] | None = None,  # per-sample (keep, drop) generators
    ) -> LossTerms:
        cfg = self.config
        B = images.shape[0]
        if is_real is None:
            is_real = torch.ones(B, dtype=torch.bool, device=images.device)
        labels = classes if labels is None else labels
        if cfg.form == "paper":
            rows = is_real.nonzero().squeeze(1)
            if rows.numel():
                keep, drop = self._keep_and_drop(images, out.mask, rows, generators)
            else:  # fake selectors only: no black-box pass
                keep = drop = images.new_zeros(0, 1)
            terms = paper(cfg, out, classes, is_real, keep, drop)
        else:
            keep, drop = self._keep_and_drop(images, out.mask, None, generators)
            terms = authors(cfg, out, labels, is_real, keep, drop)
        embed = images.new_zeros(B)
        if cfg.embed_weight > 0:
            gate = out.gate_max.clamp(1e-6, 1 - 1e-6)
            embed = cfg.embed_weight * F.binary_cross_entropy(
                gate, is_real.to(gate.dtype), reduction="none"
            )
        total = terms.tv + terms.area + terms.preserve + terms.destroy + embed
        return LossTerms(
            total.mean(),
            terms.tv.mean(),
            terms.area.mean(),
            terms.preserve.mean(),
            terms.destroy.mean(),
            embed.mean(),
        )
