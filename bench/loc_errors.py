"""Why localisation fails: sorts the misses of a per-image CSV written by ``rtsal metric
--metrics localization --out DIR`` (or ``rtsal localize --out DIR``) against the boxes.

    python bench/loc_errors.py runs/eval/masker-*.csv \
        --boxes ../shared/data/imagenet-val-boxes/boxes.json

A miss (IoU ≤ 0.5 with every box of the class) is "empty" (nothing above 0.5), "too small"
(the predicted box under half the area of the box it overlaps most), "too large" (over twice
it), or "misplaced" (about the right size, in the wrong place).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def classify(pred, boxes) -> str:
    from rtsal.boxes import box_area, box_iou

    if pred is None:
        return "empty"
    best = max(boxes, key=lambda g: box_iou(pred, g))
    if box_iou(pred, best) > 0.5:
        return "hit"
    ratio = box_area(pred) / max(1, box_area(best))
    if ratio < 0.5:
        return "too small"
    if ratio > 2:
        return "too large"
    return "misplaced"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--boxes", required=True)
    a = ap.parse_args()
    from rtsal.data.annotations import annotation_entries, read_boxes

    ann = read_boxes(a.boxes)
    for path in a.csv:
        counts: dict[str, int] = {}
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            pred = tuple(json.loads(r["box"])) if r.get("box") else None
            boxes = [b for _, b in annotation_entries(ann, r["input"])]
            kind = classify(pred, boxes)
            counts[kind] = counts.get(kind, 0) + 1
        n = len(rows)
        shown = ", ".join(f"{k} {100 * v / n:.1f} %" for k, v in sorted(counts.items()))
        print(f"{path}: {n} images: {shown}")


if __name__ == "__main__":
    main()
