"""Fixtures: a plugin manager rebuilt from the installed entry points, never a stale one."""

from __future__ import annotations

from collections.abc import Iterator

import pluggy
import pytest
from rtsal.registry.plugins import make_plugin_manager, reset_plugin_manager


@pytest.fixture
def plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[pluggy.PluginManager]:
    """rtsal's plugin manager with third-party autoload on, installed as the process-wide one."""
    monkeypatch.delenv("RTSAL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RTSAL_PLUGINS", raising=False)
    pm = make_plugin_manager()
    reset_plugin_manager(pm)
    yield pm
    reset_plugin_manager(None)
