"""Ground-truth boxes from annotation files: Pascal VOC / ImageNet XML (a file or a folder),
COCO JSON, per-image box JSON (``imagenet-val-boxes/boxes.json``) and a plain CSV, each read
into ``{image file name: [(class name, Box), ...]}``; malformed input raises one
:class:`~rtsal.errors.DataError` naming the file and the place.

Boxes are rtsal's ``Box = (x0, y0, x1, y1)`` (:mod:`rtsal.boxes`): 0-based pixel indices, x1
and y1 exclusive; fractional edges are rounded half up.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rtsal.boxes import Box
from rtsal.errors import DataError

Annotations = dict[str, list[tuple[str, Box]]]


def _number(text: Any, where: str, field: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {field} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {field} is {text!r}, not a finite number")
    return value


def _round(v: float) -> int:
    return math.floor(v + 0.5)


def _checked_box(box: Box, where: str, shown: str) -> Box:
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"{where}: empty box {shown} (needs x1 > x0 and y1 > y0)")
    return box


def _voc_objects(path: Path, skip_difficult: bool) -> tuple[str, list[tuple[str, Box]]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: not valid XML ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    name_el = root.find("filename")
    image = name_el.text.strip() if name_el is not None and name_el.text else path.stem
    objects: list[tuple[str, Box]] = []
    for k, obj in enumerate(root.iter("object"), start=1):
        where = f"{path}: object {k}"
        cls = (obj.findtext("name") or "").strip()
        if not cls:
            raise DataError(f"{where} has no <name>")
        where = f"{path}: object {k} ({cls})"
        if skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{where} has no <bndbox>")
        vals = {}
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = bnd.findtext(tag)
            if text is None:
                raise DataError(f"{where}: <bndbox> has no <{tag}>")
            vals[tag] = _round(_number(text.strip(), where, f"<{tag}>"))
        # VOC pixels are 1-based and inclusive: columns xmin..xmax are 0-based xmin-1..xmax-1,
        # i.e. the exclusive box [xmin - 1, xmax).
        box = (vals["xmin"] - 1, vals["ymin"] - 1, vals["xmax"], vals["ymax"])
        shown = "xmin={xmin} ymin={ymin} xmax={xmax} ymax={ymax}".format(**vals)
        objects.append((cls, _checked_box(box, where, shown)))
    return image, objects


def read_voc_xml(path: str | Path, *, skip_difficult: bool = False) -> Annotations:
    """Boxes of one Pascal VOC / ImageNet (ILSVRC) annotation file.

    The key is the file's ``<filename>`` as written (ImageNet's carry no extension, e.g.
    ``ILSVRC2012_val_00000001``; ``boxes_for`` matches such names by stem), or the XML file's
    stem when it has none. Each ``<object>`` gives ``(<name>, box)``.

    Coordinates: VOC's ``<bndbox>`` holds 1-based, inclusive pixel indices, so
    ``xmin..xmax`` becomes rtsal's 0-based, exclusive ``(xmin - 1, ymin - 1, xmax, ymax)`` (the
    width ``xmax - xmin + 1`` is kept). ImageNet's XML follows the same format and is converted
    the same way. Fractional values (a few VOC 2012 files) are rounded half up.
    """
    image, objects = _voc_objects(Path(path), skip_difficult)
    return {image: objects}


def read_voc_dir(directory: str | Path, *, skip_difficult: bool = False) -> Annotations:
    """All ``*.xml`` files of ``directory`` (not recursive), read with ``read_voc_xml``."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"annotation folder not found: {root}")
    out: Annotations = {}
    files = sorted(root.glob("*.xml"))
    if not files:
        raise DataError(f"{root}: no .xml annotation files")
    for f in files:
        image, objects = _voc_objects(f, skip_difficult)
        out.setdefault(image, []).extend(objects)
    return out


def _require(entry: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{where} is not an object")
    for key in keys:
        if key not in entry:
            raise DataError(f"{where} has no {key!r}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def read_coco_json(path: str | Path, *, skip_crowd: bool = False) -> Annotations:
    """Boxes of a COCO instances file (``images``, ``annotations`` with ``bbox``,
    ``categories``), keyed by each image's ``file_name``; images without annotations map to [].

    COCO's ``bbox`` is ``[x, y, width, height]`` in continuous pixel coordinates (pixel i spans
    [i, i + 1)); the box is ``(x, y, x + width, y + height)`` with each edge rounded half up.
    ``skip_crowd`` drops ``iscrowd`` regions.
    """
    path = Path(path)
    return _coco_annotations(_read_json(path), path, skip_crowd)


def _coco_annotations(data: Any, path: Path, skip_crowd: bool = False) -> Annotations:
    _require(data, ("images", "annotations", "categories"), f"{path}: the top level")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} is not a list")
    categories: dict[Any, str] = {}
    for k, cat in enumerate(data["categories"]):
        _require(cat, ("id", "name"), f"{path}: categories[{k}]")
        categories[cat["id"]] = str(cat["name"])
    files: dict[Any, str] = {}
    out: Annotations = {}
    for k, im in enumerate(data["images"]):
        _require(im, ("id", "file_name"), f"{path}: images[{k}]")
        files[im["id"]] = str(im["file_name"])
        out.setdefault(files[im["id"]], [])
    for k, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{k}]"
        _require(ann, ("image_id", "category_id", "bbox"), where)
        if ann["image_id"] not in files:
            raise DataError(f"{where}: image_id {ann['image_id']!r} is not among the images")
        if ann["category_id"] not in categories:
            raise DataError(f"{where}: category_id {ann['category_id']!r} is not a category")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (_number(v, where, f"bbox[{i}]") for i, v in enumerate(bbox))
        if skip_crowd and ann.get("iscrowd", 0):
            continue
        box = (_round(x), _round(y), _round(x + w), _round(y + h))
        box = _checked_box(box, where, f"bbox={bbox!r}")
        out[files[ann["image_id"]]].append((categories[ann["category_id"]], box))
    return out


