"""The mosaic benchmark: does the mask for class c stay inside the tile that shows c?

Mosaics of 2 and 4 held-out photos of different classes (classes by the black box's top-1, as
the training run labelled them), each method asked for one tile's class; the tiles' boxes are
exact. Reports, per method, the paper's localisation test against the target tile (box around
the mask above 0.5, IoU > 0.5), the share of the mask's mass inside the tile and pointing.

    python bench/mosaic.py --holdout runs/lite0-photos/holdout-labels.tsv --count 300 \
        --checkpoint runs/lite0-photos/best --methods masker,gradcam,gradient,centre-box,max-box

The table goes into docs/results.md between the ``mosaic`` markers, with this command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from results import write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--holdout", required=True, help="a run's holdout-labels.tsv (path, class)")
    ap.add_argument("--root", default=None, help="folder that relative paths in --holdout are in")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--checkpoint", action="append", default=[], help="masking model(s) to score")
    ap.add_argument("--methods", default="masker,gradcam,gradient,centre-box,max-box")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results.md")
    a = ap.parse_args()

    from rtsal import keep_freed_memory
    from rtsal.data.mosaic import load_tile, mosaic_cases, render_case, score_mosaic_masks
    from rtsal.engine.checkpoint import default_checkpoint
    from rtsal.registry.methods import create_method
    from rtsal.registry.resolve import load_masking_model

    keep_freed_memory()
    rows_in = [line.split("\t") for line in Path(a.holdout).read_text().splitlines() if line]
    root = Path(a.root).expanduser() if a.root else Path()
    samples = [(root / p, int(c)) for p, c in rows_in]
    cases = mosaic_cases(samples, a.count, seed=a.seed)
    size = (a.size, a.size)

    rendered = [render_case(c, size, load_tile) for c in cases]
    images = torch.stack([m for m, _ in rendered])
    boxes = [b for _, b in rendered]
    classes = torch.tensor([c.labels[c.target] for c in cases])
    checkpoints = a.checkpoint or [str(default_checkpoint())]
    _, black_box, _ = load_masking_model(checkpoints[0])
    runs = []
    for name in a.methods.split(","):
        for ckpt in checkpoints if name == "masker" else [None]:
            opts = {"checkpoint": ckpt} if ckpt else {}
            method = create_method(name, black_box, **opts)
            t0 = time.perf_counter()
            masks = torch.cat(
                [
                    method.explain(images[s : s + a.batch_size], classes[s : s + a.batch_size])
                    .detach()
                    .float()
                    for s in range(0, len(images), a.batch_size)
                ]
            )
            seconds = (time.perf_counter() - t0) / len(images)
            label = f"{name} ({ckpt})" if ckpt else name
            runs.append({"method": label, **score_mosaic_masks(masks, boxes), "s": seconds})
            print(runs[-1], file=sys.stderr, flush=True)
    head = (
        "| method | mosaics | loc. accuracy on the tile % ↑ | mass inside the tile % ↑ | "
        "pointing % ↑ | s / mosaic |\n|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method']} | {len(cases)} | {100 * r['mosaic_loc']:.1f} | "
        f"{100 * r['mosaic_inside']:.1f} | {100 * r['mosaic_pointing']:.1f} | {r['s']:.3f} |\n"
        for r in runs
    )
    command = "python bench/mosaic.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    tiles = sum(len(c.labels) for c in cases) / max(1, len(cases))
    text = (
        f"{head}{body}\nChance for a mask that picks a tile at random: {100 / tiles:.0f} % "
        f"pointing (mean {tiles:.1f} tiles). Measured {time.strftime('%Y-%m-%d')} by:\n\n"
        f"    {command}\n\n"
    )
    write_section(REPO / a.out, "mosaic", text)
    print(head + body)


if __name__ == "__main__":
    main()
