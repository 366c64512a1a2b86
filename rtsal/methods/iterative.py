"""The iterative "Mask" baseline: a mask optimised per image (Fong & Vedaldi, "Interpretable
Explanations of Black Boxes by Meaningful Perturbation", ICCV 2017).

Where the masking model of Dabkowski & Gal (2017) predicts a mask in one forward pass, this
method minimises the same objective, Eq. 4, directly over the mask of each image:
``L(M) = l1 TV(M) + l2 AV(M) - log f_c(Phi(X, M)) + l3 f_c(Phi(X, 1 - M)) ** l4``, with Adam for
a few hundred steps. It is the "Mask" row of the paper's Table 1 and the slow side of its speed
comparison.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rtsal.engine.model import MaskerOutput
from rtsal.engine.objective import ObjectiveConfig, SaliencyObjective, objective_preset
from rtsal.errors import RtsalError
from rtsal.methods._gradients import check_inputs, gradients_enabled


class IterativeMaskMethod:
    """Per-image mask optimisation on the paper's objective (Eq. 4), Fong & Vedaldi style.

    The free variable is a low-resolution mask ``m`` (B, 1, s, s) with values in [0, 1]; the
    image-resolution mask is ``M = upsample_bilinear(m)``. Each Adam step evaluates
    :class:`rtsal.engine.objective.SaliencyObjective` with ``mask=M`` and ``mask_lowres=m`` (so
    the TV term acts at the mask's own resolution, as for the masking model's stride-4 head),
    with the evidence removal Phi of :class:`rtsal.engine.removal.EvidenceRemoval` drawing a
    fresh alternative image every step; after each step ``m`` is clipped back to [0, 1]. The
    images of a batch are optimised together but independently: each image's loss is
    differentiated on its own.

    Options:
        steps: Adam iterations (default 300; Fong & Vedaldi use 300-500).
        lr: Adam learning rate (default 0.1).
        mask_size: side s of the optimised mask (default 28).
        initial: starting value of every mask entry (default 0.5).
        objective: an objective preset name, ``"paper"`` (default) or ``"authors"``, or an
            :class:`rtsal.engine.objective.ObjectiveConfig`.
        seed: seeds the random alternative images; the same inputs give the same masks.

    Returns the optimised mask itself, in [0, 1] (not rescaled).
    """

    def __init__(
        self,
        black_box: Any,
        *,
        steps: int = 300,
        lr: float = 0.1,
        mask_size: int = 28,
        initial: float = 0.5,
        objective: str | ObjectiveConfig = "paper",
        seed: int = 0,
    ) -> None:
        if steps < 0:
            raise RtsalError(f"steps must be >= 0, got {steps}")
        if mask_size < 2:
            raise RtsalError(f"mask_size must be >= 2, got {mask_size}")
        if not 0.0 <= initial <= 1.0:
            raise RtsalError(f"initial must lie in [0, 1], got {initial}")
        self.black_box = black_box
        self.steps = int(steps)
        self.lr = float(lr)
        self.mask_size = int(mask_size)
        self.initial = float(initial)
        self.config = objective_preset(objective) if isinstance(objective, str) else objective
        self.seed = int(seed)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        classes = check_inputs(images, classes)  # (B,)
        B, _, H, W = images.shape
        s = self.mask_size
        generator = torch.Generator(device=images.device).manual_seed(self.seed)
        objective = SaliencyObjective(self.config, self.black_box, generator)
        with gradients_enabled():
            x = images.detach().clone()  # (B, C, H, W)
            lowres = torch.full((B, 1, s, s), self.initial, device=x.device, dtype=x.dtype)
            lowres.requires_grad_(True)  # m: (B, 1, s, s)
            optimiser = torch.optim.Adam([lowres], lr=self.lr)
            for _ in range(self.steps):
                mask = F.interpolate(lowres, size=(H, W), mode="bilinear", align_corners=False)
                out = MaskerOutput(mask, lowres, gate_max=x.new_zeros(B), logits=None)
                terms = objective(x, out, classes)
                # terms are batch means; times B, each image gets its own loss's gradient
                lowres.grad = torch.autograd.grad(terms.total * B, lowres)[0]  # (B, 1, s, s)
                optimiser.step()
                with torch.no_grad():
                    lowres.clamp_(0.0, 1.0)
            mask = F.interpolate(lowres.detach(), size=(H, W), mode="bilinear", align_corners=False)
        return mask.clamp(0.0, 1.0)  # (B, 1, H, W)