CSV_COLUMNS = ("image", "class", "x0", "y0", "x1", "y1")


def read_box_csv(path: str | Path) -> Annotations:
    """Boxes of a CSV file with a header naming the columns ``image,class,x0,y0,x1,y1`` (in any
    order; other columns are ignored), one box per row, in rtsal's convention: 0-based pixel
    indices, x1 and y1 exclusive. Integer coordinates (``3`` or ``3.0``) are expected;
    fractional ones are rounded half up."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"{path}: the header must name the columns {','.join(CSV_COLUMNS)} "
                    f"(missing: {', '.join(missing)})"
                )
            reader.fieldnames = header
            out: Annotations = {}
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                values = {c: (row.get(c) or "").strip() for c in CSV_COLUMNS}
                empty = [c for c in CSV_COLUMNS if not values[c]]
                if empty:
                    raise DataError(f"{where}: missing {', '.join(empty)}")
                x0, y0, x1, y1 = (_round(_number(values[c], where, c)) for c in CSV_COLUMNS[2:])
                box = _checked_box((x0, y0, x1, y1), where, f"({x0}, {y0}, {x1}, {y1})")
                out.setdefault(values["image"], []).append((values["class"], box))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    return out


def read_image_box_json(path: str | Path) -> Annotations:
    """Boxes of a per-image JSON file: ``{file: {"synset" | "label" | "name": ..., "boxes":
    [[x0, y0, x1, y1], ...]}}`` in the file's own pixels (the form of ImageNet-val box sets
    such as ``imagenet-val-boxes/boxes.json``). The class is named by its synset when given
    (unambiguous), else by its name, else by its index; edges are rounded half up."""
    path = Path(path)
    return _image_box_annotations(_read_json(path), path)


def _image_box_annotations(data: Any, path: Path) -> Annotations:
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level is not an object")
    out: Annotations = {}
    for image, entry in data.items():
        where = f"{path}: {image!r}"
        _require(entry, ("boxes",), where)
        cls = next((entry[k] for k in ("synset", "name", "label") if k in entry), None)
        if cls is None:
            raise DataError(f"{where} names no class (synset, name or label)")
        if not isinstance(entry["boxes"], list):
            raise DataError(f"{where}: 'boxes' is not a list")
        boxes = []
        for k, b in enumerate(entry["boxes"]):
            if not isinstance(b, list) or len(b) != 4:
                raise DataError(f"{where}: boxes[{k}] must be [x0, y0, x1, y1], got {b!r}")
            x0, y0, x1, y1 = (_round(_number(v, where, f"boxes[{k}]")) for v in b)
            boxes.append((str(cls), _checked_box((x0, y0, x1, y1), where, repr(b))))
        out[str(image)] = boxes
    return out


def _read_json_boxes(path: Path) -> Annotations:
    """COCO instances, or per-image boxes (:func:`read_image_box_json`), told apart by shape."""
    data = _read_json(path)
    if isinstance(data, dict) and "annotations" not in data and "images" not in data:
        return _image_box_annotations(data, path)
    return _coco_annotations(data, path)


def read_boxes(path: str | Path) -> Annotations:
    """Read ground-truth boxes by form: a folder of VOC XML files, ``.xml``, ``.json`` (COCO, or
    per-image boxes as in ``imagenet-val-boxes/boxes.json``) or ``.csv``. A folder holding a
    ``boxes.json`` is read as that file."""
    p = Path(path)
    if p.is_dir() and (p / "boxes.json").is_file():
        return _read_json_boxes(p / "boxes.json")
    if p.is_dir():
        return read_voc_dir(p)
    readers = {".xml": read_voc_xml, ".json": _read_json_boxes, ".csv": read_box_csv}
    reader = readers.get(p.suffix.lower())
    if reader is None:
        raise DataError(f"{p}: unknown box file type (expected a folder, .xml, .json or .csv)")
    if not p.exists():
        raise DataError(f"box file not found: {p}")
    return reader(p)


def annotation_entries(
    annotations: Mapping[str, Sequence[tuple[str, Box]]], image: str
) -> Sequence[tuple[str, Box]]:
    """The (class name, box) entries of ``image``; [] for an image without annotations.

    ``image`` may be a path: it is looked up as given, then by file name, then by stem (ImageNet's
    XML names images without extension).
    """
    name = Path(image).name
    for key in (image, name, Path(name).stem):
        if key in annotations:
            return annotations[key]
    return []


def boxes_for(
    annotations: Mapping[str, Sequence[tuple[str, Box]]], image: str, class_name: str | None = None
) -> list[Box]:
    """The boxes of ``image`` (looked up as :func:`annotation_entries` does), only those of
    ``class_name`` if given."""
    entries = annotation_entries(annotations, image)
    return [box for cls, box in entries if class_name is None or cls == class_name]
