"""A localisation benchmark with exact ground truth: real objects on larger cluttered canvases.

Each canvas holds exactly one object from Fashion-MNIST or CIFAR-10 (its class is the image's
label) at a random position and scale, on a background of a smooth colour gradient or a noise
texture with a few low-to-mid-contrast shapes (rectangles, ellipses, lines, blobs) that belong to
no class. The object's pixel mask and its tight box are known exactly:

- Fashion-MNIST items (grey on black) are cut out with their intensity as an alpha matte and
  given a random colour that contrasts with the background under them; the mask is
  ``matte > MASK_THRESHOLD`` and the matte is zero elsewhere, so no object pixel lies outside it.
- CIFAR-10 images are pasted as opaque squares; the mask is the square.

Layout written by :func:`make_canvas_dataset` (``<id>`` like ``train-000123``, unique across
splits)::

    OUT/canvas.json                 config, class names, counts, versions (written last)
    OUT/{train,test}/<class>/<id>.png   RGB canvases in class folders ("/" in names becomes "_")
    OUT/annotations/<id>.xml        Pascal VOC: one <object>, the tight box of the mask
    OUT/masks/<id>.png              8-bit mask, 255 = object
    OUT/{train,test}.csv            image,class,class_index,x0,y0,x1,y1 (0-based, exclusive ends)
    OUT/preview.png                 a grid of test canvases with their boxes

Every canvas draws from its own generator keyed by ``(seed, split, index)``: the same
configuration gives byte-identical files (with the same numpy and Pillow), and the first
canvases of a small run are those of a large one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rtsal.boxes import Box, mask_box
from rtsal.engine._rng import mix
from rtsal.errors import RtsalError, UnknownNameError

GENERATOR = "rtsal.tools.canvas"
GENERATOR_VERSION = 1
SOURCES = ("fashion-mnist", "cifar10")
SPLITS = ("train", "test")
MASK_THRESHOLD = 0.1  # matte above this is object
MATTE_GAMMA = 0.75  # makes the mid-grey insides of items more opaque
MIN_CONTRAST = 0.4  # luminance difference wanted between an item's colour and its background
MARKER = ".rtsal-canvas"  # written first: a folder holding it is a (maybe unfinished) canvas set
_OUTPUTS = (
    "canvas.json",
    "train",
    "test",
    "annotations",
    "masks",
    "train.csv",
    "test.csv",
    "preview.png",
)
_STREAM = 0x43414E56  # keeps canvas draws apart from every other use of the seed
_SUPERSAMPLE = 4  # clutter shapes are drawn at 4x and averaged down (anti-aliased edges)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class CanvasConfig:
    """What to generate. ``scale`` bounds the object's longer side as a fraction of the canvas
    side; ``data_root`` is passed to the data set reader (see ``rtsal.data.folders``)."""

    source: str = "fashion-mnist"
    size: int = 64
    train: int = 12000
    test: int = 1000
    scale: tuple[float, float] = (0.45, 0.75)
    clutter: bool = True
    seed: int = 0
    data_root: str | None = None

    def checked(self) -> CanvasConfig:
        """A copy with the source name normalised; raises ``RtsalError`` on bad values."""
        from rtsal.data.arrays import DataSpec

        named = DataSpec(self.source).named
        if named is None:
            raise UnknownNameError("canvas source", self.source, SOURCES)
        if self.size < 16:
            raise RtsalError(f"canvas size must be at least 16 pixels, got {self.size}")
        if self.train < 0 or self.test < 0 or self.train + self.test == 0:
            raise RtsalError(
                f"need a non-negative number of canvases per split and at least one in all "
                f"(train {self.train}, test {self.test})"
            )
        lo, hi = (float(v) for v in self.scale)
        if not (0 < lo <= hi <= 1):
            raise RtsalError(f"scale must satisfy 0 < low <= high <= 1, got {lo:g}, {hi:g}")
        if lo * self.size < 4:
            raise RtsalError(f"scale {lo:g} of {self.size} pixels leaves objects under 4 pixels")
        root = None if self.data_root is None else str(self.data_root)
        return CanvasConfig(
            named, self.size, self.train, self.test, (lo, hi), self.clutter, self.seed, root
        )

    def count(self, split: str) -> int:
        return self.train if split == "train" else self.test


@dataclass
class CanvasResult:
    """What was written: counts per split and per class (in class order)."""

    out_dir: Path
    source: str
    class_names: list[str]
    counts: dict[str, int]
    class_counts: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Canvas:
    """One rendered canvas: uint8 (H, W, 3) image, boolean (H, W) mask and its tight box."""

    image: np.ndarray
    mask: np.ndarray
    box: Box
    label: int


# --------------------------------------------------------------------------- names


def class_folder(name: str) -> str:
    """Folder name of a class ("T-shirt/top" -> "T-shirt_top")."""
    return name.replace("/", "_")


def canvas_id(split: str, index: int, count: int) -> str:
    """``train-000123``: at least six digits, more when the split is larger."""
    width = max(6, len(str(max(count - 1, 0))))
    return f"{split}-{index:0{width}d}"


def _split_code(split: str) -> int:
    return SPLITS.index(split)


def canvas_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of canvas ``index`` of ``split``."""
    return np.random.Generator(np.random.PCG64(mix(seed, _STREAM, _split_code(split), index)))


