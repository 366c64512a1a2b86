"""Every explanation method scored by the same protocol, one `rtsal metric` run per method; the
table (with each row's command) goes into docs/results.md between markers for the suite.

    python bench/results.py canvas --data runs/canvas-fm --checkpoint runs/canvas-masker \
        --limit 300
    python bench/results.py imagenet --files runs/lite0-masker-ft3/holdout.txt --limit 180
    python bench/results.py imagenet-boxes --data ../shared/data/imagenet-val-boxes --limit 629

``canvas`` scores localisation, saliency metric, pointing, deletion/insertion and pixel metrics
(the canvas benchmark has boxes and masks); ``imagenet`` the saliency metric (no boxes);
``imagenet-boxes`` the paper's protocol on ImageNet-val photos with exact boxes (a folder with a
``boxes.json``), each photo resized to the black box's 224×224: localisation error, MaxBoxAccV2,
saliency metric, pointing, deletion/insertion and absent-class mask area.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CANVAS_METHODS = [
    "masker",
    "gradient",
    "gradcam",
    "guided-backprop",
    "iterative-mask",
    "contrast",
    "centre-box",
    "max-box",
    "gt-box",
]
IMAGENET_METHODS = [m for m in CANVAS_METHODS if m != "gt-box"]
BOXES_METHODS = [
    "masker",
    "gradcam",
    "gradient",
    "guided-backprop",
    "centre-box",
    "max-box",
    "gt-box",
]


def _method(cmd: list[str]) -> str:
    return cmd[cmd.index("--method") + 1] if "--method" in cmd else "masker"


def _shipped_digest() -> str:
    """The shipped model's weights, so a cached row of the default model is not reused after
    the shipped model changes."""
    from rtsal.engine.checkpoint import default_checkpoint

    data = (default_checkpoint() / "model.safetensors").read_bytes()
    return hashlib.sha1(data).hexdigest()[:12]


def run(cmd: list[str], cache: Path | None = None) -> dict:
    shown = "rtsal " + " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {shown}", file=sys.stderr, flush=True)
    identity = shown
    if "--checkpoint" not in cmd and _method(cmd) == "masker":  # the shipped model: which one
        identity += " @ " + _shipped_digest()
    key = cache / (hashlib.sha1(identity.encode()).hexdigest()[:16] + ".json") if cache else None
    if key is not None and key.exists():  # this exact command ran before: reuse its summary
        print("  (kept from an earlier run)", file=sys.stderr, flush=True)
        return json.loads(key.read_text())
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "rtsal", *cmd, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
    )
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {shown}\n{p.stderr[-2000:]}")
    summary = json.loads(p.stdout)
    summary["command"] = shown
    summary["wall_seconds"] = time.perf_counter() - t0
    print(f"  done in {summary['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps(summary))
    return summary


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def num(v, d: int = 3) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def canvas_table(rows: list[dict]) -> str:
    head = (
        "| method | images | loc. error % ↓ | MaxBoxAcc % ↑ | MaxBoxAccV2 % ↑ | "
        "saliency metric ↓ | pointing % ↑ | deletion AUC ↓ | insertion AUC ↑ | max F_β ↑ | "
        "MAE ↓ | s / image |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method']} | {r['images']} | {pct(r['localization_error'])} | "
        f"{pct(r['max_box_acc'])} | "
        f"{pct(r['max_box_acc_v2'])} | {num(r['saliency'])} | {pct(r['pointing'])} | "
        f"{num(r['deletion'])} | {num(r['insertion'])} | {num(r['max_f'])} | {num(r['mae'])} | "
        f"{num(r['seconds_per_image'], 4)} |\n"
        for r in rows
    )
    return head + body


def imagenet_table(rows: list[dict]) -> str:
    head = (
        "| method | images | saliency metric ↓ | crop area | p(crop) | f_c(X) | f_c(X·M) | "
        "f_c(X·(1−M)) | area, true class | area, absent class | s / image |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method']} | {r['images']} | {num(r['saliency'])} | {num(r['crop_area'])} | "
        f"{num(r['crop_probability'])} | {num(r['p_image'])} | {num(r['p_image_times_mask'])} | "
        f"{num(r['p_image_times_inverse'])} | {num(r['area'])} | {num(r['area_absent'])} | "
        f"{num(r['seconds_per_image'], 3)} |\n"
        for r in rows
    )
    return head + body


def boxes_table(rows: list[dict]) -> str:
    head = (
        "| method | images | loc. error % at 0.5 ↓ | best-threshold error % (threshold) | "
        "MaxBoxAccV2 % ↑ | saliency metric ↓ | pointing % ↑ | deletion AUC ↓ | "
        "insertion AUC ↑ | f_c(X·M) | f_c(X·(1−M)) | area, true class | area, absent class |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def best(r: dict) -> str:
        if r.get("max_box_acc") is None:
            return "–"
        return f"{100 * (1 - r['max_box_acc']):.1f} ({r['max_box_acc_threshold']:.2f})"

    body = "".join(
        f"| {r['method']} | {r['images']} | {pct(r.get('localization_error'))} | {best(r)} | "
        f"{pct(r.get('max_box_acc_v2'))} | {num(r.get('saliency'))} | {pct(r.get('pointing'))} | "
        f"{num(r.get('deletion'))} | {num(r.get('insertion'))} | "
        f"{num(r['p_image_times_mask'])} | {num(r['p_image_times_inverse'])} | "
        f"{num(r['area'])} | {num(r.get('area_absent'))} |\n"
        for r in rows
    )
    return head + body


def commands(rows: list[dict]) -> str:
    return "\n".join(f"    {r['command']}   # {r['wall_seconds']:.0f} s" for r in rows) + "\n"


def write_section(path: Path, suite: str, text: str) -> None:
    begin, end = f"<!-- results:{suite}:begin -->", f"<!-- results:{suite}:end -->"
    doc = path.read_text() if path.exists() else "# Results\n\n"
    block = f"{begin}\n{text}{end}"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", choices=["canvas", "imagenet", "imagenet-boxes"])
    ap.add_argument(
        "--data",
        help="canvas: the data set folder (rtsal canvas OUT); imagenet-boxes: a folder of photos "
        "with boxes.json",
    )
    ap.add_argument(
        "--label", default=None, help="row name for the masker (e.g. the checkpoint's name)"
    )
    ap.add_argument(
        "--metrics",
        default="saliency,localization,pointing,deletion,insertion",
        help="imagenet-boxes: what to score",
    )
    ap.add_argument("--files", help="imagenet: file listing the held-out photos")
    ap.add_argument("--checkpoint", help="masking model (default: the shipped one)")
    ap.add_argument(
        "--masker",
        action="append",
        default=[],
        help="LABEL=CHECKPOINT: one more masking-model row (repeatable)",
    )
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--methods", default=None, help="comma-separated subset")
    ap.add_argument(
        "--method-limit",
        action="append",
        default=[],
        help="METHOD=N: fewer images for a slow method",
    )
    ap.add_argument("--steps", type=int, default=32, help="deletion/insertion steps")
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--section", default=None, help="markers to write between (default: suite)")
    ap.add_argument("--json-out", default=None, help="also keep the raw summaries here")
    ap.add_argument(
        "--cache",
        default="runs/results/cache",
        help="summaries of commands already run are kept here and reused ('' to always run)",
    )
    a = ap.parse_args()
    methods = {"canvas": CANVAS_METHODS, "imagenet": IMAGENET_METHODS}.get(a.suite, BOXES_METHODS)
    if a.methods:
        methods = a.methods.split(",")
    limits = {k: int(v) for k, v in (x.split("=") for x in a.method_limit)}
    ckpt = ["--checkpoint", a.checkpoint] if a.checkpoint else []
    rows = []
    extra = [tuple(x.split("=", 1)) for x in a.masker]
    jobs = [(m, ckpt, a.label if m == "masker" else None) for m in methods]
    jobs += [("masker", ["--checkpoint", path], label) for label, path in extra]
    for m, ckpt, label in jobs:
        n = str(limits.get(m, a.limit))
        if a.suite == "canvas":
            d = Path(a.data)
            cmd = [
                "metric",
                "--data",
                str(d / "test"),
                "--boxes",
                str(d / "annotations"),
                "--pixel-masks",
                str(d / "masks"),
                "--metrics",
                "all",
                "--steps",
                str(a.steps),
                "--limit",
                n,
                *ckpt,
                "--method",
                m,
            ]
        elif a.suite == "imagenet-boxes":
            d = Path(a.data)
            cmd = [
                "metric",
                "--data",
                str(d),
                "--boxes",
                str(d / "boxes.json"),
                "--resize",
                "square",
                "--metrics",
                a.metrics,
                "--steps",
                str(a.steps),
                "--limit",
                n,
                *ckpt,
                "--method",
                m,
            ]
        else:
            cmd = ["metric", "--files", a.files, "--limit", n, *ckpt, "--method", m]
        row = run(cmd, Path(a.cache) if a.cache else None)
        if label:
            row["method"] = f"masker ({label})"
        rows.append(row)
    tables = {"canvas": canvas_table, "imagenet": imagenet_table, "imagenet-boxes": boxes_table}
    table = tables[a.suite](rows)
    import torch

    machine = f"{os.cpu_count()} CPU cores, torch {torch.__version__}"
    text = (
        f"{table}\nMeasured {time.strftime('%Y-%m-%d')} on {machine}; each row by:\n\n"
        f"{commands(rows)}\n"
    )
    write_section(REPO / a.out, a.section or a.suite, text)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(rows, indent=1))
    print(table)


if __name__ == "__main__":
    main()
