"""The paper's method behind the common interface: a trained masking model, one forward pass."""

from __future__ import annotations

from typing import Any

import torch

from rtsal.errors import RtsalError


class MaskingModelMethod:
    """The real-time masking model: one forward pass per image and class (on a copy whose
    decoder has its BatchNorms folded into the convolutions)."""

    def __init__(self, black_box: Any, checkpoint: str | None = None, model: Any = None, **_: Any):
        from rtsal.engine.checkpoint import load_masker
        from rtsal.engine.fusion import fold_batch_norms

        if model is None:
            if checkpoint is None:
                raise RtsalError("the masking-model method needs a checkpoint")
            model, black_box, _meta = load_masker(checkpoint, black_box)
        self.model = fold_batch_norms(model.eval())
        self.black_box = black_box

    @torch.inference_mode()
    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.model(images, classes).mask
