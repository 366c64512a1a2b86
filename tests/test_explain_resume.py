"""`rtsal explain DIR --out OUT` resumes: killed with SIGKILL or stopped with Ctrl-C part way
through 12 real photos, the same command finishes the folder, and OUT ends up byte for byte as
an uninterrupted run leaves it; a finished OUT is left alone; other options are refused. And the
journal underneath: a torn last line is dropped, one writer at a time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtsal.errors import RtsalError
from rtsal.files import remove_temporaries
from rtsal.runs.journal import Journal, read_journal
from tests.helpers import (
    LITE_PLUGIN,
    REPO,
    SHARED_DATA,
    assert_one_line_error,
    ctrl_c_stops,
    run_main,
)

pytest.importorskip("rtsal_efficientnet_lite")
SAMPLE = SHARED_DATA / "imagenet-sample"
pytestmark = pytest.mark.skipif(
    not SAMPLE.is_dir(), reason="../shared/data/imagenet-sample is not present"
)

BATCH = 2  # 12 photos: 6 batches, each committed to the manifest on its own


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """12 real photos of different sizes (so batches also split where the model size changes)."""
    d = tmp_path_factory.mktemp("photos")
    for f in sorted(SAMPLE.iterdir())[:400:33][:12]:
        shutil.copy(f, d / f.name)
    assert len(list(d.iterdir())) == 12
    return d


def explain_args(photos: Path, out: Path, *extra: str) -> list[str]:
    """The command; an option in ``extra`` given twice takes its last value."""
    return ["explain", str(photos), "--out", str(out), "--topk", "2", "--batch-size", str(BATCH),
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """What an uninterrupted run writes."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run = run_main(*explain_args(photos, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    return out


def images(out: Path) -> dict[str, bytes]:
    """Every mask, overlay and pair, by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".png", ".jpg")}


def records(out: Path) -> list[dict]:
    """explanations.jsonl with the folder's own path taken out (every line must be JSON)."""
    lines = (out / "explanations.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    for r in recs:
        r["files"] = {k: Path(v).name for k, v in r["files"].items()}
    return recs


def assert_same_as(out: Path, reference: Path) -> None:
    assert images(out) == images(reference)
    got, want = records(out), records(reference)
    assert got == want  # same records, in the images' order
    assert len({(r["input"], r["class_index"]) for r in got}) == len(got) == 24  # no duplicates
    page = (out / "index.html").read_text().replace(str(out), "OUT")
    assert page == (reference / "index.html").read_text().replace(str(reference), "OUT")
    assert not list(out.glob(".*.tmp"))
    manifests = list(out.glob("manifest*.jsonl"))
    assert manifests
    for line in b"".join(m.read_bytes() for m in manifests).splitlines(keepends=True):
        assert line.endswith(b"\n")
        json.loads(line)


def committed_batches(manifest: Path) -> int:
    _, entries = read_journal(manifest)
    return len(entries)


def start_and_stop(photos: Path, out: Path, sig: int) -> tuple[int, str]:
    """Start `rtsal explain` in a process of its own and send it ``sig`` as soon as a batch is
    in the manifest (watched every 10 ms; a batch takes far longer)."""
    cmd = [sys.executable, "-m", "rtsal", *explain_args(photos, out)]
    env = {**os.environ, **LITE_PLUGIN, "RTSAL_DISABLE_PLUGIN_AUTOLOAD": ""}
    p = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_stops,
    )
    try:
        deadline = time.monotonic() + 300
        while committed_batches(out / "manifest.jsonl") < 1:
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        p.send_signal(sig)
        stderr = p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, stderr


