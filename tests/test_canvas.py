"""The canvas benchmark generator: determinism, exact boxes and masks, layout, the command."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtsal.data.annotations import read_box_csv, read_voc_dir, read_voc_xml
from rtsal.errors import RtsalError
from rtsal.tools.canvas import (
    MASK_THRESHOLD,
    MATTE_GAMMA,
    CanvasConfig,
    class_folder,
    is_canvas_dir,
    make_canvas_dataset,
    voc_xml,
)
from tests.helpers import (
    FASHION_MNIST_REASON,
    SHARED_DATA,
    assert_one_line_error,
    fashion_mnist_installed,
    run_rtsal,
)

CIFAR_TARBALL = SHARED_DATA / "cifar10-jpeg.tar.gz"
needs_fm = pytest.mark.skipif(not fashion_mnist_installed(), reason=FASHION_MNIST_REASON)
needs_cifar = pytest.mark.skipif(not CIFAR_TARBALL.exists(), reason=f"{CIFAR_TARBALL} missing")
TRAIN, TEST, SIZE = 20, 10, 64


def _generate(tmp_path_factory, name: str, **kw) -> Path:
    cfg = CanvasConfig(train=TRAIN, test=TEST, size=SIZE, **kw)
    out = tmp_path_factory.mktemp(name) / "canvas"
    make_canvas_dataset(cfg, out)
    return out


@pytest.fixture(scope="module")
def fm(tmp_path_factory) -> Path:
    if not fashion_mnist_installed():
        pytest.skip(FASHION_MNIST_REASON)
    return _generate(tmp_path_factory, "fm")


@pytest.fixture(scope="module")
def fm_plain(tmp_path_factory) -> Path:
    if not fashion_mnist_installed():
        pytest.skip(FASHION_MNIST_REASON)
    return _generate(tmp_path_factory, "fm-plain", clutter=False)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.skip(f"{CIFAR_TARBALL} missing")
    return _generate(tmp_path_factory, "cifar", source="cifar10", data_root=str(CIFAR_TARBALL))


@pytest.fixture(scope="module")
def cifar_plain(tmp_path_factory) -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.skip(f"{CIFAR_TARBALL} missing")
    return _generate(
        tmp_path_factory,
        "cifar-plain",
        source="cifar10",
        data_root=str(CIFAR_TARBALL),
        clutter=False,
    )


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _images(out: Path) -> dict[str, Path]:
    """Canvas file name -> path, over both splits."""
    return {p.name: p for split in ("train", "test") for p in (out / split).glob("*/*.png")}


def _mask(out: Path, name: str) -> np.ndarray:
    m = np.asarray(Image.open(out / "masks" / name))
    assert m.dtype == np.uint8 and set(np.unique(m).tolist()) <= {0, 255}
    return m == 255


def _origin(out: Path, name: str) -> tuple[str, int]:
    """(split, index) of the source image a canvas shows, from its annotation."""
    root = ET.parse(out / "annotations" / name.replace(".png", ".xml")).getroot()
    m = re.fullmatch(r"\S+ (train|test) image (\d+)", root.findtext("source/database") or "")
    assert m, name
    return m.group(1), int(m.group(2))


# --------------------------------------------------------------------------- determinism


@needs_fm
def test_same_seed_gives_byte_identical_files(fm, tmp_path_factory):
    again = _generate(tmp_path_factory, "fm-again")
    a, b = _all_files(fm), _all_files(again)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a)


@needs_fm
def test_other_seed_gives_other_canvases(fm, tmp_path_factory):
    other = _generate(tmp_path_factory, "fm-seed1", seed=1)
    a, b = _all_files(fm / "masks"), _all_files(other / "masks")
    assert sorted(a) == sorted(b)
    assert sum(a[k] != b[k] for k in a) >= len(a) - 1


# --------------------------------------------------------------------------- boxes and masks


@pytest.mark.slow
@pytest.mark.parametrize("dataset", [pytest.param("fm", marks=needs_fm), "cifar"])
def test_voc_boxes_are_the_tight_boxes_of_the_masks(dataset, request):
    out: Path = request.getfixturevalue(dataset)
    annotations = read_voc_dir(out / "annotations")
    images = _images(out)
    assert sorted(annotations) == sorted(images)
    for name, objects in annotations.items():
        assert len(objects) == 1
        cls, box = objects[0]
        assert box == _tight_box(_mask(out, name)), name
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        assert images[name].parent.name == class_folder(cls)  # class folder = VOC <name>


@pytest.mark.parametrize("dataset", [pytest.param("fm", marks=needs_fm), "cifar"])
def test_csv_rows_match_the_annotations(dataset, request):
    out: Path = request.getfixturevalue(dataset)
    meta = json.loads((out / "canvas.json").read_text())
    voc = read_voc_dir(out / "annotations")
    for split in ("train", "test"):
        with (out / f"{split}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == meta["counts"][split]
        for row in rows:
            name = Path(row["image"]).name
            assert (out / row["image"]).is_file()
            assert meta["classes"][int(row["class_index"])] == row["class"]
            box = tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))
            assert voc[name] == [(row["class"], box)]
        assert read_box_csv(out / f"{split}.csv") == {
            r["image"]: [(r["class"], voc[Path(r["image"]).name][0][1])] for r in rows
        }


@needs_fm
def test_fm_objects_scale_within_range(fm):
    boxes = [objects[0][1] for objects in read_voc_dir(fm / "annotations").values()]
    sides = [max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes]
    lo, hi = round(0.45 * SIZE), round(0.75 * SIZE)
    # the item is resized so its longer side is the drawn side; the thresholded edge may lose
    # a pixel or two
    assert all(lo - 2 <= s <= hi for s in sides), sides
    assert max(sides) - min(sides) >= 8  # the scale does vary


def test_cifar_objects_scale_within_range(cifar):
    for [(_, (x0, y0, x1, y1))] in read_voc_dir(cifar / "annotations").values():
        assert x1 - x0 == y1 - y0  # pasted squares
        assert round(0.45 * SIZE) <= x1 - x0 <= round(0.75 * SIZE)


@needs_fm
def test_fm_without_clutter_changes_exactly_the_mask_pixels(fm_plain):
    for name, path in _images(fm_plain).items():
        image = np.asarray(Image.open(path)).astype(int)
        mask = _mask(fm_plain, name)
        outside = image[~mask]
        background = outside[0]
        assert (outside == background).all(), name  # nothing painted off the mask
        assert (image[mask] != background).any(axis=1).all(), name  # every mask pixel painted


@needs_fm
def test_fm_masks_are_the_source_items(fm_plain):
    from rtsal.data.arrays import load_fashion_mnist

    items = {split: load_fashion_mnist(None, split) for split in ("train", "test")}
    meta = json.loads((fm_plain / "canvas.json").read_text())
    for name, path in _images(fm_plain).items():
        split, index = _origin(fm_plain, name)
        assert name.startswith(split)  # train canvases show train items, test ones test items
        x, y = items[split]
        assert class_folder(meta["classes"][int(y[index])]) == path.parent.name
        item = x[index, 0].numpy()
        cut = 255 * MASK_THRESHOLD ** (1 / MATTE_GAMMA)  # the matte is intensity ** gamma
        x0, y0, x1, y1 = _tight_box(item > MASK_THRESHOLD * 255)
        crop = Image.fromarray(item[y0:y1, x0:x1])
        mask = _mask(fm_plain, name)
        bx0, by0, bx1, by1 = _tight_box(mask)
        inside = mask[by0:by1, bx0:bx1]
        expected = np.asarray(crop.resize(inside.shape[::-1], Image.Resampling.BILINEAR)) > cut
        iou = max((inside & e).sum() / (inside | e).sum() for e in (expected, expected[:, ::-1]))
        assert iou > 0.85, (name, iou)


def test_cifar_patches_are_the_source_images(cifar_plain):
    from rtsal.data.arrays import load_cifar10

    sources = {split: load_cifar10(CIFAR_TARBALL, split) for split in ("train", "test")}
    for name, path in _images(cifar_plain).items():
        split, index = _origin(cifar_plain, name)
        assert name.startswith(split)
        image = np.asarray(Image.open(path))
        mask = _mask(cifar_plain, name)
        x0, y0, x1, y1 = _tight_box(mask)
        assert mask.sum() == (x1 - x0) * (y1 - y0)  # an opaque rectangle
        assert (image[~mask] == image[~mask][0]).all()  # plain background elsewhere
        src = Image.fromarray(sources[split][0][index].permute(1, 2, 0).numpy())
        patches = [src, src.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        size = (x1 - x0, y1 - y0)
        expected = [np.asarray(p.resize(size, Image.Resampling.BICUBIC)) for p in patches]
        assert any(np.array_equal(image[y0:y1, x0:x1], e) for e in expected), name


@pytest.mark.parametrize("dataset", [pytest.param("fm", marks=needs_fm), "cifar"])
def test_cluttered_background_is_not_empty(dataset, request):
    out: Path = request.getfixturevalue(dataset)
    for name, path in _images(out).items():
        outside = np.asarray(Image.open(path))[~_mask(out, name)]
        assert len(np.unique(outside, axis=0)) > 50, name
        assert outside.astype(float).std(axis=0).max() > 2, name


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("dataset", [pytest.param("fm", marks=needs_fm), "cifar"])
def test_counts_and_metadata(dataset, request):
    out: Path = request.getfixturevalue(dataset)
    meta = json.loads((out / "canvas.json").read_text())
    assert meta["counts"] == {"train": TRAIN, "test": TEST}
    assert meta["config"]["source"] == ("cifar10" if dataset == "cifar" else "fashion-mnist")
    assert meta["class_folders"] == [class_folder(c) for c in meta["classes"]]
    for split, n in (("train", TRAIN), ("test", TEST)):
        per_class = [len(list((out / split / f).glob("*.png"))) for f in meta["class_folders"]]
        assert sum(per_class) == n
        assert per_class == meta["class_counts"][split]
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(meta["class_folders"])
    assert len(list((out / "annotations").glob("*.xml"))) == TRAIN + TEST
    assert len(list((out / "masks").glob("*.png"))) == TRAIN + TEST
    assert Image.open(out / "preview.png").size[0] > 8 * SIZE


@needs_fm
def test_fashion_mnist_class_with_a_slash_gets_a_folder(fm):
    meta = json.loads((fm / "canvas.json").read_text())
    assert "T-shirt/top" in meta["classes"] and "T-shirt_top" in meta["class_folders"]


@pytest.mark.parametrize("box", [(0, 0, SIZE, SIZE), (3, 5, 4, 6), (10, 0, 41, 64)])
def test_voc_xml_round_trips(box, tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("train-000001.png", SIZE, "T-shirt/top", box))
    assert read_voc_xml(path) == {"train-000001.png": [("T-shirt/top", box)]}


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(RtsalError, match="scale"):
        make_canvas_dataset(CanvasConfig(scale=(0.8, 0.5)), tmp_path / "a")
    with pytest.raises(RtsalError, match="source"):
        make_canvas_dataset(CanvasConfig(source="mnist"), tmp_path / "b")
    with pytest.raises(RtsalError, match="at least one"):
        make_canvas_dataset(CanvasConfig(train=0, test=0), tmp_path / "c")
    assert not (tmp_path / "a").exists()


def test_foreign_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "keep.png").write_bytes(b"x")
    with pytest.raises(RtsalError, match="not empty"):
        make_canvas_dataset(CanvasConfig(train=1, test=1), tmp_path)
    assert (tmp_path / "train" / "keep.png").read_bytes() == b"x"
    assert not is_canvas_dir(tmp_path)


# --------------------------------------------------------------------------- the command


def test_cli_refuses_a_non_empty_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run = run_rtsal("canvas", tmp_path, "--train", "2", "--test", "2")
    assert_one_line_error(run, "not empty", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@needs_fm
def test_cli_writes_and_replaces_an_unfinished_run(tmp_path):
    out = tmp_path / "canvas"
    make_canvas_dataset(CanvasConfig(train=6, test=4, seed=3), out)
    assert is_canvas_dir(out)
    # an interrupted run: no canvas.json, a stray file from a larger run
    (out / "canvas.json").unlink()
    (out / "masks" / "train-000099.png").write_bytes(b"stale")
    assert is_canvas_dir(out)
    run = run_rtsal("canvas", out, "--train", "3", "--test", "2", "--no-clutter")
    assert run.code == 0, run.stderr
    assert str(out) in run.stdout and "3 train and 2 test" in run.stdout
    meta = json.loads((out / "canvas.json").read_text())
    assert meta["counts"] == {"train": 3, "test": 2} and meta["config"]["clutter"] is False
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "test-000000.png",
        "test-000001.png",
        "train-000000.png",
        "train-000001.png",
        "train-000002.png",
    ]
