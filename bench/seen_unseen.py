"""Seen and unseen classes: a scored run's photos split by whether their class is among the
classes a masking model was trained on.

A run scored with ``rtsal metric ... --out ROWS`` keeps one record per photo; a training run
writes ``OUT/train-classes.tsv`` (class index, name, training photos). This prints, for each
half, the photos, the localisation error at 0.5 (paper's protocol) with its 95 % interval, the
share of photos whose mask is the wrong way round (f_c(X*(1-M)) >= f_c(X*M)), the share whose
removal at least halves f_c, and the mean saliency metric::

    python bench/seen_unseen.py runs/eval-lite2-rows runs/lite2/train-classes.tsv
    python bench/seen_unseen.py ROWS CLASSES --min-photos 5   # "seen" = at least 5 photos
    python bench/seen_unseen.py ROWS CLASSES --json
    python bench/seen_unseen.py ROWS --by-confidence   # split by f_c(X) instead

``--by-confidence`` splits the photos by the black box's probability of their label on the
whole photo, f_c(X) (below 0.1, 0.1-0.3, 0.3-0.6, 0.6 and above): where the black box finds
the label unlikely, keeping and removing the mask both leave it unlikely, and which of the two
is larger says little.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_records(rows: Path) -> list[dict]:
    files = sorted(rows.glob("*-metric.jsonl")) + sorted(rows.glob("*-localize.jsonl"))
    if not files:
        raise SystemExit(
            f"{rows}: no *-metric.jsonl or *-localize.jsonl records (rtsal metric --out)"
        )
    lines = files[0].read_text().splitlines()
    return [json.loads(line) for line in lines[1:] if line.strip()]


def read_classes(path: Path, min_photos: int) -> set[int]:
    seen = set()
    for line in path.read_text().splitlines():
        index, _name, count = line.split("\t")
        if int(count) >= min_photos:
            seen.add(int(index))
    return seen


def half(records: list[dict]) -> dict:
    from rtsal.metrics.uncertainty import wilson_interval

    n = len(records)
    if not n:
        return {"photos": 0}
    wrong = sum(not r["localized"] for r in records) if "localized" in records[0] else None
    out = {"photos": n}
    if wrong is not None:
        out["localization_error"] = wrong / n
        out["localization_error_ci95"] = list(wilson_interval(wrong, n))
    ww = sum(r["p_image_times_inverse"] >= r["p_image_times_mask"] for r in records)
    out["wrong_way"] = ww / n
    out["removal_halves"] = (
        sum(r["p_image_times_inverse"] <= 0.5 * r["p_image"] for r in records) / n
    )
    if "saliency" in records[0]:
        out["saliency"] = sum(r["saliency"] for r in records) / n
    return out


CONFIDENCE_BINS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.01))


def by_confidence(records: list[dict]) -> dict[str, dict]:
    """:func:`half` of the photos in each bin of f_c(X) (``p_image``)."""
    return {
        f"{lo:.1f}-{min(hi, 1.0):.1f}": half([r for r in records if lo <= r["p_image"] < hi])
        for lo, hi in CONFIDENCE_BINS
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=Path, help="the --out folder of rtsal metric / localize")
    p.add_argument("classes", type=Path, nargs="?", help="a training run's train-classes.tsv")
    p.add_argument("--by-confidence", action="store_true", help="split by f_c(X) instead")
    p.add_argument(
        "--min-photos", type=int, default=1, help="training photos that make a class seen"
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    records = read_records(a.rows)
    if a.by_confidence:
        groups = {**by_confidence(records), "all": half(records)}
        title = f"{a.rows} by the black box's probability of the label, f_c(X)"
    elif a.classes is None:
        p.error("give a train-classes.tsv, or --by-confidence")
    else:
        seen = read_classes(a.classes, a.min_photos)
        groups = {
            "seen": half([r for r in records if r["class_index"] in seen]),
            "unseen": half([r for r in records if r["class_index"] not in seen]),
            "all": half(records),
        }
        title = f"{a.rows} by {a.classes} (seen: >= {a.min_photos} training photos)"
    result = {"rows": str(a.rows), "classes": str(a.classes), "min_photos": a.min_photos, **groups}
    if a.json:
        print(json.dumps(result))
        return
    print(title)
    for name in groups:
        h = result[name]
        if not h["photos"]:
            print(f"  {name:7s}   0 photos")
            continue
        loc = h.get("localization_error")
        ci = h.get("localization_error_ci95", [float("nan")] * 2)
        text = f"  {name:7s} {h['photos']:4d} photos"
        if loc is not None:
            text += f"  loc. error {100 * loc:5.1f} % ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"
        text += f"  wrong way {100 * h['wrong_way']:5.1f} %"
        text += f"  removal halves {100 * h['removal_halves']:5.1f} %"
        if "saliency" in h:
            text += f"  saliency {h['saliency']:.3f}"
        print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
