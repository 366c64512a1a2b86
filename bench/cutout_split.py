"""A validation split with exact boxes at full resolution, for choosing masking-model checkpoints
by localisation (``rtsal train --val-boxes OUT``): photo cut-outs (RGBA, the object only) pasted
onto photos of real scenes, the box being the cut-out's opaque pixels:

    python bench/cutout_split.py ~/.cache/rtsal-data/tuxpaint/usr/share/tuxpaint/stamps \
        ~/.cache/rtsal-data/bsds/BSDS500/images --out ~/.cache/rtsal-data/cutout-val

Cut-outs: Tux Paint's photo stamps (Debian package ``tuxpaint-stamps-default``; drawings,
under ``cartoon`` and ``symbols`` folders, are skipped). Scenes: BSDS500's 500 photos
(``seyed-mohammadreza-mousavi/HMEGS-BSDS500-Dataset``). The black box names each cut-out's
class: its top-1 on the cut-out alone (on grey, filling most of the frame), kept at
``--min-confidence``. Each kept cut-out is pasted ``--per-stamp`` times, at a random size (its
box covering ``--min-area`` to ``--max-area`` of the picture) and place on a random square crop
of a random scene; a composite is kept only when the black box's top-1 on it is still the
cut-out's class (the class's evidence is the object, not the scene). OUT gets the composites
(JPEG, the black box's input size) and a ``boxes.json`` in the form of
``imagenet-val-boxes/boxes.json`` (``{file: {label, class_name, boxes, source}}``, boxes with
``x1``/``y1`` exclusive; the class is the label, ``class_name`` is for reading).

Unlike Tiny ImageNet's 64-px photos the objects are seen at the model's own resolution with
exact edges; unlike real photos the object's context is a random scene.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SKIP = ("cartoon", "symbols")


def cutouts(root: Path) -> list[Path]:
    """Photo stamps: RGBA PNGs outside drawing folders, sorted."""
    return sorted(
        p
        for p in root.rglob("*.png")
        if not any(s in p.relative_to(root).as_posix().lower() for s in SKIP)
    )


def load_cutout(path: Path, min_side: int = 64) -> Image.Image | None:
    """The stamp cropped to its opaque pixels, or None (no transparency, or too small)."""
    try:
        im = Image.open(path).convert("RGBA")
    except OSError:
        return None
    alpha = np.asarray(im)[..., 3]
    if alpha.min() > 127:  # no transparency: not a cut-out
        return None
    ys, xs = np.nonzero(alpha > 127)
    if len(xs) == 0:
        return None
    im = im.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return im if min(im.size) >= min_side else None


def pasted_size(cut: Image.Image, side: float) -> tuple[int, int]:
    """(width, height) of the cut-out resized so its longer side is ``side`` px."""
    scale = side / max(cut.size)
    return max(1, round(cut.width * scale)), max(1, round(cut.height * scale))


def paste(
    scene: Image.Image, cut: Image.Image, side: float, x: int, y: int
) -> tuple[Image.Image, list[int]]:
    """The cut-out resized so its longer side is ``side`` px, pasted at (x, y); the box of its
    opaque pixels (x1, y1 exclusive)."""
    w, h = pasted_size(cut, side)
    small = cut.resize((w, h), Image.LANCZOS)
    out = scene.convert("RGB").copy()
    out.paste(small, (x, y), small)
    alpha = np.zeros((out.height, out.width), bool)
    alpha[y : y + h, x : x + w] = np.asarray(small)[..., 3] > 127
    ys, xs = np.nonzero(alpha)
    return out, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def square_crop(im: Image.Image, size: int, rng: random.Random) -> Image.Image:
    s = min(im.size)
    x, y = rng.randint(0, im.width - s), rng.randint(0, im.height - s)
    return im.convert("RGB").crop((x, y, x + s, y + s)).resize((size, size), Image.BICUBIC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stamps", type=Path, help="Tux Paint's stamps folder")
    ap.add_argument("scenes", type=Path, help="a folder of scene photos (searched recursively)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--blackbox", default="efficientnet_lite0")
    ap.add_argument("--per-stamp", type=int, default=2)
    ap.add_argument("--min-confidence", type=float, default=0.3)
    ap.add_argument("--min-area", type=float, default=0.08)
    ap.add_argument("--max-area", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from rtsal.data.images import pil_to_tensor
    from rtsal.registry.blackbox import create_black_box

    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    bb = create_black_box(a.blackbox).eval()
    size = bb.input_size[0]

    def predict(im: Image.Image) -> tuple[int, float]:
        x = pil_to_tensor(im)[None]
        with torch.no_grad():
            p = bb(x).softmax(1)[0]
        return int(p.argmax()), float(p.max())

    scenes = sorted(p for p in a.scenes.rglob("*.jpg"))
    if not scenes:
        sys.exit(f"no .jpg scenes under {a.scenes}")
    a.out.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict] = {}
    stats = {"stamps": 0, "cut-outs": 0, "named": 0, "kept": 0}
    for path in cutouts(a.stamps):
        stats["stamps"] += 1
        cut = load_cutout(path)
        if cut is None:
            continue
        stats["cut-outs"] += 1
        w, h = cut.size
        side = 0.8 * size
        scale = side / max(w, h)
        x0, y0 = round((size - w * scale) / 2), round((size - h * scale) / 2)
        grey, _ = paste(Image.new("RGB", (size, size), (128, 128, 128)), cut, side, x0, y0)
        cls, prob = predict(grey)
        if prob < a.min_confidence:
            continue
        stats["named"] += 1
        for _copy in range(a.per_stamp):
            for _attempt in range(5):
                area = rng.uniform(a.min_area, a.max_area)  # of the box, of the picture
                bw = (area * w / h) ** 0.5 * size
                side = min(size, max(bw, bw * h / w))  # the longer side of the pasted cut-out
                scene = square_crop(Image.open(rng.choice(scenes)), size, rng)
                bw, bh = pasted_size(cut, side)
                x, y = rng.randint(0, size - bw), rng.randint(0, size - bh)
                picture, box = paste(scene, cut, side, x, y)
                top, _ = predict(picture)
                if top == cls:
                    break
            else:
                continue
            name = f"cutout_{stats['kept']:04d}.jpg"
            picture.save(a.out / name, quality=95)
            table[name] = {
                "label": cls,
                "class_name": bb.class_names[cls],  # for reading; the label is the class
                "boxes": [box],
                "source": path.relative_to(a.stamps).as_posix(),
            }
            stats["kept"] += 1
    (a.out / "boxes.json").write_text(json.dumps(table, indent=1) + "\n")
    classes = len({e["label"] for e in table.values()})
    print(
        f"{stats['stamps']} stamps, {stats['cut-outs']} photo cut-outs, {stats['named']} named by "
        f"the black box at >= {a.min_confidence}; wrote {stats['kept']} composites of {classes} "
        f"classes and their boxes to {a.out}"
    )


if __name__ == "__main__":
    main()
