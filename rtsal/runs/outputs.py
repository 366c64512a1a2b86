"""What an explain run writes: for each image and class the mask (PNG, and .npy if asked),
the overlay and the Figure-1 pair (image x mask, image x (1 - mask)), each file whole or absent;
for the run, ``explanations.jsonl`` and the contact sheet ``index.html``."""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rtsal.files import atomic_write_bytes
from rtsal.inference.explainer import Explanation, slug
from rtsal.inference.visualize import overlay
from rtsal.runs.manifest import Finished


@dataclass
class ExplainSummary:
    explained: int = 0
    failed: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def shared_slugs(class_names: Sequence[str]) -> set[str]:
    """File-name slugs that more than one class has (ImageNet has two 'crane's, say)."""
    counts = Counter(slug(name) for name in class_names)
    return {s for s, n in counts.items() if n > 1}


# The files written for one image and class, by kind: how their names end.
OUTPUT_KINDS = {
    "mask": ".mask.png",
    "overlay": ".overlay.jpg",
    "pair": ".pair.jpg",
    "npy": ".mask.npy",  # with --save-npy
}
OUTPUT_SUFFIXES = tuple(OUTPUT_KINDS.values())


def output_files(
    out: Path, stem: str, e: Explanation, save_npy: bool, shared: set[str] | frozenset = frozenset()
) -> dict[str, str]:
    """The files written for one image and class: mask PNG, overlay, Figure-1 pair (and .npy).
    A class whose name's slug another class shares gets its index too (``crane_134``), so no
    two classes write the same file."""
    name = slug(e.class_name)
    base = f"{stem}.{name}_{e.class_index}" if name in shared else f"{stem}.{name}"
    kinds = [k for k in OUTPUT_KINDS if k != "npy" or save_npy]
    return {k: str(out / f"{base}{OUTPUT_KINDS[k]}") for k in kinds}


# Rows of the image drawn at a time for the overlay and the pair: their float working memory is
# that many rows' worth (about 100 MB for a 10,000-pixel-wide image), whatever the image's height.
STRIP_ROWS = 512


def save_outputs(files: dict[str, str], im: Image.Image, e: Explanation) -> None:
    """Each file written whole under a temporary name, on disk, then renamed into place: a kill
    never leaves a partial image behind. The overlay and the pair are drawn ``STRIP_ROWS`` rows
    at a time into 8-bit arrays (the same numbers as drawing them whole), so a large image costs
    its 8-bit outputs and one strip of floats rather than several float copies of itself."""
    pixels = np.asarray(im, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    mask = e.mask  # (H, W), read once
    mask_img = Image.fromarray((mask.numpy() * 255 + 0.5).astype(np.uint8), mode="L")
    _save(mask_img, files["mask"])
    del mask_img
    gap = max(4, width // 50)
    over = np.empty((height, width, 3), dtype=np.uint8)
    pair = np.empty((height, 2 * width + gap, channels), dtype=np.uint8)
    for top in range(0, height, STRIP_ROWS):
        rows = slice(top, min(height, top + STRIP_ROWS))
        x = torch.from_numpy(pixels[rows].copy()).permute(2, 0, 1).float().div_(255)  # (C, h, W)
        m = mask[rows][None]  # (1, h, W)
        over[rows] = np.asarray(overlay(x, m))
        both = torch.cat([x * m, torch.ones(channels, x.shape[1], gap), x * (1 - m)], dim=2)
        pair[rows] = (both.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    _save(Image.fromarray(over), files["overlay"], quality=90)
    del over
    _save(Image.fromarray(pair[..., 0] if channels == 1 else pair), files["pair"], quality=90)
    del pair
    if "npy" in files:
        buf = io.BytesIO()
        np.save(buf, mask.numpy().astype(np.float32))
        atomic_write_bytes(Path(files["npy"]), buf.getvalue())


def _save(im: Image.Image, path: str, **options: Any) -> None:
    buf = io.BytesIO()
    im.save(buf, format=Image.registered_extensions()[Path(path).suffix.lower()], **options)
    atomic_write_bytes(Path(path), buf.getvalue())


def record_for(
    path: Path, im: Image.Image, e: Explanation, files: dict[str, str]
) -> dict[str, Any]:
    return {
        "input": str(path),
        "width": im.width,
        "height": im.height,
        "class_index": e.class_index,
        "class_name": e.class_name,
        "p_image": round(e.p_image, 6),
        "p_image_times_mask": round(e.p_preserved, 6),
        "p_image_times_inverse_mask": round(e.p_destroyed, 6),
        "mask_area": round(e.area, 6),
        "box": list(e.box) if e.box else None,
        "files": files,
    }


def write_contact_sheet(out: Path, summary: ExplainSummary) -> Path:
    """``index.html``: one row per image and class with its overlay, mask and pair; and
    ``explanations.jsonl``, one record per line."""
    _write_view(out, summary)
    return out / "index.html"


def _write_view(out: Path, summary: ExplainSummary) -> bool:
    """:func:`write_contact_sheet`; whether a file changed."""
    rows = []
    for r in summary.records:
        f = {k: Path(v).name for k, v in r["files"].items()}
        rows.append(
            "<tr>"
            f"<td><img src='{html.escape(f['overlay'])}'></td>"
            f"<td><img src='{html.escape(f['mask'])}'></td>"
            f"<td><img src='{html.escape(f['pair'])}'></td>"
            f"<td><b>{html.escape(r['class_name'])}</b> ({r['class_index']})<br>"
            f"{html.escape(Path(r['input']).name)}<br>"
            f"p(image) {r['p_image']:.3f}<br>p(image&times;M) {r['p_image_times_mask']:.3f}<br>"
            f"p(image&times;(1&minus;M)) {r['p_image_times_inverse_mask']:.3f}<br>"
            f"mask area {r['mask_area']:.3f}</td></tr>"
        )
    failed = "".join(f"<li>{html.escape(m)}</li>" for m in summary.failed)
    page = (
        "<!doctype html><meta charset='utf-8'><title>rtsal explanations</title>"
        "<style>body{font-family:sans-serif}img{max-height:180px}td{padding:4px;"
        "vertical-align:top}</style>"
        f"<h1>rtsal: {summary.explained} images explained</h1>"
        "<table><tr><th>overlay</th><th>mask</th><th>image &times; M | image &times; (1&minus;M)"
        "</th><th>class</th></tr>"
        + "".join(rows)
        + "</table>"
        + (f"<h2>Not explained</h2><ul>{failed}</ul>" if failed else "")
    )
    lines = "".join(json.dumps(r) + "\n" for r in summary.records)
    changed = _write_if_changed(out / "explanations.jsonl", lines.encode("utf-8"))
    return _write_if_changed(out / "index.html", page.encode("utf-8")) or changed


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically (never a torn last line), and not at all when ``path`` already holds
    ``data``: a finished folder is left as it is. Whether it was written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


VIEW_FILES = ("explanations.jsonl", "index.html")


def write_finished(out: Path, finished: Finished) -> bool:
    """``explanations.jsonl`` and ``index.html`` of every image the manifests of ``out`` (or
    the union ``finished``) hold, in the images' order, as one run writes them; whether they
    changed (a finished folder's are not written again)."""
    summary = ExplainSummary(len(finished.done), finished.errors(), finished.records(out))
    return _write_view(out, summary)
