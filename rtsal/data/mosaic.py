"""Mosaics: 2 or 4 photos of different classes tiled in one image, the selector naming one tile.

A masking model trained on single photos can get away with masking "the object in the middle".
On a mosaic the class selector names one tile's class, so the mask must find that class among
others and leave the other tiles out; the tiles' boxes are exact, which also makes mosaics of
held-out photos a localisation benchmark with known answers (:func:`mosaic_benchmark`).

Layout (H × W image):

    2 tiles:  | 0 | 1 |          4 tiles:  | 0 | 1 |
                                           | 2 | 3 |

Tile ``t`` of ``k`` covers ``tile_boxes(k, H, W)[t]`` = ``(x0, y0, x1, y1)``, exclusive ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rtsal.boxes import Box, box_iou, salient_box
from rtsal.engine import _rng

TILE_CHOICES = (2, 4)
MAX_TILES = 4
NO_CLASS = -1  # padding in the per-sample list of classes present


def tile_boxes(tiles: int, height: int, width: int) -> list[Box]:
    """The (x0, y0, x1, y1) box of each tile of a ``tiles``-photo mosaic, in reading order."""
    if tiles == 2:
        mid = width // 2
        return [(0, 0, mid, height), (mid, 0, width, height)]
    if tiles == 4:
        mx, my = width // 2, height // 2
        return [(0, 0, mx, my), (mx, 0, width, my), (0, my, mx, height), (mx, my, width, height)]
    raise ValueError(f"a mosaic has 2 or 4 tiles, not {tiles}")


def compose(tiles: Sequence[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Paste (C, h_t, w_t) tiles, each already the size of its box, into one (C, H, W) image."""
    boxes = tile_boxes(len(tiles), height, width)
    out = torch.empty(tiles[0].shape[0], height, width, dtype=tiles[0].dtype)
    for (x0, y0, x1, y1), t in zip(boxes, tiles, strict=True):
        if tuple(t.shape[-2:]) != (y1 - y0, x1 - x0):
            raise ValueError(f"tile of shape {tuple(t.shape)} does not fit box {(x0, y0, x1, y1)}")
        out[:, y0:y1, x0:x1] = t
    return out


def pick_partners(
    labels: Sequence[int], first: int, count: int, g: torch.Generator, tries: int = 64
) -> list[int]:
    """``count`` sample indices whose classes differ from ``first``'s and from each other."""
    chosen = [first]
    used = {labels[first]}
    n = len(labels)
    for _ in range(tries * count):
        if len(chosen) == count + 1:
            break
        j = int(torch.randint(n, (), generator=g))
        if labels[j] not in used:
            chosen.append(j)
            used.add(labels[j])
    return chosen[1:]


