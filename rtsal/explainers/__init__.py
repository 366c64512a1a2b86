"""Built-in explanation methods, registered through the same hook as third-party ones."""

from __future__ import annotations

from typing import Any

import torch

from rtsal.errors import RtsalError
from rtsal.explainers.contrast import ContrastMethod
from rtsal.explainers.gradcam import GradCAMMethod
from rtsal.explainers.gradient import GradientMethod
from rtsal.explainers.guided import GuidedBackpropMethod
from rtsal.explainers.iterative import IterativeMaskMethod
from rtsal.hookspecs import hookimpl


class MaskingModelMethod:
    """The real-time masking model: one forward pass per image and class (on a copy whose
    decoder has its BatchNorms folded into the convolutions)."""

    def __init__(self, black_box: Any, checkpoint: str | None = None, model: Any = None, **_: Any):
        from rtsal.checkpoint import load_masker
        from rtsal.fusion import fold_batch_norms

        if model is None:
            if checkpoint is None:
                raise RtsalError("the masking-model method needs a checkpoint")
            model, black_box, _meta = load_masker(checkpoint, black_box)
        self.model = fold_batch_norms(model.eval())
        self.black_box = black_box

    @torch.inference_mode()
    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.model(images, classes).mask


class CentreBoxMethod:
    """Baseline: a centred box of half the image area, whatever the class."""

    def __init__(self, black_box: Any = None, fraction: float = 0.5, **_: Any):
        self.fraction = fraction

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        B, _, H, W = images.shape
        s = self.fraction**0.5
        h, w = round(H * s), round(W * s)
        top, left = (H - h) // 2, (W - w) // 2
        masks = images.new_zeros(B, 1, H, W)
        masks[:, :, top : top + h, left : left + w] = 1
        return masks


class MaxBoxMethod:
    """Baseline: the whole image."""

    def __init__(self, black_box: Any = None, **_: Any):
        pass

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return images.new_ones(images.shape[0], 1, *images.shape[-2:])


@hookimpl
def register_methods(register):
    register("masker", MaskingModelMethod, summary="real-time masking model (this paper)")
    register("centre-box", CentreBoxMethod, summary="centred box of half the image area")
    register("max-box", MaxBoxMethod, summary="the whole image")
    register("gradient", GradientMethod, summary="|d logit / d image| (Simonyan et al. 2014)")
    register("gradcam", GradCAMMethod, summary="Grad-CAM (Selvaraju et al. 2017)")
    register(
        "guided-backprop",
        GuidedBackpropMethod,
        summary="guided backpropagation (Springenberg et al. 2015)",
    )
    register(
        "iterative-mask",
        IterativeMaskMethod,
        summary="mask optimised per image on Eq. 4 (Fong & Vedaldi 2017 style)",
    )
    register(
        "contrast",
        ContrastMethod,
        summary="input descent + superpixel/colour-contrast refinement (Pan et al. 2015)",
    )
