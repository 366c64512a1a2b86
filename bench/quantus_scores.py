"""Quantus's scores for the masking model and Grad-CAM, through ``rtsal.explain_func``, on
ImageNet validation photos with exact boxes (measuring only: never train on these photos).

A seeded sample of the photos of ``imagenet-val-boxes`` is resized to the black box's 224 x 224
(``rtsal.integrations.quantus.box_batch``: images in [0, 1], the ground-truth class, its boxes as
``s_batch``), and each method is scored by Quantus, the black box (EfficientNet-Lite0) as the
model:

- ``PointingGame``: is the attribution's maximum inside a box of the class (no tolerance);
- ``FaithfulnessCorrelation``: Pearson correlation, over ``--nr-runs`` random subsets of
  ``--subset-size`` input values set to the image's darkest value, between the attributions'
  sum over the subset and the fall in the class's logit;
- ``RegionPerturbation`` (most relevant first): ``--patch-size`` px patches in order of their
  summed attribution set to the darkest value, ``--regions`` of them, one at a time; the score
  is the mean fall in the class's probability over those steps (AOPC).

Every method meets the same random subsets (the seed is set before each metric). Per photo
scores are averaged; ± is the standard error of the mean.

    python bench/quantus_scores.py --photos 100 --out docs/results/quantus.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _markdown import write_section  # noqa: E402  bench/_markdown.py, beside this script

DATA = REPO.parent / "shared" / "data" / "imagenet-val-boxes"


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def score(method: str, model, x, y, s, a) -> dict:
    import quantus

    import rtsal

    kwargs = {"method": method}
    common = {"explain_func": rtsal.explain_func, "explain_func_kwargs": kwargs}
    row: dict = {"method": method}
    t0 = time.perf_counter()
    masks = rtsal.explain_func(model, x, y, method=method).reshape(len(x), -1)
    row["explain_seconds"] = time.perf_counter() - t0
    row["single_maximum"] = int(((masks == masks.max(1, keepdims=True)).sum(1) == 1).sum())
    row["area"] = float(masks.mean())

    t0 = time.perf_counter()
    pg = quantus.PointingGame(disable_warnings=True)
    row["pointing"] = np.asarray(
        pg(model=model, x_batch=x, y_batch=y, s_batch=s, batch_size=a.batch_size, **common),
        dtype=float,
    ).tolist()

    np.random.seed(a.seed)
    fc = quantus.FaithfulnessCorrelation(
        nr_runs=a.nr_runs,
        subset_size=a.subset_size,
        return_aggregate=False,
        disable_warnings=True,
    )
    row["faithfulness_correlation"] = list(
        map(float, fc(model=model, x_batch=x, y_batch=y, batch_size=a.batch_size, **common))
    )

    if a.regions:
        np.random.seed(a.seed)
        rp = quantus.RegionPerturbation(
            patch_size=a.patch_size, regions_evaluation=a.regions, disable_warnings=True
        )
        curves = rp(model=model, x_batch=x, y_batch=y, batch_size=a.batch_size, **common)
        row["region_perturbation_aopc"] = [float(np.mean(c)) for c in curves]
    row["seconds"] = time.perf_counter() - t0 + row["explain_seconds"]
    return row


def markdown(rows: list[dict], a, command: str, n: int, top1: int, machine: str) -> str:
    header = (
        "| method | photos | PointingGame ↑ | FaithfulnessCorrelation ↑ | "
        + ("RegionPerturbation AOPC ↑ | " if a.regions else "")
        + "single maximum | mean attribution | seconds |"
    )
    lines = [
        "## Quantus scores: masking model and Grad-CAM",
        "",
        f"`{command}`",
        "",
        f"{n} ImageNet validation photos with exact boxes (seeded sample, seed {a.seed}), "
        f"224 × 224, their ground-truth classes (the black box's top-1 on {top1} of them); "
        "the model is the EfficientNet-Lite0 black box, explanations come through "
        "`rtsal.explain_func`. PointingGame: share of photos whose attribution maximum is "
        f"inside a box. FaithfulnessCorrelation: {a.nr_runs} random subsets of "
        f"{a.subset_size} input values each, logits"
        + (
            f". RegionPerturbation: {a.regions} patches of {a.patch_size} px, most relevant "
            "first, mean fall in the class's probability"
            if a.regions
            else ""
        )
        + f". Mean ± standard error over the photos; {machine}.",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for r in rows:
        cells = [r["method"], str(n)]
        for key in ("pointing", "faithfulness_correlation", "region_perturbation_aopc"):
            if key in r:
                m, se = mean_se(r[key])
                cells.append(f"{m:.3f} ± {se:.3f}")
        cells += [f"{r['single_maximum']}/{n}", f"{r['area']:.3f}", f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA), help="a boxes.json or the folder holding it")
    ap.add_argument("--photos", type=int, default=100, help="how many photos (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="masker,gradcam")
    ap.add_argument("--nr-runs", type=int, default=20)
    ap.add_argument("--subset-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=28)
    ap.add_argument("--regions", type=int, default=16, help="0: no RegionPerturbation")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--out", default=None, help="update this Markdown file's section")
    ap.add_argument("--json", default=None, help="write the per-photo scores here")
    a = ap.parse_args()

    import quantus
    import torch

    import rtsal
    from rtsal.data.annotations import read_boxes
    from rtsal.integrations.quantus import box_batch

    data = Path(a.data)
    names = sorted(read_boxes(data))
    if a.photos:
        names = sorted(random.Random(a.seed).sample(names, min(a.photos, len(names))))
    model = rtsal.create_black_box("efficientnet_lite0")
    x, y, s = box_batch(data, model, names)
    with torch.no_grad():
        top1 = int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    rows = []
    for method in a.methods.split(","):
        row = score(method, model, x, y, s, a)
        rows.append(row)
        summary = {k: v if not isinstance(v, list) else mean_se(v)[0] for k, v in row.items()}
        print(json.dumps(summary), flush=True)

    default = "../shared/data/imagenet-val-boxes"
    shown = [arg if arg != str(DATA) else default for arg in sys.argv[1:]]
    command = "python bench/quantus_scores.py " + " ".join(shlex.quote(arg) for arg in shown)
    machine = (
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"Quantus {quantus.__version__}, Python {platform.python_version()}"
    )
    text = markdown(rows, a, command.strip(), len(names), top1, machine)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"command": command, "names": names, "rows": rows}))
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            out.write_text("# Quantus scores\n")
        write_section(out, "bench/quantus_scores.py", text)


if __name__ == "__main__":
    main()
