"""Classifier checkpoints made by ``rtsal classifier train``: ``--blackbox DIR`` or ``ckpt:DIR``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from rtsal.registry.blackbox import BlackBox


class ClassifierCheckpointProvider:
    prefix = "ckpt"

    def claims(self, name: str) -> bool:
        from rtsal.engine.checkpoint import META_NAME

        p = Path(name).expanduser()
        meta = p / META_NAME if p.is_dir() else p
        if meta.name != META_NAME or not meta.is_file():
            return False
        try:
            return json.loads(meta.read_text()).get("format") == "rtsal-classifier"
        except (OSError, ValueError):
            return True  # let create() report the broken file

    def create(self, name: str, **options: object) -> BlackBox:
        from rtsal.registry.classifiers import load_classifier

        return load_classifier(name)

    def names(self, pattern: str) -> list[str]:
        return []


@hookimpl
def register_black_box_providers(register):
    register(ClassifierCheckpointProvider())
