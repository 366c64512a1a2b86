"""Where a masking model's localisation misses are: the paper's test (each photo resized to the
black box's input, the tightest box around the mask above 0.5, IoU > 0.5 with a box of the
class), broken down by photos with one box or several, by how large the missed boxes are, and
against two variants that change the mask or the box (the mask averaged with the mirrored
photo's, and the box around the largest connected region only):

    python bench/miss_breakdown.py ../shared/data/imagenet-val-boxes [--checkpoint CKPT]

On evaluation photos this only describes a model; choose nothing by it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("boxes", type=Path, help="a boxes.json or the folder holding one")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model")
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()

    from rtsal.boxes import box_area, component_boxes, mask_box
    from rtsal.data.annotations import read_boxes
    from rtsal.data.images import pil_to_tensor
    from rtsal.inference.explainer import Explainer
    from rtsal.metrics.localization import best_iou

    path = a.boxes / "boxes.json" if a.boxes.is_dir() else a.boxes
    explainer = Explainer(a.checkpoint, resize="square")
    h, w = explainer.black_box.input_size
    interp = explainer.interp
    items = []
    for name, entries in sorted(read_boxes(path).items()):
        im = Image.open(path.parent / name).convert("RGB")
        cls = entries[0][0]
        sx, sy = w / im.width, h / im.height
        boxes = [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for c, b in entries if c == cls]
        items.append((im.resize((w, h), interp), explainer.resolver.resolve(cls), boxes))

    rows = []
    for i in range(0, len(items), a.batch_size):
        chunk = items[i : i + a.batch_size]
        x = torch.stack([pil_to_tensor(im) for im, _, _ in chunk])
        classes = [c for _, c, _ in chunk]
        with torch.no_grad():
            masks = explainer.attribute(x, classes)[:, 0]
            mirrored = explainer.attribute(x.flip(-1), classes)[:, 0].flip(-1)
        for (_, _, gt), m, mm in zip(chunk, masks, mirrored, strict=True):
            box = mask_box(m, 0.5)
            iou = best_iou(box, gt)
            ratio = None
            if box is not None:
                nearest = max(gt, key=lambda g: best_iou(box, [g]))
                ratio = box_area(box) / box_area(nearest)
            rows.append(
                {
                    "boxes": len(gt),
                    "hit": iou > 0.5,
                    "ratio": ratio,
                    "regions": len(component_boxes(m, 0.5)),
                    "mirror_hit": best_iou(mask_box((m + mm) / 2, 0.5), gt) > 0.5,
                    "largest_hit": best_iou(mask_box(m, 0.5, largest=True), gt) > 0.5,
                }
            )

    def error(rs, key="hit") -> float:
        return 100 * (1 - np.mean([r[key] for r in rs])) if rs else float("nan")

    one = [r for r in rows if r["boxes"] == 1]
    several = [r for r in rows if r["boxes"] > 1]
    misses = [r for r in rows if not r["hit"]]
    out = {
        "photos": len(rows),
        "error": error(rows),
        "one_box": {"photos": len(one), "error": error(one)},
        "several_boxes": {"photos": len(several), "error": error(several)},
        "misses": len(misses),
        "misses_box_over_twice": sum(r["ratio"] is not None and r["ratio"] > 2 for r in misses),
        "misses_box_under_half": sum(r["ratio"] is not None and r["ratio"] < 0.5 for r in misses),
        "misses_several_regions": sum(r["regions"] > 1 for r in misses),
        "error_mirror_averaged": error(rows, "mirror_hit"),
        "error_largest_region": error(rows, "largest_hit"),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
