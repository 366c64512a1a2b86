"""A validation split with exact boxes, for choosing masking-model checkpoints by localisation
(``rtsal train --val-boxes OUT/boxes.json``), built from Tiny ImageNet's training photos
(64×64, ImageNet *train* photos, one box each, 200 ImageNet classes):

    python bench/box_split.py ~/.cache/rtsal-data/tiny/tiny-imagenet-200 \
        --out ~/.cache/rtsal-data/tiny-val --per-class 3

Per class, the first ``--per-class`` photos (by file name) whose box covers between
``--min-area`` and ``--max-area`` of the photo are copied to OUT with a ``boxes.json`` in the
form of ``imagenet-val-boxes/boxes.json`` (``{file: {synset, name, boxes}}``, boxes in the
file's pixels, ``x1``/``y1`` exclusive). Photos whose box is (nearly) the whole photo would be
found by any mask, so the area window keeps the split able to tell masks apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def read_boxes(class_dir: Path) -> list[tuple[str, list[int]]]:
    """(file, [x0, y0, x1, y1]) rows of Tiny ImageNet's ``<wnid>_boxes.txt`` (inclusive edges)."""
    rows = []
    for line in (class_dir / f"{class_dir.name}_boxes.txt").read_text().splitlines():
        name, *edges = line.split()
        x0, y0, x1, y1 = (int(v) for v in edges)
        rows.append((name, [x0, y0, x1 + 1, y1 + 1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="the tiny-imagenet-200 folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--min-area", type=float, default=0.08)
    ap.add_argument("--max-area", type=float, default=0.6)
    args = ap.parse_args()

    names = {}
    for line in (args.root / "words.txt").read_text().splitlines():
        wnid, words = line.split("\t", 1)
        names[wnid] = words.split(",")[0].strip()
    wnids = sorted((args.root / "wnids.txt").read_text().split())
    args.out.mkdir(parents=True, exist_ok=True)
    table = {}
    for wnid in wnids:
        class_dir = args.root / "train" / wnid
        if not (class_dir / f"{wnid}_boxes.txt").is_file():
            print(f"skipped {wnid}: no {wnid}_boxes.txt")
            continue
        picked = 0
        for name, box in sorted(read_boxes(class_dir)):
            area = (box[2] - box[0]) * (box[3] - box[1]) / (64 * 64)
            if not args.min_area <= area <= args.max_area:
                continue
            shutil.copyfile(class_dir / "images" / name, args.out / name)
            table[name] = {"synset": wnid, "name": names.get(wnid, wnid), "boxes": [box]}
            picked += 1
            if picked == args.per_class:
                break
    (args.out / "boxes.json").write_text(json.dumps(table, indent=1) + "\n")
    classes = len({e["synset"] for e in table.values()})
    print(f"wrote {len(table)} photos of {classes} classes and their boxes to {args.out}")


if __name__ == "__main__":
    main()
