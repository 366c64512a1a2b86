"""run_main: ``rtsal`` in this process, answering as the command does in a process of its own,
and leaving the test process as it found it."""

from __future__ import annotations

import os
import warnings

from rtsal import __version__
from rtsal.registry import plugins
from tests.helpers import assert_one_line_error, run_main


def test_version_is_printed_with_exit_code_0():
    run = run_main("--version")
    assert (run.code, run.stdout, run.stderr) == (0, f"rtsal {__version__}\n", "")


def test_unknown_black_box_is_one_error_line_with_exit_code_1(tmp_path):
    run = run_main("train", "--blackbox", "no-such-box", "--data", tmp_path, "--out", tmp_path)
    assert run.code == 1
    assert_one_line_error(run, "unknown black box 'no-such-box'")


def test_environment_plugins_and_warning_hooks_are_put_back(tmp_path, monkeypatch):
    monkeypatch.delenv("RTSAL_TEST_VARIABLE", raising=False)
    autoload = os.environ.get("RTSAL_DISABLE_PLUGIN_AUTOLOAD")
    show, filters = warnings.showwarning, list(warnings.filters)
    plugins.get_plugin_manager()
    args = ("train", "--blackbox", "no-such-box", "--data", tmp_path, "--out", tmp_path)
    run = run_main(*args, env={"RTSAL_TEST_VARIABLE": "1"})
    assert run.code == 1
    assert "RTSAL_TEST_VARIABLE" not in os.environ
    assert os.environ.get("RTSAL_DISABLE_PLUGIN_AUTOLOAD") == autoload
    assert warnings.showwarning is show and warnings.filters == filters
    assert plugins._manager is None  # rebuilt on next use, from this process's environment
