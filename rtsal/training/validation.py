"""Validation during training, on photos held out of the training folder (never evaluation
photos): how well the masks localise, not how low the loss is.

Two fixed sets are built once from the held-out photos:

- **mosaics** (:mod:`rtsal.data.mosaic`) of 2 and 4 held-out photos of different classes; the
  selector names one tile, whose box is exact. ``mosaic_loc`` is the paper's localisation test
  against that tile (tightest box around the mask above 0.5, IoU > 0.5), ``mosaic_inside`` the share
  of the mask's mass inside the tile;
- **single photos**: the black box's probability of the class on image × mask (``p_keep``) and
  image × (1 − mask) (``p_drop``), the mask's area for the class and for a random absent class,
  and the paper's saliency metric.

and, from ``--val-boxes`` (photos with exact boxes that are not evaluation photos, such as a
split of ImageNet *training* photos), **box localisation**: each photo resized to the model's
input, the paper's test at threshold 0.5 (``box_loc``, the share localised) and the mask's area
(``box_area``).

``score`` (higher is better) picks the checkpoint: box localisation when there are box photos,
else mosaic localisation, less the share of held-out photos whose mask is "the wrong way round"
(``wrong_way``: the class at least as likely with the mask removed as with only the mask kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from rtsal.boxes import Box, mask_box, resize_box, salient_box
from rtsal.data.annotations import read_boxes
from rtsal.data.mosaic import load_tile, mosaic_cases, render_case, score_mosaic_masks
from rtsal.engine import _rng
from rtsal.errors import DataError
from rtsal.metrics.localization import LocalisationError
from rtsal.metrics.saliency import saliency_metric

VALIDATION_STREAM = 11

BoxPhoto = tuple[Path, int, list[Box]]  # photo, class index, boxes of that class


def read_box_photos(path: str | Path, resolver, exclude=()) -> list[BoxPhoto]:
    """The photos of a box file (a ``boxes.json`` or a folder holding one, in the form of
    ``imagenet-val-boxes/boxes.json``), their class indices and boxes. Evaluation photos are
    refused: ``ILSVRC2012_val_*`` files and anything inside an ``exclude`` folder."""
    from rtsal.data.photos import enclosing_folder, is_evaluation_photo

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"--val-boxes: {path} not found")
    folder = path if path.is_dir() else path.parent
    ex = enclosing_folder(folder, exclude)
    if ex is not None:
        raise DataError(
            f"--val-boxes {path} is inside the evaluation folder {ex}: "
            "choose checkpoints on photos you do not measure on"
        )
    annotations = read_boxes(path)
    out: list[BoxPhoto] = []
    for name in sorted(annotations):
        photo = folder / name
        if is_evaluation_photo(photo):
            raise DataError(
                f"--val-boxes lists {name}: ILSVRC2012_val_* files are for measuring only"
            )
        if not photo.is_file():
            raise DataError(f"--val-boxes lists {name}, which is not in {folder}")
        entries = annotations[name]
        cls = entries[0][0]
        out.append((photo, resolver.resolve(cls), [b for c, b in entries if c == cls]))
    if not out:
        raise DataError(f"--val-boxes {path} lists no photos")
    return out


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
        box_photos: Sequence[BoxPhoto] = (),
    ):
        from rtsal.data.images import (
            load_image,
            photo_transform,
            pil_interpolation,
            pil_to_tensor,
        )

        self.black_box = black_box
        self.size = tuple(size)
        self.batch_size = batch_size
        box = black_box
        eval_transform = photo_transform(self.size, False, box.interpolation, box.crop_pct)
        g = _rng.generator(seed, VALIDATION_STREAM)
        order = torch.randperm(len(samples), generator=g).tolist()
        chosen = [samples[i] for i in order[:photos]]
        self.photos = (
            torch.stack(
                [
                    pil_to_tensor(eval_transform(load_image(p))).mul(255).round().byte()
                    for p, _ in chosen
                ]
            )
            if chosen
            else torch.zeros(0, 3, *self.size, dtype=torch.uint8)
        )  # (N, 3, H, W) uint8
        self.photo_labels = torch.tensor([label for _, label in chosen])
        K = box.num_classes
        shift = torch.randint(1, max(K, 2), (len(chosen),), generator=g)
        self.absent = (self.photo_labels + shift) % K

        self.cases = mosaic_cases(list(samples), mosaics, seed=seed) if samples else []
        rendered = [render_case(c, self.size, load_tile) for c in self.cases]
        self.mosaics = (
            torch.stack([m.mul(255).round().byte() for m, _ in rendered]) if rendered else None
        )
        self.mosaic_boxes = [b for _, b in rendered]
        self.mosaic_labels = torch.tensor([c.labels[c.target] for c in self.cases])

        h, w = self.size
        self.box_images, self.box_truth = [], []
        for p, _, boxes in box_photos:
            im = load_image(p)
            self.box_images.append(
                pil_to_tensor(im.resize((w, h), pil_interpolation(box.interpolation)))
            )
            self.box_truth.append([resize_box(b, (im.height, im.width), (h, w)) for b in boxes])
        self.box_images = (
            torch.stack(self.box_images).mul(255).round().byte() if box_photos else None
        )
        self.box_labels = torch.tensor([c for _, c, _ in box_photos], dtype=torch.long)

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
        if self.box_images is not None:
            masks = self._masks(model, self.box_images, self.box_labels)
            error = LocalisationError()
            for m, truth in zip(masks, self.box_truth, strict=True):
                error.update(mask_box(m[0]), truth)
            result["box_loc"] = 1.0 - error.compute()
            result["box_area"] = float(masks.mean())
        if len(self.cases):
            masks = self._masks(model, self.mosaics, self.mosaic_labels)
            result.update(score_mosaic_masks(masks, self.mosaic_boxes))
        if len(self.photos):
            labels = self.photo_labels
            masks = self._masks(model, self.photos, labels)
            absent = self._masks(model, self.photos, self.absent)
            x = self.photos.float().div(255)
            p_image = self._probabilities(x, labels)
            p_keep = self._probabilities(x * masks, labels)
            p_drop = self._probabilities(x * (1 - masks), labels)
            result["p_image"] = float(p_image.mean())
            result["p_keep"] = float(p_keep.mean())
            result["p_drop"] = float(p_drop.mean())
            # per photo: removing the mask leaves the class at least as likely as keeping it
            result["wrong_way"] = float((p_drop >= p_keep).float().mean())
            result["halved"] = float((p_drop <= 0.5 * p_image).float().mean())
            result["area_true"] = float(masks.mean())
            result["area_absent"] = float(absent.mean())
            scores = [
                saliency_metric(self.black_box, img, salient_box(m[0]), int(c))["score"]
                for img, m, c in zip(x, masks, labels, strict=True)
            ]
            result["saliency"] = sum(scores) / len(scores)
        result["score"] = validation_score(result)
        return result


def validation_score(result: dict[str, float]) -> float:
    """What picks ``OUT/best`` (higher is better): box localisation when there are box photos,
    else mosaic localisation, less the share of held-out photos whose mask is the wrong way
    round (p(x * (1 - M)) >= p(x * M)) when there are held-out photos. Localisation and
    faithfulness per photo pull against each other along the objective's weights; a point of
    either counts the same."""
    loc = result.get("box_loc", result.get("mosaic_loc", 0.0))
    return loc - result.get("wrong_way", 0.0)
