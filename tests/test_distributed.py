"""torchrun: two gloo processes on the CPU train like one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import FASHION_MNIST_REASON, REPO, fashion_mnist_installed, run_rtsal

pytestmark = pytest.mark.skipif(not fashion_mnist_installed(), reason=FASHION_MNIST_REASON)


def args(classifier: Path, out: Path) -> list[str]:
    # group norm: normalisation that does not depend on how the batch is split
    return [
        "train",
        "--blackbox",
        str(classifier),
        "--data",
        "fashion-mnist",
        "--limit",
        "256",
        "--batch-size",
        "8",
        "--steps",
        "6",
        "--upsampler-channels",
        "16,8",
        "--norm",
        "group",
        "--out",
        str(out),
        "--json",
    ]


@pytest.mark.slow
def test_two_gloo_processes_match_one(fm_classifier, tmp_path):
    torchrun = shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    env = {
        **os.environ,
        "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1",
        "OMP_NUM_THREADS": "1",
        "RTSAL_SAVE_EVERY_RANK": "1",
    }
    ddp = tmp_path / "ddp"
    p = subprocess.run(
        [
            torchrun,
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            "-m",
            "rtsal",
            *args(fm_classifier, ddp),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    single = tmp_path / "single"
    run = run_rtsal(*args(fm_classifier, single), env={"OMP_NUM_THREADS": "1"})
    assert run.code == 0, run.stderr

    r0 = load_file(str(ddp / "replica-rank0.safetensors"))
    r1 = load_file(str(ddp / "replica-rank1.safetensors"))
    one = load_file(str(single / "model.safetensors"))
    assert r0.keys() == r1.keys() == one.keys()
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)  # replicas identical
        # same global batch, same samples, same random draws: equal up to float summation order
        torch.testing.assert_close(r0[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    meta = (ddp / "rtsal.json").read_text()
    assert '"processes": 2' in meta