def source_order(seed: int, split: str, n_source: int, count: int) -> np.ndarray:
    """Which source images the canvases of a split show: a seeded permutation (repeated,
    each time reshuffled, when more canvases than source images are asked for)."""
    out = []
    for k in range(math.ceil(count / n_source) if count else 0):
        g = np.random.Generator(np.random.PCG64(mix(seed, _STREAM, 100 + _split_code(split), k)))
        out.append(g.permutation(n_source))
    return np.concatenate(out)[:count] if out else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- rendering


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ _LUMA


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1] from random hue, saturation and value."""
    h, s, v = rng.random(), rng.uniform(0.15, 0.9), rng.uniform(0.08, 0.95)
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32)


def _resize_float(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float (H, W) array to (width, height) ``size``."""
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(im.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient or a low-frequency noise texture, (size, size, 3) in [0, 1]."""
    base = _random_colour(rng)
    if rng.random() < 0.5:
        other = np.clip(base + rng.uniform(-0.3, 0.3, 3), 0, 1).astype(np.float32)
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
        t = xx * math.cos(theta) + yy * math.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        bg = base + (other - base) * t[..., None]
    else:
        cells = int(rng.integers(3, 9))
        amp = rng.uniform(0.06, 0.16)
        grid = rng.normal(0, amp / 2, (cells, cells, 3)) + rng.normal(0, amp, (cells, cells, 1))
        bg = base + np.stack([_resize_float(grid[..., c], (size, size)) for c in range(3)], -1)
    bg = bg + rng.normal(0, rng.uniform(0.005, 0.03), (size, size, 3))  # grain
    return np.clip(bg, 0, 1).astype(np.float32)


def _shape_coverage(rng: np.random.Generator, size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one random shape: rectangle, ellipse, line or blob."""
    big = size * _SUPERSAMPLE
    im = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(im)
    kind = rng.choice(["rectangle", "ellipse", "line", "blob"], p=[0.3, 0.25, 0.25, 0.2])
    cx, cy = rng.uniform(-0.1, 1.1, 2) * big
    if kind == "rectangle":
        w, h = rng.uniform(0.08, 0.45, 2) * big / 2
        a = rng.uniform(0, math.pi)
        c, s = math.cos(a), math.sin(a)
        corners = [(-w, -h), (w, -h), (w, h), (-w, h)]
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=255)
    elif kind == "ellipse":
        rx, ry = rng.uniform(0.05, 0.25, 2) * big
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "line":
        a = rng.uniform(0, math.pi)
        half = rng.uniform(0.2, 0.8) * big
        dx, dy = half * math.cos(a), half * math.sin(a)
        width = max(1, round(rng.uniform(0.6, 2.5) * _SUPERSAMPLE))
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=255, width=width)
    else:
        r0 = rng.uniform(0.06, 0.18) * big
        ks = np.arange(2, 5)
        amps = rng.uniform(0, 0.25, ks.size)
        phases = rng.uniform(0, 2 * math.pi, ks.size)
        angles = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        r = r0 * (1 + (amps * np.cos(np.outer(angles, ks) + phases)).sum(1))
        xs, ys = cx + r * np.cos(angles), cy + r * np.sin(angles)
        draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255)
    small = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255


