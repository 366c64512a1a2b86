"""--shard I/N: the shards of `rtsal explain` (in separate folders, merged by `rtsal merge`, or in
one folder under torchrun's RANK/WORLD_SIZE) give exactly the files and records of one run; the
shards of `rtsal metric` and `rtsal localize`, merged, give the totals of one run, to the last bit;
merging what is not one whole run is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtsal.device import process_device
from rtsal.errors import RtsalError
from rtsal.runs.journal import Journal
from rtsal.runs.shards import Shard, choose_shard, parse_shard
from tests.helpers import LITE_PLUGIN, SHARED_DATA, assert_one_line_error, run_main
from tests.test_explain_resume import (  # noqa: F401 (fixtures)
    BATCH,
    assert_same_as,
    explain_args,
    images,
    photos,
    reference,
)

pytest.importorskip("rtsal_efficientnet_lite")
VAL_BOXES = SHARED_DATA / "imagenet-val-boxes"
pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "imagenet-sample").is_dir() or not VAL_BOXES.is_dir(),
    reason="../shared/data/imagenet-sample or imagenet-val-boxes is not present",
)


def rtsal(*args, env: dict | None = None):
    return run_main(*map(str, args), env={**LITE_PLUGIN, **(env or {})})


@pytest.fixture(scope="module")
def shards(photos, tmp_path_factory) -> tuple[Path, Path]:  # noqa: F811
    """Shard 0/2 and shard 1/2, each in a folder of its own."""
    root = tmp_path_factory.mktemp("shards")
    for i in (0, 1):
        run = rtsal(*explain_args(photos, root / str(i), "--shard", f"{i}/2"))
        assert run.code == 0, run.stderr
        assert "6 images of other shards still to explain" in run.stderr
        assert not (root / str(i) / "index.html").exists()
    return root / "0", root / "1"


def test_shards_in_two_folders_merge_to_the_single_run(photos, reference, shards, tmp_path):  # noqa: F811
    a, b = shards
    # batches of 2 consecutive images: shard 0 has batches 0, 2, 4; shard 1 batches 1, 3, 5
    inputs = sorted(p.name.split(".")[0] for p in photos.iterdir())
    stems = {
        n: {p.name.split(".")[0] for p in d.glob("*.mask.png")} for n, d in (("a", a), ("b", b))
    }
    assert stems["a"] == {inputs[i] for i in (0, 1, 4, 5, 8, 9)}
    assert stems["b"] == {inputs[i] for i in (2, 3, 6, 7, 10, 11)}
    assert images(a).keys() | images(b).keys() == images(reference).keys()
    out = tmp_path / "merged"
    run = rtsal("merge", a, b, "--out", out)
    assert run.code == 0, run.stderr
    assert "12 of 12 images from 2 manifest(s)" in run.stderr
    assert_same_as(out, reference)  # the same bytes and records as one run
    run = rtsal(*explain_args(photos, out))  # the merged folder reads as a finished run
    assert run.code == 0 and "12 of 12 images already explained" in run.stderr, run.stderr
    run = rtsal("merge", out)  # merging again, in place, changes nothing
    assert run.code == 0, run.stderr
    assert_same_as(out, reference)


def test_torchrun_processes_share_one_folder(photos, reference, shards, tmp_path):  # noqa: F811
    """RANK/WORLD_SIZE as torchrun sets them stand for --shard; the last shard to end writes
    the contact sheet of all of them into the folder they share."""
    out = tmp_path / "out"
    shutil.copytree(shards[0], out)  # shard 0 has ended
    run = rtsal(*explain_args(photos, out), env={"RANK": "1", "WORLD_SIZE": "2"})
    assert run.code == 0, run.stderr
    assert (out / "manifest.shard-1-of-2.jsonl").is_file()
    assert f"wrote {out / 'index.html'}" in run.stderr
    assert_same_as(out, reference)
    run = rtsal("merge", out)  # one manifest for the whole run
    assert run.code == 0, run.stderr
    assert (out / "manifest.jsonl").is_file()
    assert_same_as(out, reference)
    run = rtsal(*explain_args(photos, out, "--shard", "1/2"))
    assert run.code == 0 and "6 of 6 images already explained" in run.stderr, run.stderr


def test_merging_what_is_not_one_whole_run_is_refused(shards, tmp_path):
    a, b = shards
    run = rtsal("merge", a, "--out", tmp_path / "m1")
    assert_one_line_error(run, "6 of 12 images are in no manifest", "image 2, of shard 1/2")
    assert not (tmp_path / "m1").exists()  # nothing written
    other = tmp_path / "other"
    shutil.copytree(b, other)
    manifest = other / "manifest.shard-1-of-2.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["options"]["topk"] = 3  # as if shard 1 had been run with --topk 3
    manifest.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    run = rtsal("merge", a, other, "--out", tmp_path / "m2")
    assert_one_line_error(run, "different runs", "--topk: 3 against 2")
    with Journal.open(b / "manifest.shard-1-of-2.jsonl", {}):  # shard 1 still running
        run = rtsal("merge", a, b, "--out", tmp_path / "m3")
    assert_one_line_error(run, "being written by a running rtsal explain")
    assert_one_line_error(rtsal("merge", a, b), "needs --out")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(rtsal("merge", tmp_path / "empty"), "nothing to merge")


def test_bad_shards_are_one_line(photos, tmp_path):  # noqa: F811
    for spec in ("2/2", "-1/2", "1", "a/b", "0/0"):
        run = rtsal("explain", photos, "--shard", spec)
        assert_one_line_error(run, "--shard takes I/N", spec)
    run = rtsal("explain", photos, env={"RANK": "2", "WORLD_SIZE": "2"})
    assert_one_line_error(run, "RANK='2' and WORLD_SIZE='2'")
    run = rtsal("metric", "--data", photos, "--shard", "0/2")
    assert_one_line_error(run, "shard 0/2 needs --out")


def test_shards_own_every_nth_block():
    assert [p for p in range(12) if Shard(1, 3).owns(p, block=2)] == [2, 3, 8, 9]
    assert [p for p in range(7) if Shard(0, 2).owns(p)] == [0, 2, 4, 6]
    assert parse_shard(" 3/4 ") == Shard(3, 4) and str(Shard(3, 4)) == "3/4"
    assert Shard(1, 4).suffix == ".shard-1-of-4" and Shard().suffix == ""
    assert choose_shard(None, {"RANK": "3", "WORLD_SIZE": "4"}) == Shard(3, 4)
    assert choose_shard("0/2", {"RANK": "3", "WORLD_SIZE": "4"}) == Shard(0, 2)  # --shard wins
    assert choose_shard(None, {}) == Shard()
    with pytest.raises(RtsalError):
        choose_shard(None, {"RANK": "x", "WORLD_SIZE": "4"})


def test_torchrun_processes_of_a_machine_take_a_gpu_each():
    local = {"LOCAL_RANK": "3"}
    assert process_device("auto", local, cuda_devices=2) == "cuda:1"
    assert process_device("cuda", local, cuda_devices=4) == "cuda:3"
    assert process_device("cuda:0", local, cuda_devices=4) == "cuda:0"  # as asked
    assert process_device("cpu", local, cuda_devices=4) == "cpu"
    assert process_device("auto", local, cuda_devices=1) == "auto"
    assert process_device("auto", {}, cuda_devices=4) == "auto"  # not under torchrun


# --------------------------------------------------------------------------- metric, localize


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> Path:
    """4 ImageNet validation photos with their boxes, and the boxes drawn as pixel masks."""
    d = tmp_path_factory.mktemp("val")
    boxes = json.loads((VAL_BOXES / "boxes.json").read_text())
    names = sorted(boxes)[::97][:4]
    (d / "images").mkdir()
    (d / "masks").mkdir()
    for name in names:
        shutil.copy(VAL_BOXES / name, d / "images" / name)
        with Image.open(VAL_BOXES / name) as im:
            gt = np.zeros((im.height, im.width), np.uint8)
        for box in boxes[name]["boxes"]:
            x0, y0, x1, y1 = (round(v) for v in box)
            gt[y0:y1, x0:x1] = 255
        Image.fromarray(gt).save(d / "masks" / f"{Path(name).stem}.png")
    (d / "boxes.json").write_text(json.dumps({n: boxes[n] for n in names}))
    return d


def scores(out: Path, stem: str) -> tuple[str, dict, list[dict]]:
    """The CSV, the summary and the records, without the seconds (the only numbers that differ
    from run to run)."""
    summary = json.loads((out / f"masker-{stem}.json").read_text())
    summary.pop("seconds_per_image")
    lines = (out / f"masker-{stem}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records[1:]:
        r["state"].pop("seconds")
    return (out / f"masker-{stem}.csv").read_text(), summary, records


def test_metric_shards_merge_to_the_single_run(val, tmp_path):
    args = ["metric", "--data", val / "images", "--boxes", val / "boxes.json"]
    args += ["--pixel-masks", val / "masks", "--metrics", "all", "--steps", "2"]
    run = rtsal(*args, "--out", tmp_path / "one")
    assert run.code == 0, run.stderr
    for i in (0, 1):  # both shards in one folder
        run = rtsal(*args, "--out", tmp_path / "shards", "--shard", f"{i}/2")
        assert run.code == 0, run.stderr
        assert f"shard {i}/2: 2 of 4 samples" in run.stderr
    assert not (tmp_path / "shards" / "masker-metric.json").exists()
    run = rtsal("merge", tmp_path / "shards", "--json")
    assert run.code == 0, run.stderr
    merged = json.loads(run.stdout)["scores"][0]
    assert (merged["method"], merged["command"], merged["samples"]) == ("masker", "metric", 4)
    one, shards = scores(tmp_path / "one", "metric"), scores(tmp_path / "shards", "metric")
    assert shards == one  # CSV, summary and records, to the last bit
    summary = one[1]
    assert summary["images"] == 4
    for k in ("localization_error", "max_box_acc_v2", "pointing", "deletion", "max_f", "mae"):
        assert 0 <= summary[k] <= 1, k
    assert (tmp_path / "shards" / "masker-pr.png").stat().st_size > 1000


def test_localize_shards_in_three_folders_merge_to_the_single_run(val, tmp_path):
    args = ["localize", "--data", val / "images", "--boxes", val / "boxes.json"]
    run = rtsal(*args, "--out", tmp_path / "one")
    assert run.code == 0, run.stderr
    for i in range(3):
        run = rtsal(*args, "--out", tmp_path / f"s{i}", "--shard", f"{i}/3")
        assert run.code == 0, run.stderr
    run = rtsal("merge", tmp_path / "s0", tmp_path / "s2", "--out", tmp_path / "m")
    assert_one_line_error(run, "1 of 4 samples are in none of the files", "sample 1 (shard 1/3)")
    run = rtsal("merge", *(tmp_path / f"s{i}" for i in range(3)), "--out", tmp_path / "m")
    assert run.code == 0, run.stderr
    assert scores(tmp_path / "m", "localize") == scores(tmp_path / "one", "localize")