def test_killed_run_resumes_to_the_same_outputs(photos, reference, tmp_path):
    out = tmp_path / "out"
    code, _ = start_and_stop(photos, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    done = committed_batches(out / "manifest.jsonl")
    assert 1 <= done < 6  # stopped part way
    assert not (out / "index.html").exists()  # the contact sheet waits for the last image
    # what a kill at a worse moment leaves: a torn manifest line, a half-written file
    with (out / "manifest.jsonl").open("ab") as f:
        f.write(b'{"images":[{"index":11,"name":"n02666196_ab')
    stale = out / ".n02666196_abacus.abacus.mask.png.x1y2z3w4.tmp"
    stale.write_bytes(b"\x89PNG half")
    run = run_main(*explain_args(photos, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    assert f"{BATCH * done} of 12 images already explained" in run.stderr
    assert not stale.exists()
    assert_same_as(out, reference)
    assert committed_batches(out / "manifest.jsonl") == 6


def test_ctrl_c_keeps_finished_images_and_the_same_command_resumes(photos, reference, tmp_path):
    out = tmp_path / "out"
    code, stderr = start_and_stop(photos, out, signal.SIGINT)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert f"finished images are kept in {out}; the same command resumes" in stderr
    done = committed_batches(out / "manifest.jsonl")
    assert 1 <= done < 6
    run = run_main(*explain_args(photos, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    assert_same_as(out, reference)


def test_a_finished_folder_is_left_alone(photos, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    run = run_main(*explain_args(photos, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    assert f"12 of 12 images already explained in {out}; nothing to do" in run.stderr
    assert_same_as(out, reference)  # explanations.jsonl now names the copy's own files
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    run = run_main(*explain_args(photos, out), env=LITE_PLUGIN)
    assert run.code == 0 and "nothing to do" in run.stderr, run.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # not a file touched
    (out / "index.html").unlink()  # as a kill just before the contact sheet leaves it
    run = run_main(*explain_args(photos, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    assert_same_as(out, reference)


def test_an_out_folder_inside_the_input_folder_resumes(photos, reference, tmp_path):
    """`rtsal explain photos/ --out photos/out`, twice: the second run finds the same 12
    images (not its own masks, overlays and pairs as 72 more) and has nothing to do."""
    inside = tmp_path / "photos"
    shutil.copytree(photos, inside)
    out = inside / "out"
    run = run_main(*explain_args(inside, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    assert images(out) == images(reference) and len(records(out)) == 24
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    run = run_main(*explain_args(inside, out), env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    assert f"12 of 12 images already explained in {out}; nothing to do" in run.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_other_options_or_other_inputs_are_refused_in_one_line(photos, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    run = run_main(*explain_args(photos, out, "--topk", "3"), env=LITE_PLUGIN)
    assert_one_line_error(run, str(out), "--topk 2, now 3", "another --out")
    run = run_main(*explain_args(photos, out, "--method", "gradcam"), env=LITE_PLUGIN)
    assert_one_line_error(run, "--method masker, now gradcam")
    run = run_main(*explain_args(photos, out, "--no-pretrained"), env=LITE_PLUGIN)
    assert_one_line_error(run, "--pretrained on, now off")
    more = tmp_path / "more"
    shutil.copytree(photos, more)
    shutil.copy(sorted(SAMPLE.iterdir())[500], more / "extra.JPEG")
    manifest = out / "manifest.jsonl"
    header, entries = read_journal(manifest)
    header["options"]["inputs"] = [str(more)]  # as if OUT had been started on MORE
    manifest.write_text("".join(json.dumps(v) + "\n" for v in [header, *entries]))
    run = run_main(*explain_args(more, out), env=LITE_PLUGIN)
    assert_one_line_error(run, "a run of other inputs (12 images then, 13 now)")
    assert images(out) == images(reference)  # nothing written


def test_progress_counts_the_images_already_done(photos, reference, tmp_path):
    """A folder whose manifest holds the first two batches (as a kill after them leaves it):
    the library call skips those 4 images, and its progress bar starts at 4 of 12."""
    from rtsal.registry.plugins import reset_plugin_manager
    from rtsal.runs.explain import explain_inputs

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "index.html").unlink()
    (out / "explanations.jsonl").unlink()
    manifest = out / "manifest.jsonl"
    manifest.write_bytes(b"".join(manifest.read_bytes().splitlines(keepends=True)[:3]))

    class Progress:
        def __init__(self):
            self.total = self.completed = None

        def add_task(self, description, total, completed=0):
            self.total, self.completed = total, completed

        def update(self, task, advance):
            self.completed += advance

    progress = Progress()
    os.environ.update(LITE_PLUGIN)
    reset_plugin_manager(None)
    try:
        run = explain_inputs(
            [str(photos)], out=out, topk=2, batch_size=BATCH, device="cpu", progress=progress
        )
    finally:
        for k in LITE_PLUGIN:
            os.environ.pop(k, None)
        reset_plugin_manager(None)
    assert (run.images, run.skipped, run.summary.explained) == (12, 4, 8)
    assert (progress.total, progress.completed) == (12, 12)
    assert run.index == out / "index.html" and run.index_written
    assert_same_as(out, reference)


# --------------------------------------------------------------------------- the journal


def test_journal_drops_a_torn_last_line_and_keeps_its_header(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal.open(path, {"run": 1}) as j:
        j.append({"n": 1})
        j.append({"n": 2})
    with path.open("ab") as f:
        f.write(b'{"n": 3')  # killed mid-line
    assert read_journal(path) == ({"run": 1}, [{"n": 1}, {"n": 2}])  # readers skip it
    with Journal.open(path, {"run": 2}) as j:  # the header it was started with stays
        assert (j.header, j.entries) == ({"run": 1}, [{"n": 1}, {"n": 2}])
        j.append({"n": 3})
    assert path.read_text().splitlines() == ['{"run":1}', '{"n":1}', '{"n":2}', '{"n":3}']
    path.write_bytes(b'{"ru')  # torn before its header was whole: a new journal
    with Journal.open(path, {"run": 3}) as j:
        assert (j.header, j.entries) == ({"run": 3}, [])
    assert path.read_text() == '{"run":3}\n'


def test_journal_has_one_writer_at_a_time(tmp_path):
    path = tmp_path / "j.jsonl"
    with (
        Journal.open(path, {"run": 1}),
        pytest.raises(RtsalError, match="being written by another process"),
    ):
        Journal.open(path, {"run": 1})
    with Journal.open(path, {"run": 1}) as j:  # free again once closed
        assert j.header == {"run": 1}


def test_only_the_named_temporaries_are_removed(tmp_path):
    mine = tmp_path / ".a.cat.mask.png.abc12345.tmp"
    theirs = tmp_path / ".b.cat.mask.png.def67890.tmp"
    finished = tmp_path / "a.cat.mask.png"
    for p in (mine, theirs, finished):
        p.write_bytes(b"x")
    assert remove_temporaries(tmp_path, lambda name: name.startswith("a.")) == 1
    assert not mine.exists() and theirs.exists() and finished.exists()
