"""Validation during training, on photos held out of the training folder (never evaluation
photos): how well the masks localise, not how low the loss is.

Two fixed sets are built once from the held-out photos:

- **mosaics** (:mod:`rtsal.mosaic`) of 2 and 4 held-out photos of different classes; the selector
  names one tile, whose box is exact. ``mosaic_loc`` is the paper's localisation test against
  that tile (tightest box around the mask above 0.5, IoU > 0.5), ``mosaic_inside`` the share of
  the mask's mass inside the tile;
- **single photos**: the black box's probability of the class on image × mask (``p_keep``) and
  image × (1 − mask) (``p_drop``), the mask's area for the class and for a random absent class,
  and the paper's saliency metric.

``score`` (higher is better) picks the checkpoint: mosaic localisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from rtsal import _rng
from rtsal.metrics import saliency_metric, salient_box
from rtsal.mosaic import load_tile, mosaic_cases, render_case, score_mosaic_masks

VALIDATION_STREAM = 11


class Validator:
    """Fixed validation sets from held-out ``samples`` (path, label); ``__call__(model)``."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        black_box,
        size: tuple[int, int],
        *,
        photos: int = 200,
        mosaics: int = 200,
        seed: int = 0,
        batch_size: int = 16,
    ):
        from rtsal.images import load_image, photo_transform, pil_to_tensor

        self.black_box = black_box
        self.size = tuple(size)
        self.batch_size = batch_size
        box = black_box
        eval_transform = photo_transform(self.size, False, box.interpolation, box.crop_pct)
        g = _rng.generator(seed, VALIDATION_STREAM)
        order = torch.randperm(len(samples), generator=g).tolist()
        chosen = [samples[i] for i in order[:photos]]
        self.photos = torch.stack(
            [
                pil_to_tensor(eval_transform(load_image(p))).mul(255).round().byte()
                for p, _ in chosen
            ]
        )  # (N, 3, H, W) uint8
        self.photo_labels = torch.tensor([label for _, label in chosen])
        K = box.num_classes
        shift = torch.randint(1, max(K, 2), (len(chosen),), generator=g)
        self.absent = (self.photo_labels + shift) % K

        self.cases = mosaic_cases(list(samples), mosaics, seed=seed)
        rendered = [render_case(c, self.size, load_tile) for c in self.cases]
        self.mosaics = torch.stack([m.mul(255).round().byte() for m, _ in rendered])
        self.mosaic_boxes = [b for _, b in rendered]
        self.mosaic_labels = torch.tensor([c.labels[c.target] for c in self.cases])

    def _masks(self, model, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        out = []
        for s in range(0, len(images), self.batch_size):
            x = images[s : s + self.batch_size].float().div(255).to(device)
            c = classes[s : s + self.batch_size].to(device)
            out.append(model(x, c).mask.float().cpu())
        return torch.cat(out)  # (N, 1, H, W)

    def _probabilities(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        device = self.black_box.mean.device
        out = []
        for s in range(0, len(x), self.batch_size):
            p = self.black_box.probabilities(x[s : s + self.batch_size].to(device))
            out.append(p.float().cpu().gather(1, classes[s : s + self.batch_size, None])[:, 0])
        return torch.cat(out)

    @torch.inference_mode()
    def __call__(self, model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            return self._evaluate(model)
        finally:
            model.train(was_training)

    def _evaluate(self, model) -> dict[str, float]:
        result: dict[str, float] = {}
        if len(self.cases):
            masks = self._masks(model, self.mosaics, self.mosaic_labels)
            result.update(score_mosaic_masks(masks, self.mosaic_boxes))
        if len(self.photos):
            labels = self.photo_labels
            masks = self._masks(model, self.photos, labels)
            absent = self._masks(model, self.photos, self.absent)
            x = self.photos.float().div(255)
            result["p_image"] = float(self._probabilities(x, labels).mean())
            result["p_keep"] = float(self._probabilities(x * masks, labels).mean())
            result["p_drop"] = float(self._probabilities(x * (1 - masks), labels).mean())
            result["area_true"] = float(masks.mean())
            result["area_absent"] = float(absent.mean())
            scores = [
                saliency_metric(self.black_box, img, salient_box(m[0]), int(c))["score"]
                for img, m, c in zip(x, masks, labels, strict=True)
            ]
            result["saliency"] = sum(scores) / len(scores)
        result["score"] = result.get("mosaic_loc", 0.0)
        return result
