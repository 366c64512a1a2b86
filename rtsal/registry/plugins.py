"""Plugin manager: built-in plugins plus third-party ones from the ``rtsal`` entry-point group.

Environment:
  RTSAL_DISABLE_PLUGIN_AUTOLOAD=1   load no third-party plugins
  RTSAL_PLUGINS=name1,name2         load only these entry points (allow-list)
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

import pluggy

from rtsal.registry import hookspecs

ENTRY_POINT_GROUP = "rtsal"

DEFAULT_PLUGINS = {  # plugin name -> module; registered exactly like third-party plugins
    "builtin:timm": "rtsal.registry.providers.timm_provider",
    "builtin:user-code": "rtsal.registry.providers.user_code",
    "builtin:checkpoints": "rtsal.registry.providers.checkpoints",
    "builtin:methods": "rtsal.methods",
}


class PluginWarning(UserWarning):
    """A plugin could not be loaded, or one of its hooks failed; rtsal carries on without it."""


_manager: pluggy.PluginManager | None = None
_registries: dict[str, Any] = {}  # what the hooks registered, per registry; dropped on reset

T = TypeVar("T")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _allow_list() -> set[str] | None:
    raw = os.environ.get("RTSAL_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def load_entry_point_plugins(pm: pluggy.PluginManager) -> list[str]:
    """Load third-party plugins; a broken one becomes a :class:`PluginWarning`."""
    if _env_flag("RTSAL_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    allowed = _allow_list()
    loaded = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            pm.check_pending()
        except Exception as exc:  # a broken plugin must not break rtsal
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            warnings.warn(
                f"plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=2,
            )
            continue
        loaded.append(ep.name)
    return loaded


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("rtsal")
    pm.add_hookspecs(hookspecs)
    for name, module_name in DEFAULT_PLUGINS.items():
        pm.register(importlib.import_module(module_name), name=name)
    pm.check_pending()
    if load_entry_points:
        load_entry_point_plugins(pm)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = make_plugin_manager()
    return _manager


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Replace (or drop, to rebuild lazily) the process-wide manager and the registries built
    from it; used by tests."""
    global _manager
    _manager = pm
    _registries.clear()


def cached_registry(name: str, build: Callable[[], T]) -> T:
    """The registry called ``name``, built by ``build()`` once per plugin manager."""
    if name not in _registries:
        _registries[name] = build()
    return _registries[name]


def call_each(hook_name: str, arguments: Callable[[str], dict[str, Any]]) -> list[str]:
    """Call every plugin's implementation of ``hook_name`` on its own, with the keyword
    arguments ``arguments(plugin_name)``. An implementation that raises becomes a
    :class:`PluginWarning` naming its plugin and is skipped; the others still run.

    Returns the names of the plugins whose implementation returned, in call order.
    """
    done = []
    for impl in getattr(get_plugin_manager().hook, hook_name).get_hookimpls():
        given = arguments(impl.plugin_name)
        try:
            impl.function(*(given[arg] for arg in impl.argnames))
        except Exception as exc:  # a broken plugin must not break rtsal
            _warn_skipped(f"plugin {impl.plugin_name!r} ({hook_name})", exc)
            continue
        done.append(impl.plugin_name)
    return done


def collect(hook_name: str, add: Callable[..., None]) -> None:
    """Run a registration hook (one whose only argument is a ``register`` callback) fail-soft.

    Each plugin's ``register(*args, **kwargs)`` calls are held until its hook returns, then
    passed on as ``add(plugin_name, *args, **kwargs)``: a plugin whose hook raises adds nothing,
    and a registration that ``add`` refuses (raises) is skipped alone; both become a
    :class:`PluginWarning` naming the plugin.
    """
    calls: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}

    def arguments(plugin: str) -> dict[str, Any]:
        held = calls.setdefault(plugin, [])
        return {"register": lambda *args, **kwargs: held.append((args, kwargs))}

    for plugin in call_each(hook_name, arguments):
        for args, kwargs in calls[plugin]:
            try:
                add(plugin, *args, **kwargs)
            except Exception as exc:
                _warn_skipped(f"a {hook_name} registration of plugin {plugin!r}", exc)


def _warn_skipped(what: str, exc: Exception) -> None:
    warnings.warn(
        f"{what} failed and is skipped: {type(exc).__name__}: {exc}", PluginWarning, stacklevel=3
    )


def plugin_of(obj: object) -> str:
    """Name of the registered plugin a hook implementation came from."""
    pm = get_plugin_manager()
    for name, plugin in pm.list_name_plugin():
        if plugin is obj:
            return name
    return "?"
