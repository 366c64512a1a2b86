"""keep_freed_memory: a second large tensor reuses the first one's pages instead of faulting in
fresh ones. Each case runs in its own interpreter, since the setting is process-wide."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the allocator setting applies to glibc on Linux only",
)

PROBE = """
import resource, torch
from rtsal.allocator import keep_freed_memory
tuned = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU())
x = torch.rand(8, 3, 256, 256)              # activations of 64 MB each
with torch.inference_mode():
    for _ in range(2):
        net(x)                              # warm-up: the heap grows to its peak
    before = faults()
    for _ in range(4):
        net(x)
print(int(tuned), faults() - before)
"""
# 4 passes x 3 activations of 64 MB: what glibc's default faults in afresh
PAGES_FRESH = 4 * 3 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")


def run_probe(malloc_env: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "RTSAL_MALLOC"}
    if malloc_env is not None:
        env["RTSAL_MALLOC"] = malloc_env
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return bool(int(out[0])), int(out[1])


@glibc_only
def test_keep_freed_memory_reuses_pages():
    tuned, faults = run_probe(None)
    assert tuned
    # the freed pages came back without faulting (a stray region now and then: 16,384 pages
    # were seen once; glibc's default faults in about 450,000 here)
    assert faults < PAGES_FRESH // 4


@glibc_only
def test_system_malloc_refaults_and_opt_out_is_honoured():
    tuned, faults = run_probe("system")
    assert not tuned
    assert faults > PAGES_FRESH // 2  # glibc's default: fresh mmaps, their pages faulted again


def test_cli_entry_point_applies_the_setting(monkeypatch):
    import rtsal.allocator as allocator
    import rtsal.cli as cli

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code in (0, None)
    assert calls == [1]
