"""Hugging Face ``transformers`` image classifiers as rtsal black boxes.

``hf:ORG/NAME`` loads a model of the Hugging Face Hub (from the local cache when the Hub cannot be
reached) and ``hf:/path/to/dir`` a directory written by ``model.save_pretrained`` and
``image_processor.save_pretrained``. Any model ``AutoModelForImageClassification`` can build is
accepted; its preprocessing comes from its image processor and its class names from
``config.id2label``.

Importing this module is cheap (no torch, no transformers): both are imported when a black box is
built, so ``rtsal --help`` stays fast with the plugin installed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rtsal import hookimpl
from rtsal.errors import RtsalError

if TYPE_CHECKING:
    from rtsal import BlackBox

__version__ = "0.1.0"

PLUGIN_NAME = "transformers"  # the entry-point name; black boxes name it as their provider
PREFIX = "hf"
_TRUE = ("1", "true", "yes", "on")
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class ModelSource:
    """Where an ``hf:`` black box comes from: a local directory or a Hub model id."""

    path: str  # absolute directory, or ORG/NAME
    local: bool

    @property
    def name(self) -> str:
        """The black-box name that recreates it: ``hf:/abs/dir`` or ``hf:ORG/NAME``."""
        return f"{PREFIX}:{self.path}"

    @classmethod
    def parse(cls, spec: str) -> ModelSource:
        """``spec`` is what follows ``hf:``: an existing directory (as ``from_pretrained`` would
        read it), something spelt as a path (``/``, ``.``, ``~``), or a Hub model id."""
        spec = spec.strip()
        if not spec:
            raise RtsalError(
                "hf: needs a model: hf:ORG/NAME (Hugging Face Hub) or hf:/path/to/dir "
                "(written by save_pretrained)"
            )
        path = Path(spec).expanduser()
        if path.is_dir():
            return cls(str(path.resolve()), True)
        if spec.startswith(("/", ".", "~")) or "\\" in spec:
            raise RtsalError(f"{PREFIX}:{spec}: no such directory ({path.resolve()})")
        return cls(spec, False)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers; decided in seconds rather than after minutes of
    retries. ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) says no without asking."""
    if any(os.environ.get(v, "").lower() in _TRUE for v in _OFFLINE_VARIABLES):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_cache() -> Path:
    """The Hugging Face cache directory (``HF_HUB_CACHE``, ``HF_HOME``), as the Hub reads it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_classifiers(cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """Hub models in the local cache whose config names an image classifier: ``{ORG/NAME:
    config}`` (what ``hf:ORG/NAME`` can load offline)."""
    if cache is None:
        try:
            cache = hub_cache()
        except ImportError:  # no huggingface_hub (nor transformers): nothing can be cached
            return {}
    found: dict[str, dict[str, Any]] = {}
    for config_file in sorted(cache.glob("models--*/snapshots/*/config.json")):
        repo = config_file.parents[2].name[len("models--") :].replace("--", "/")
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError):
            continue
        architectures = config.get("architectures") or []
        if any(str(a).endswith("ForImageClassification") for a in architectures):
            found.setdefault(repo, config)
    return found


class TransformersProvider:
    """``hf:ORG/NAME`` and ``hf:/path/to/dir``; claims no unprefixed name."""

    prefix = PREFIX

    def claims(self, name: str) -> bool:
        return False

    def create(self, name: str, **options: Any) -> BlackBox:
        from rtsal_transformers.loading import hf_black_box

        return hf_black_box(name, **options)

    def names(self, pattern: str) -> list[str]:
        """Image classifiers in the local cache (``ORG/NAME``; rtsal lists them as ``hf:ORG/NAME``)
        whose id, or ``hf:`` name, matches ``pattern``."""
        pattern = pattern.lower()
        return [
            repo
            for repo in cached_classifiers()
            if any(fnmatch.fnmatch(n.lower(), pattern) for n in (repo, f"{PREFIX}:{repo}"))
        ]


@hookimpl
def register_black_box_providers(register: Any) -> None:
    """``hf:ORG/NAME`` and ``hf:/path/to/dir`` black boxes."""
    register(TransformersProvider())


__all__ = [
    "PLUGIN_NAME",
    "PREFIX",
    "ModelSource",
    "TransformersProvider",
    "cached_classifiers",
    "hub_reachable",
    "register_black_box_providers",
]
