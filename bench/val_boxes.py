"""Score masking-model checkpoints on a validation split with exact boxes, the way
``rtsal train --val-boxes`` does during training (each photo resized to the black box's input,
the paper's localisation test at 0.5), to choose among a run's kept snapshots afterwards:

    python bench/val_boxes.py ~/.cache/rtsal-data/tiny-val runs/RUN/validated/step-*

Prints one JSON line per checkpoint (``box_loc``: share localised, ``box_area``: mean mask
area) and, last, the best. Never pass evaluation photos: checkpoints chosen on them would be
measured on the photos they were chosen by.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("boxes", help="a boxes.json or a folder holding one")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--exclude", action="append", default=[], help="evaluation folder")
    a = ap.parse_args()

    from rtsal.engine.checkpoint import load_masker
    from rtsal.registry.classes import ClassResolver
    from rtsal.registry.resolve import load_masking_model
    from rtsal.training.validation import Validator, read_box_photos

    _, black_box, _ = load_masking_model(a.checkpoints[0])
    photos = read_box_photos(a.boxes, ClassResolver.for_black_box(black_box), a.exclude)
    validator = Validator([], black_box, black_box.input_size, box_photos=photos)
    rows = []
    for ckpt in a.checkpoints:
        model, _, _ = load_masker(ckpt, black_box)
        row = {"checkpoint": ckpt, **validator(model)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: r["box_loc"])
    print(json.dumps({"best": best["checkpoint"], "box_loc": best["box_loc"]}))


if __name__ == "__main__":
    main()
