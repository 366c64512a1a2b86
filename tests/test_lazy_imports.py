"""``import rtsal``, ``rtsal --version`` and ``rtsal --help`` stay fast: none imports torch
(seconds on a CPU machine); the public names still resolve, from the package's own modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rtsal
from tests.helpers import REPO

PLUGINS_ON = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": ""}  # whatever is installed, too
NO_PLUGINS = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1"}  # rtsal's built-in plugins only


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=120,
    )


# ``python -m rtsal ARGS``, then the names of every module it imported on stderr. (``python -X
# importtime`` misses modules imported through importlib, as rtsal's lazy names and plugins are.)
RUN_RTSAL_AND_LIST_MODULES = """
import json, runpy, sys
sys.argv = ["rtsal", *sys.argv[1:]]
try:
    runpy.run_module("rtsal", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exit:
    code = exit.code
print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def run_rtsal_listing_modules(*args: str, env: dict[str, str]) -> tuple[str, set[str]]:
    """stdout of ``rtsal ARGS`` and the modules it imported; fails if the command fails."""
    run = run_python("-c", RUN_RTSAL_AND_LIST_MODULES, *args, env=env)
    assert run.returncode == 0, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("MODULES "), run.stderr
    return run.stdout, set(json.loads(last.removeprefix("MODULES ")))


def test_import_rtsal_does_not_import_torch():
    code = "import rtsal, sys; assert 'torch' not in sys.modules, 'torch'; print(rtsal.__version__)"
    run = run_python("-c", code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == rtsal.__version__


def test_version_does_not_import_torch_or_plugins():
    stdout, modules = run_rtsal_listing_modules("--version", env=PLUGINS_ON)
    assert stdout.strip() == f"rtsal {rtsal.__version__}"
    assert "rtsal.cli" in modules and "typer" in modules  # the list is real
    assert "torch" not in modules and "timm" not in modules
    assert "rtsal.registry.plugins" not in modules  # plugins' commands are not needed for --version


def test_help_loads_the_builtin_plugins_without_torch():
    """The command list needs the plugins' commands; the built-in plugin modules register
    names and import torch only when something is built."""
    stdout, modules = run_rtsal_listing_modules("--help", env=NO_PLUGINS)
    assert "explain" in stdout and "blackboxes" in stdout
    assert {"rtsal.methods", "rtsal.registry.providers.timm_provider"} <= modules
    assert "torch" not in modules and "timm" not in modules


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