class MosaicDataset(Dataset):
    """Wraps an image-file data set: with probability ``prob`` a sample is a mosaic of 2 or 4
    photos of different classes, labelled with one tile's class (drawn at random).

    Each item is ``(image (C, H, W), label, present (4,))``, ``present`` the classes of all tiles
    padded with -1, so fake selectors can avoid every class shown. The draws are keyed by
    ``(seed, epoch, index)`` like the base set's augmentation.
    """

    def __init__(self, base, prob: float, tiles: Sequence[int] = TILE_CHOICES):
        if not 0 <= prob <= 1:
            raise ValueError("the mosaic probability must be in [0, 1]")
        for t in tiles:
            tile_boxes(t, 2, 2)  # validates
        self.base, self.prob, self.tiles = base, prob, tuple(tiles)
        self.labels = [label for _, label in base.samples]
        self.class_names = base.class_names

    # the trainer's hooks pass through to the base set
    @property
    def samples(self):
        return self.base.samples

    def set_epoch(self, epoch: int, seed: int | None) -> None:
        self.base.set_epoch(epoch, seed)

    def __len__(self) -> int:
        return len(self.base)

    def _generator(self, i: int) -> torch.Generator:
        seed = self.base.aug_seed if self.base.aug_seed is not None else 0
        return _rng.generator(seed, self.base.epoch, _rng.MOSAIC, i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        g = self._generator(i)
        H, W = self.base.size
        present = torch.full((MAX_TILES,), NO_CLASS, dtype=torch.long)
        if float(torch.rand((), generator=g)) >= self.prob:
            x, label = self.base[i]
            present[0] = label
            return x, label, present
        k = self.tiles[int(torch.randint(len(self.tiles), (), generator=g))]
        members = [i, *pick_partners(self.labels, i, k - 1, g)]
        if len(members) < k:  # too few classes for a mosaic: the photo alone
            x, label = self.base[i]
            present[0] = label
            return x, label, present
        order = torch.randperm(k, generator=g).tolist()  # which tile each member takes
        boxes = tile_boxes(k, H, W)
        tiles: list[torch.Tensor | None] = [None] * k
        labels = [NO_CLASS] * k
        for member, slot in zip(members, order, strict=True):
            x0, y0, x1, y1 = boxes[slot]
            tiles[slot], labels[slot] = self.base.load(member, (y1 - y0, x1 - x0), key=i * 8 + slot)
        target = int(torch.randint(k, (), generator=g))
        present[:k] = torch.tensor(labels)
        return compose(tiles, H, W), labels[target], present  # type: ignore[arg-type]

    @staticmethod
    def collate(batch):
        xs, ys, ps = zip(*batch, strict=True)
        return torch.stack(xs), torch.tensor(ys), torch.stack(ps)


# --------------------------------------------------------------------------- benchmark


@dataclass
class MosaicCase:
    """One benchmark mosaic: its photos (tile order), their classes, and the tile to find."""

    paths: list[str]
    labels: list[int]
    target: int


def mosaic_cases(
    samples: Sequence[tuple[object, int]], count: int, *, seed: int = 0, tiles=TILE_CHOICES
) -> list[MosaicCase]:
    """A seeded, fixed list of mosaics from labelled photos (classes differ within a mosaic);
    every tile position is the target equally often."""
    labels = [label for _, label in samples]
    g = _rng.generator(seed, _rng.MOSAIC, len(samples))
    cases = []
    for c in range(count):
        k = tiles[c % len(tiles)]
        first = int(torch.randint(len(samples), (), generator=g))
        members = [first, *pick_partners(labels, first, k - 1, g)]
        if len(members) < k:
            continue
        perm = torch.randperm(k, generator=g).tolist()
        members = [members[j] for j in perm]
        cases.append(
            MosaicCase(
                [str(samples[m][0]) for m in members],
                [labels[m] for m in members],
                (c // len(tiles)) % k,
            )
        )
    return cases


def render_case(
    case: MosaicCase, size: tuple[int, int], load: Callable[[str, tuple[int, int]], torch.Tensor]
) -> tuple[torch.Tensor, Box]:
    """The mosaic image (C, H, W) of ``case`` and its target tile's box; ``load(path, (h, w))``
    gives a photo resized to a tile."""
    H, W = size
    boxes = tile_boxes(len(case.paths), H, W)
    tiles = [load(p, (b[3] - b[1], b[2] - b[0])) for p, b in zip(case.paths, boxes, strict=True)]
    return compose(tiles, H, W), boxes[case.target]


def load_tile(path: str | Path, hw: tuple[int, int]) -> torch.Tensor:
    """A photo resized (bicubic, ignoring aspect) to a tile of ``hw`` = (h, w): (C, h, w)."""
    from rtsal.data.images import load_image, pil_to_tensor

    return pil_to_tensor(load_image(path).resize((hw[1], hw[0]), 3))


def inside_fraction(mask: torch.Tensor, box: Box) -> float:
    """Share of the mask's mass that lies inside ``box`` (1 = all of it)."""
    m = mask.detach().float().reshape(mask.shape[-2], mask.shape[-1])
    total = float(m.sum())
    if total <= 0:
        return float("nan")
    x0, y0, x1, y1 = box
    return float(m[y0:y1, x0:x1].sum()) / total


def score_mosaic_masks(masks: torch.Tensor, boxes: Sequence[Box]) -> dict[str, float]:
    """The mosaic benchmark's numbers for masks (N, 1, H, W) of each mosaic's target class:

    - ``mosaic_loc``: the paper's localisation test against the target tile (tightest box around
      the mask above 0.5, IoU > 0.5);
    - ``mosaic_inside``: mean share of the mask's mass inside the target tile;
    - ``mosaic_pointing``: share of masks whose maximum lies in the target tile.
    """
    hits, inside, points = [], [], []
    for m, b in zip(masks, boxes, strict=True):
        m = m.reshape(m.shape[-2], m.shape[-1]).float()
        hits.append(box_iou(salient_box(m), b) > 0.5)
        share = inside_fraction(m, b)
        inside.append(0.0 if share != share else share)  # an empty mask keeps nothing inside
        y, x = divmod(int(m.flatten().argmax()), m.shape[1])
        points.append(b[0] <= x < b[2] and b[1] <= y < b[3])
    n = max(1, len(hits))
    return {
        "mosaic_loc": sum(hits) / n,
        "mosaic_inside": sum(inside) / n,
        "mosaic_pointing": sum(points) / n,
    }
