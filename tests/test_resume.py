"""Runs survive: a training process killed with SIGKILL resumes to the very weights of an
uninterrupted run, and no partial file is left behind; Ctrl-C saves and exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import (
    FASHION_MNIST_REASON,
    REPO,
    ctrl_c_stops,
    fashion_mnist_installed,
    run_rtsal,
)

pytestmark = pytest.mark.skipif(not fashion_mnist_installed(), reason=FASHION_MNIST_REASON)

STEPS = 24


def train_args(classifier: Path, out: Path, *extra) -> list[str]:
    return [
        "train",
        "--blackbox",
        str(classifier),
        "--data",
        "fashion-mnist",
        "--limit",
        "512",
        "--batch-size",
        "8",
        "--steps",
        str(STEPS),
        "--upsampler-channels",
        "16,8",
        "--checkpoint-every",
        "4",
        "--out",
        str(out),
        "--json",
        *map(str, extra),
    ]


def state_step(out: Path) -> int:
    from rtsal.training.trainer import read_training_state

    try:
        return read_training_state(out)["meta"]["step"]
    except Exception:
        return 0


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(fm_classifier, tmp_path):
    whole = tmp_path / "whole"
    run = run_rtsal(*train_args(fm_classifier, whole), env={"OMP_NUM_THREADS": "1"})
    assert run.code == 0, run.stderr

    killed = tmp_path / "killed"
    env = {**os.environ, "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtsal", *train_args(fm_classifier, killed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while state_step(killed) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = state_step(killed)
    assert 8 <= done_before_kill < STEPS, "the kill should land mid-run"

    run = run_rtsal("train", "--resume", killed, "--json", env={"OMP_NUM_THREADS": "1"})
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["steps"] == STEPS
    a, b = weights(whole), weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    log = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # no step twice, none missing
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_cleanly(fm_classifier, tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtsal", *train_args(fm_classifier, out, "--checkpoint-every", 0)],
        cwd=REPO,
        env=env,
        preexec_fn=ctrl_c_stops,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    log = out / "train_log.jsonl"
    while (not log.exists() or len(log.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True and 3 <= summary["steps"] < STEPS
    assert state_step(out) == summary["steps"]  # saved where it stopped
    meta = json.loads((out / "rtsal.json").read_text())
    assert meta["training"]["interrupted"] is True
    run = run_rtsal("train", "--resume", out, "--json", env={"OMP_NUM_THREADS": "1"})
    assert run.code == 0 and json.loads(run.stdout)["steps"] == STEPS


def test_resume_without_state_is_one_line(tmp_path):
    run = run_rtsal("train", "--resume", tmp_path)
    assert run.code == 1 and "nothing to resume" in run.stderr and "Traceback" not in run.stderr
