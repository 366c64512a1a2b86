"""The template plugin, installed: its black box and its command reach rtsal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata

import pytest
import rtsal
import torch
from rtsal.registry.plugins import make_plugin_manager, reset_plugin_manager

template = pytest.importorskip(
    "rtsal_plugin_template", reason="not installed: pip install -e examples/rtsal-plugin-template"
)


@pytest.fixture
def installed_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """rtsal's plugin registry rebuilt from the installed entry points."""
    monkeypatch.delenv("RTSAL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RTSAL_PLUGINS", raising=False)
    reset_plugin_manager(make_plugin_manager())
    yield
    reset_plugin_manager(None)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RTSAL_DISABLE_PLUGIN_AUTOLOAD", "RTSAL_PLUGINS")
    }
    return subprocess.run(
        [sys.executable, "-m", "rtsal", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_entry_point_is_installed() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="rtsal")}
    assert eps.get("template") == "rtsal_plugin_template"


def test_create_black_box(installed_plugins: None) -> None:
    box = rtsal.create_black_box("template-tinynet")
    assert isinstance(box, rtsal.BlackBox)
    assert box.class_names == list(template.CLASS_NAMES)
    assert box.input_size == template.INPUT_SIZE
    logits = box(torch.rand(2, 3, *box.input_size))
    assert logits.shape == (2, len(template.CLASS_NAMES))
    listed = {r.name: r.plugin for r in rtsal.list_black_boxes("template", include_providers=False)}
    assert listed == {"template-tinynet": "template"}


def test_weights_are_seeded(installed_plugins: None) -> None:
    a, b = rtsal.create_black_box("template-tinynet"), rtsal.create_black_box("tinynet")
    torch.testing.assert_close(a.network.fc.weight, b.network.fc.weight)


def test_command_is_listed_and_runs() -> None:
    help_text = run_cli("--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "hello-template" in help_text.stdout
    hello = run_cli("hello-template", "--name", "tester")
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.startswith("hello tester: template-tinynet has 4 classes")
