"""User code as a black box: ``path/to/file.py:factory`` or ``package.module:factory``.

The factory takes no required arguments and returns either a :class:`rtsal.BlackBox` or a plain
``nn.Module``. For a plain module, each of ``class_names``, ``mean``, ``std``, ``input_size`` and
``interpolation`` is read from the module's own attribute or, where it has none, from the top
level of the factory's file or Python module (defaults: identity normalisation, with a warning;
224 px; names ``class_0``...). A ``module:factory`` is looked up on the path and, failing that,
in the current folder.
Importing this plugin module is cheap: torch is imported when a black box is built.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from rtsal.errors import RtsalError
from rtsal.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from torch import nn

    from rtsal.registry.blackbox import BlackBox

_SPEC = re.compile(r"^(?P<target>[^:]+(?:\.py)?):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")


def _import_target(target: str):
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise RtsalError(f"black box file not found: {target}")
        mod_name = "rtsal_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise RtsalError(f"importing {target} failed: {type(exc).__name__}: {exc}") from None
        return module
    try:
        try:
            return importlib.import_module(target)
        except ModuleNotFoundError as exc:
            # the `rtsal` script, unlike `python -m`, does not put the current folder on the path
            here = str(Path.cwd())
            if exc.name != target.split(".")[0] or here in sys.path:
                raise
            sys.path.append(here)  # after installed packages: it never shadows them
            return importlib.import_module(target)
    except ImportError as exc:
        raise RtsalError(f"cannot import module {target!r}: {exc}") from None
    except Exception as exc:
        raise RtsalError(f"importing {target} failed: {type(exc).__name__}: {exc}") from None


def _is_numbers(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def _is_size(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    return _is_numbers(value) and len(value) in (2, 3) and all(isinstance(v, int) for v in value)


# The optional metadata of a plain module, and what a value of each looks like.
METADATA: dict[str, Callable[[object], bool]] = {
    "class_names": lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v),
    "mean": _is_numbers,
    "std": _is_numbers,
    "input_size": _is_size,
    "interpolation": lambda v: isinstance(v, str),
}


def module_metadata(net: nn.Module, home: ModuleType | None = None) -> dict[str, object]:
    """The optional metadata of ``net``: each attribute of :data:`METADATA` it carries or,
    where it has none, the one at the top level of ``home`` (the factory's file or module),
    which users write beside the factory. A top-level name holding something else (``from
    statistics import mean``) is not metadata and is left alone."""
    found: dict[str, object] = {}
    for key, looks_right in METADATA.items():
        if hasattr(net, key):
            found[key] = getattr(net, key)
        elif home is not None and looks_right(value := getattr(home, key, None)):
            found[key] = value
    return found


def wrap_module(
    net: nn.Module, name: str, provider: str = "user", home: ModuleType | None = None
) -> BlackBox:
    """Turn a plain classifier module into a black box, reading its optional metadata
    (:func:`module_metadata`: on ``net``, else at the top level of ``home``)."""
    import torch

    from rtsal.registry.blackbox import BlackBox

    meta = module_metadata(net, home)
    if "mean" not in meta or "std" not in meta:
        warnings.warn(
            f"black box {name} has no mean/std attributes: images reach it in [0, 1], "
            "unnormalised (give the module or its file mean and std, or return a BlackBox)",
            stacklevel=2,
        )
    mean = tuple(meta.get("mean", (0.0, 0.0, 0.0)))
    std = tuple(meta.get("std", (1.0,) * len(mean)))
    size = meta.get("input_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    class_names = meta.get("class_names")
    if class_names is None:
        with torch.no_grad():
            out = net.eval()(torch.zeros(1, len(mean), *size))
        class_names = [f"class_{i}" for i in range(out.shape[-1])]
    return BlackBox(
        net,
        name=name,
        class_names=class_names,
        mean=mean,
        std=std,
        input_size=size,
        interpolation=meta.get("interpolation", "bilinear"),
        provider=provider,
        source=name,
    )


def user_black_box(spec: str, *, weights: str | None = None, **options: object) -> BlackBox:
    """Call the factory ``spec`` names; ``weights`` (a file) is loaded into what it returns."""
    from torch import nn

    from rtsal.registry.blackbox import BlackBox
    from rtsal.registry.weights import load_into, load_state_dict

    m = _SPEC.match(spec)
    if not m:
        raise RtsalError(
            f"user black box must look like file.py:factory or pkg.module:factory: {spec}"
        )
    if m["target"].endswith(".py"):  # a checkpoint must find the file from anywhere
        spec = f"{Path(m['target']).expanduser().resolve()}:{m['attr']}"
    module = _import_target(m["target"])
    factory = getattr(module, m["attr"], None)
    if not callable(factory):
        raise RtsalError(f"{m['target']} has no callable {m['attr']!r}")
    try:
        made = factory()
    except Exception as exc:
        raise RtsalError(f"black box factory {spec} failed: {type(exc).__name__}: {exc}") from None
    if isinstance(made, BlackBox):
        made.name = made.name or spec
        box = made
    elif isinstance(made, nn.Module):
        box = wrap_module(made, spec, home=module)
    else:
        raise RtsalError(f"{spec} returned {type(made).__name__}, not a BlackBox or nn.Module")
    if weights:
        load_into(box.network, load_state_dict(weights), str(weights))
        box.source = str(weights)
    return box


class UserCodeProvider:
    prefix = "user"

    def claims(self, name: str) -> bool:
        m = _SPEC.match(name)
        if not m:
            return False
        target = m["target"]
        return target.endswith(".py") or bool(re.fullmatch(r"[\w.]+", target))

    def create(self, name: str, **options: object) -> BlackBox:
        return user_black_box(name, **options)

    def names(self, pattern: str) -> list[str]:
        return []


@hookimpl
def register_black_box_providers(register):
    register(UserCodeProvider())
