"""``import rtsal`` and ``rtsal --version`` stay fast: neither imports torch (seconds on a CPU
machine); the public names still resolve, from the package's own modules."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import rtsal
from tests.helpers import REPO

PLUGINS_ON = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": ""}  # installed plugins (which import torch) too


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=120,
    )


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output ("import time: self | total | name")."""
    modules = set()
    for line in importtime_stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[0].strip().isdigit():
            modules.add(fields[2].strip())
    return modules


def test_import_rtsal_does_not_import_torch():
    code = "import rtsal, sys; assert 'torch' not in sys.modules, 'torch'; print(rtsal.__version__)"
    run = run_python("-c", code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == rtsal.__version__


def test_version_does_not_import_torch_or_plugins():
    run = run_python("-X", "importtime", "-m", "rtsal", "--version", env=PLUGINS_ON)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"rtsal {rtsal.__version__}"
    modules = imported_modules(run.stderr)
    assert "rtsal.cli" in modules  # the output really lists what was imported
    assert "torch" not in modules and "timm" not in modules
    assert "rtsal.plugins" not in modules  # plugins' commands are not needed for --version


def test_imported_modules_parses_importtime():
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       215 |        215 |   _io\n"
        "import time:      1000 |       1215 | torch\n"
        "warning: something else | with a bar\n"
    )
    assert imported_modules(stderr) == {"_io", "torch"}


@pytest.mark.parametrize("name", rtsal.__all__)
def test_every_public_name_resolves(name):
    value = getattr(rtsal, name)
    assert value is not None
    if name not in ("__version__", "hookimpl"):
        assert value.__module__.startswith("rtsal.")  # the definition, not a copy
    assert name in dir(rtsal)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Explainr'"):
        rtsal.Explainr  # noqa: B018
    assert not hasattr(rtsal, "torch")
