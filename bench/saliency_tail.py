"""What the mean saliency metric is made of: per-image rows written by
``rtsal metric --metrics saliency ... --out OUT``, summarised as the mean with its 95 % bootstrap
interval, the median, the mean without the worst 5 % of images, and the mean over the
images the black box itself recognises (f_c(X) at least 0.5, 0.1, 0.05):

    python bench/saliency_tail.py runs/eval-shipped-rows runs/eval-old720-rows

The metric is ``log(max(a, 0.05)) - log(p)`` with ``p`` the class probability on the crop: an
image whose class the black box misses gets a large score whatever the box, so the mean leans
on a few such images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="--out folders (or records files)")
    a = ap.parse_args()

    from rtsal.metrics.uncertainty import bootstrap_interval
    from rtsal.runs.compare import read_scores

    print(
        "| run | images | mean (95 % CI) | median | mean without the worst 5 % "
        "| mean, f_c(X) ≥ 0.5 (images) | ≥ 0.1 | ≥ 0.05 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in a.runs:
        sc = read_scores(run)
        rows = list(sc.rows.values())
        s = np.array([r["saliency"] for r in rows], dtype=np.float64)
        p = np.array([r["p_image"] for r in rows], dtype=np.float64)
        lo, hi = bootstrap_interval(s)
        kept = np.sort(s)[: s.size - max(1, round(0.05 * s.size))]
        by = [f"{s[p >= t].mean():.3f} ({int((p >= t).sum())})" for t in (0.5, 0.1, 0.05)]
        print(
            f"| {sc.path.parent.name} | {s.size} | {s.mean():.3f} ({lo:.3f} to {hi:.3f}) "
            f"| {np.median(s):.3f} | {kept.mean():.3f} | " + " | ".join(by) + " |"
        )


if __name__ == "__main__":
    main()