def _add_clutter(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """Paint 3 to 7 random shapes, each a little lighter or darker than what lies under it."""
    size = bg.shape[0]
    for _ in range(int(rng.integers(3, 8))):
        cover = _shape_coverage(rng, size)
        if cover.max() <= 0:
            continue
        under = (bg * cover[..., None]).sum((0, 1)) / cover.sum()
        shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.07, 0.22)
        colour = np.clip(under + shift + rng.uniform(-0.08, 0.08, 3), 0, 1)
        a = cover[..., None] * rng.uniform(0.7, 1.0)
        bg = bg * (1 - a) + colour * a
    return bg.astype(np.float32)


def _item_matte(item: np.ndarray, side: int, flip: bool) -> np.ndarray:
    """A Fashion-MNIST item (H, W) uint8 as an alpha matte whose longer side is ``side``, cut
    to the tight box of ``matte > MASK_THRESHOLD``; the matte is zero outside that mask."""
    a = item.astype(np.float32) / 255
    on = a > MASK_THRESHOLD
    if not on.any():
        a, on = np.ones_like(a), np.ones_like(on)  # a blank item: a solid square stands in
    x0, y0, x1, y1 = mask_box(on)
    a = a[y0:y1, x0:x1]
    if flip:
        a = a[:, ::-1]
    h, w = a.shape
    f = side / max(h, w)
    a = np.clip(_resize_float(a, (max(1, round(w * f)), max(1, round(h * f)))), 0, 1)
    a = a**MATTE_GAMMA
    on = a > MASK_THRESHOLD
    if not on.any():
        on[a.shape[0] // 2, a.shape[1] // 2] = True
        a[on] = 1.0
    a[~on] = 0
    x0, y0, x1, y1 = mask_box(on)
    return a[y0:y1, x0:x1]


def _item_colour(
    rng: np.random.Generator, bg: np.ndarray, matte: np.ndarray, tries: int = 24
) -> np.ndarray:
    """A random colour whose luminance differs from the background under the item by at least
    ``MIN_CONTRAST`` at 90 % of its pixels; failing that, the best of the tries (black and
    white included)."""
    on = matte > 0
    under = _luma(bg)[on]
    best, best_score = None, -1.0
    candidates = [_random_colour(rng) for _ in range(tries)]
    candidates += [np.zeros(3, np.float32), np.ones(3, np.float32)]
    for colour in candidates:
        score = float(np.quantile(np.abs(_luma(colour) - under), 0.1))
        if score >= MIN_CONTRAST:
            return colour
        if score > best_score:
            best, best_score = colour, score
    assert best is not None
    return best


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def render_canvas(
    cfg: CanvasConfig, split: str, index: int, item: np.ndarray, label: int
) -> Canvas:
    """Canvas ``index`` of ``split`` showing ``item`` (uint8 (C, h, w) source image)."""
    rng = canvas_rng(cfg.seed, split, index)
    size = cfg.size
    lo, hi = cfg.scale
    side = min(size, max(1, round(rng.uniform(lo, hi) * size)))
    flip = bool(rng.random() < 0.5)
    if cfg.source == "fashion-mnist":
        matte = _item_matte(item[0], side, flip)
        h, w = matte.shape
    else:
        patch = Image.fromarray(np.ascontiguousarray(item.transpose(1, 2, 0)), mode="RGB")
        if flip:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        patch = patch.resize((side, side), Image.Resampling.BICUBIC)
        h = w = side
    x = int(rng.integers(0, size - w + 1))
    y = int(rng.integers(0, size - h + 1))
    if cfg.clutter:
        bg = _add_clutter(rng, _background(rng, size))
    else:
        bg = np.broadcast_to(_random_colour(rng), (size, size, 3)).astype(np.float32)
    mask = np.zeros((size, size), dtype=bool)
    if cfg.source == "fashion-mnist":
        region = bg[y : y + h, x : x + w]
        colour = _item_colour(rng, region, matte)
        a = matte[..., None]
        bg[y : y + h, x : x + w] = region * (1 - a) + colour * a
        mask[y : y + h, x : x + w] = matte > 0
        image = _quantise(bg)
    else:
        image = _quantise(bg)
        image[y : y + h, x : x + w] = np.asarray(patch)
        mask[y : y + h, x : x + w] = True
    return Canvas(image, mask, mask_box(mask), label)


# --------------------------------------------------------------------------- files


def voc_xml(filename: str, size: int, class_name: str, box: Box, provenance: str = "") -> str:
    """A Pascal VOC annotation with one object. VOC pixels are 1-based and inclusive, so the
    exclusive 0-based box (x0, y0, x1, y1) is written as xmin=x0+1, ymin=y0+1, xmax=x1, ymax=y1
    (what ``rtsal.data.annotations.read_voc_xml`` reads back as the same box)."""
    x0, y0, x1, y1 = box
    return (
        "<annotation>\n"
        f"  <filename>{escape(filename)}</filename>\n"
        f"  <source><database>{escape(provenance)}</database></source>\n"
        f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>\n"
        "  <segmented>1</segmented>\n"
        "  <object>\n"
        f"    <name>{escape(class_name)}</name>\n"
        "    <pose>Unspecified</pose>\n"
        "    <truncated>0</truncated>\n"
        "    <difficult>0</difficult>\n"
        f"    <bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>\n"
        "  </object>\n"
        "</annotation>\n"
    )


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def prepare_canvas_dir(out: str | Path) -> Path:
    """Make ``out`` ready: create it, or clear an earlier canvas data set (finished or not) in
    it. Any other non-empty folder is refused, so nothing of the user's is deleted."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise RtsalError(f"output path exists and is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not is_canvas_dir(out):
        raise RtsalError(
            f"{out} is not empty and holds no canvas data set; choose a new or empty folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("rtsal canvas data set\n")
        for name in _OUTPUTS:  # canvas.json first: a half-cleared folder reads as unfinished
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    except OSError as exc:
        raise RtsalError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    return out


def is_canvas_dir(path: str | Path) -> bool:
    """A folder written by this generator, finished (``canvas.json``) or interrupted."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    try:
        meta = json.loads((path / "canvas.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def _load_source(cfg: CanvasConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    from rtsal.data.arrays import load_cifar10, load_fashion_mnist

    loader = load_cifar10 if cfg.source == "cifar10" else load_fashion_mnist
    root = Path(cfg.data_root).expanduser() if cfg.data_root else None
    x, y = loader(root, split)
    return x.numpy(), y.numpy()


def preview_grid(
    canvases: Sequence[Canvas], class_names: Sequence[str], cols: int = 8
) -> Image.Image:
    """Canvases in a grid, enlarged to about 128 pixels, with boxes and class names."""
    size = canvases[0].image.shape[0]
    k = max(1, 128 // size)
    tile = size * k
    label_h, gap = 14, 4
    rows = math.ceil(len(canvases) / cols)
    cols = min(cols, len(canvases))
    sheet = Image.new(
        "RGB", (gap + cols * (tile + gap), gap + rows * (tile + label_h + gap)), (32, 32, 32)
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for n, c in enumerate(canvases):
        r, q = divmod(n, cols)
        left, top = gap + q * (tile + gap), gap + r * (tile + label_h + gap)
        big = Image.fromarray(c.image).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(big, (left, top))
        x0, y0, x1, y1 = c.box
        inner = [left + x0 * k, top + y0 * k, left + x1 * k - 1, top + y1 * k - 1]
        draw.rectangle([inner[0] - 1, inner[1] - 1, inner[2] + 1, inner[3] + 1], outline=(0,) * 3)
        draw.rectangle(inner, outline=(255, 220, 0))
        draw.text((left, top + tile + 1), class_names[c.label], fill=(230, 230, 230), font=font)
    return sheet


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def make_canvas_dataset(cfg: CanvasConfig, out_dir: str | Path, progress=None) -> CanvasResult:
    """Generate the data set described in the module docstring into ``out_dir``.

    ``progress`` is an optional Rich ``Progress``; one task per split is added to it.
    ``canvas.json`` is written last, so a folder without it is an unfinished run.
    """
    from rtsal import __version__
    from rtsal.data.arrays import named_class_names

    cfg = cfg.checked()
    class_names = list(named_class_names(cfg.source))
    folders = [class_folder(n) for n in class_names]
    out = prepare_canvas_dir(out_dir)
    (out / "annotations").mkdir()
    (out / "masks").mkdir()
    counts: dict[str, int] = {}
    class_counts: dict[str, list[int]] = {}
    shown: dict[str, list[Canvas]] = {}
    for split in SPLITS:
        count = cfg.count(split)
        counts[split], class_counts[split], shown[split] = count, [0] * len(class_names), []
        if count == 0:
            continue
        for f in folders:
            (out / split / f).mkdir(parents=True)
        task = progress.add_task(f"{split} canvases", total=count) if progress else None
        images, labels = _load_source(cfg, split)
        order = source_order(cfg.seed, split, len(labels), count)
        rows = []
        for i, src in enumerate(order.tolist()):
            label = int(labels[src])
            c = render_canvas(cfg, split, i, images[src], label)
            name = canvas_id(split, i, count)
            rel = f"{split}/{folders[label]}/{name}.png"
            _save_png(c.image, out / rel)
            _save_png(c.mask.astype(np.uint8) * 255, out / "masks" / f"{name}.png")
            origin = f"{cfg.source} {split} image {src}"
            xml = voc_xml(f"{name}.png", cfg.size, class_names[label], c.box, origin)
            (out / "annotations" / f"{name}.xml").write_text(xml, encoding="utf-8")
            rows.append([rel, class_names[label], label, *c.box])
            class_counts[split][label] += 1
            if len(shown[split]) < 32:
                shown[split].append(c)
            if task is not None:
                progress.advance(task)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "class", "class_index", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)
        (out / f"{split}.csv").write_text(buf.getvalue(), encoding="utf-8")
    preview = shown["test"] or shown["train"]
    preview_grid(preview, class_names).save(out / "preview.png", format="PNG")
    meta = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "rtsal_version": __version__,
        "config": {**asdict(cfg), "scale": list(cfg.scale)},
        "classes": class_names,
        "class_folders": folders,
        "counts": counts,
        "class_counts": class_counts,
        "mask_threshold": MASK_THRESHOLD,
        "boxes": "x0, y0, x1, y1: 0-based pixels, x1 and y1 exclusive (VOC XML: 1-based, "
        "inclusive)",
        "files": {
            "images": "{split}/{class folder}/{id}.png",
            "annotations": "annotations/{id}.xml",
            "masks": "masks/{id}.png (255 = object)",
            "boxes": "{split}.csv",
        },
    }
    _write_json(out / "canvas.json", meta)
    return CanvasResult(out, cfg.source, class_names, counts, class_counts)
