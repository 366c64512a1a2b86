"""Gradient saliency (Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks:
Visualising Image Classification Models and Saliency Maps", ICLR workshop 2014).

The map is ``max_channel |d logit_c / d x|``: how much a small change of each pixel moves the
class score. It is the "Grad" baseline of Dabkowski & Gal (2017), Table 1 and 2.
"""

from __future__ import annotations

from typing import Any

import torch

from rtsal.methods._gradients import (
    check_inputs,
    class_scores,
    gradients_enabled,
    input_with_grad,
    scale_by_max,
)


class GradientMethod:
    """Simonyan et al. (2014) gradient saliency.

    ``mask = max_channel |d logit_c / d x|`` for the black box's *logit* (pre-softmax score) of
    class c, with x the [0, 1] image the black box receives. Normalisation: each map is divided
    by its own maximum, so it lies in [0, 1] with its largest value at 1 (an all-zero gradient
    gives an all-zero mask). No smoothing.

    Takes no options.
    """

    def __init__(self, black_box: Any) -> None:
        self.black_box = black_box

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        classes = check_inputs(images, classes)  # (B,)
        with gradients_enabled():
            x = input_with_grad(images)  # (B, C, H, W)
            logits = self.black_box(x)  # (B, K)
            (grad,) = torch.autograd.grad(class_scores(logits, classes).sum(), x)  # (B, C, H, W)
        saliency = grad.abs().amax(dim=1, keepdim=True)  # (B, 1, H, W)
        return scale_by_max(saliency)
