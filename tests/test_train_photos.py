"""`rtsal train` on a plain folder of real photos: black-box labels, mosaics, validation on
held-out photos with the best model kept, and one-line errors for options that cannot work."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.helpers import LITE_PLUGIN, SHARED_DATA, assert_one_line_error, run_main, run_rtsal

SAMPLE = SHARED_DATA / "imagenet-sample"
VAL_BOXES = SHARED_DATA / "imagenet-val-boxes"
LITE = LITE_PLUGIN
pytestmark = pytest.mark.skipif(
    not (SAMPLE.is_dir() and VAL_BOXES.is_dir()), reason="../shared/data is not present"
)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """24 ImageNet training photos under neutral names in nested folders (no class in the
    names), plus an evaluation photo that must be left out."""
    root = tmp_path_factory.mktemp("photos") / "any"
    for i, p in enumerate(sorted(SAMPLE.iterdir())[::37][:24]):
        sub = root / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sub / f"photo{i:03d}.jpg")
    shutil.copy(next(VAL_BOXES.glob("ILSVRC2012_val_*")), root / "part0")
    return root


@pytest.mark.slow
def test_train_on_black_box_labels_with_mosaics_and_validation(photo_folder, tmp_path):
    boxes = tmp_path / "val-boxes"  # other photos, with boxes: validation by localisation
    boxes.mkdir()
    table = {}
    # the first is also in the training folder: training leaves it out as a validation photo
    for p in [sorted(SAMPLE.iterdir())[0], *sorted(SAMPLE.iterdir())[5::37][:2]]:
        shutil.copy(p, boxes / p.name)
        with Image.open(p) as im:
            w, h = im.size
        table[p.name] = {"synset": p.name.split("_")[0], "boxes": [[w // 8, h // 8, w, h]]}
    (boxes / "boxes.json").write_text(json.dumps(table))
    out = tmp_path / "run"
    env = {"RTSAL_CACHE": str(tmp_path / "cache"), **LITE}
    r = run_rtsal(
        "train", "--blackbox", "efficientnet_lite0", "--data", photo_folder,
        "--labels", "blackbox", "--min-confidence", "0.2", "--exclude", VAL_BOXES,
        "--mosaic", "0.5", "--color-jitter", "0.1", "--holdout", "0.25",
        "--val-every", "2", "--val-photos", "6", "--val-boxes", boxes, "--steps", "4",
        "--batch-size", "4", "--out", out, "--json",
        env=env,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert "1 named ILSVRC2012_val_*" in r.stderr
    assert "1 the same as an evaluation or validation photo" in r.stderr
    rows = [json.loads(line) for line in (out / "val_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 2, 4]
    for row in rows:
        for key in ("mosaic_loc", "mosaic_inside", "p_keep", "p_drop", "area_absent", "saliency"):
            assert key in row
        assert 0 <= row["mosaic_inside"] <= 1 and 0 <= row["area_true"] <= 1
        assert row["box_loc"] in (0, 1 / 3, 2 / 3, 1)
        assert 0 <= row["wrong_way"] <= 1 and 0 <= row["halved"] <= 1
        assert row["score"] == row["box_loc"] - row["wrong_way"]  # validation_score
    best = json.loads((out / "best" / "rtsal.json").read_text())
    best_step = max(rows, key=lambda r: (r["score"], -r["step"]))["step"]
    assert best["training"]["validation"]["step"] == best_step
    held = (out / "holdout-labels.tsv").read_text().splitlines()
    assert held and all("ILSVRC2012_val_" not in line for line in held)
    labels = {int(line.split("\t")[1]) for line in held}
    assert all(0 <= c < 1000 for c in labels)
    # the run resumes with its own options (labels from the cache, the same held-out photos)
    r2 = run_rtsal("train", "--resume", out, "--steps", "6", env=env)
    assert r2.code == 0, r2.stderr
    rows = [json.loads(line) for line in (out / "val_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 2, 4, 6]
    assert (out / "holdout-labels.tsv").read_text().splitlines() == held


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--val-every", "5"], ["--val-every", "--holdout"]),
        (["--val-boxes", "."], ["--val-boxes", "--val-every"]),
        (["--mosaic", "1.5"], ["--mosaic"]),
        (["--mosaic", "0.5", "--mosaic-tiles", "3"], ["--mosaic-tiles"]),
        (["--labels", "guess"], ["--labels"]),
    ],
)
def test_options_that_cannot_work_are_one_line(photo_folder, tmp_path, extra, fragments):
    r = run_main(
        "train", "--blackbox", "efficientnet_lite0", "--data", photo_folder,
        "--labels", "blackbox", "--steps", "1", "--batch-size", "2", "--out", tmp_path / "o",
        *extra, env={"RTSAL_CACHE": str(tmp_path / "cache"), **LITE},
    )  # fmt: skip
    assert_one_line_error(r, *fragments)


def test_training_inside_an_evaluation_folder_is_refused(tmp_path):
    r = run_main(
        "train", "--blackbox", "efficientnet_lite0", "--data", VAL_BOXES, "--labels", "blackbox",
        "--exclude", VAL_BOXES, "--steps", "1", "--out", tmp_path / "o",
        env={"RTSAL_CACHE": str(tmp_path / "cache"), **LITE},
    )  # fmt: skip
    assert_one_line_error(r, "evaluation folder")
