"""Class selectors: an index, a WordNet synset (``n02088364``) or a name (``beagle``,
``Egyptian cat``, ``egyptian_cat``), matched case- and separator-insensitively."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rtsal.errors import AmbiguousClassError, UnknownClassError

_SEP = re.compile(r"[\s_\-/]+")


def normalise_class_name(name: str) -> str:
    return _SEP.sub(" ", name.strip().lower().replace("'", "")).strip()


class ClassResolver:
    """Maps selectors to class indices for one black box."""

    def __init__(self, class_names: Sequence[str], synonyms: Sequence[Sequence[str]] | None = None):
        self.class_names = list(class_names)
        synonyms = synonyms or [(n,) for n in self.class_names]
        self._index: dict[str, set[int]] = {}
        for i, (name, syns) in enumerate(zip(self.class_names, synonyms, strict=True)):
            for s in {name, *syns}:
                self._index.setdefault(normalise_class_name(s), set()).add(i)

    @classmethod
    def for_black_box(cls, box) -> ClassResolver:
        return cls(box.class_names, getattr(box, "class_synonyms", None))

    def describe(self, i: int) -> str:
        return f"{i}:{self.class_names[i]}"

    def resolve(self, selector: str | int) -> int:
        n = len(self.class_names)
        if isinstance(selector, int) or (isinstance(selector, str) and selector.strip().isdigit()):
            i = int(selector)
            if not 0 <= i < n:
                raise UnknownClassError(str(selector), hint=f"class indices run from 0 to {n - 1}")
            return i
        key = normalise_class_name(selector)
        hits = self._index.get(key, set())
        if len(hits) == 1:
            return next(iter(hits))
        if len(hits) > 1:
            raise AmbiguousClassError(
                selector,
                [f"{self.describe(i)} ({self._first_other(i, key)})" for i in sorted(hits)],
            )
        raise UnknownClassError(
            selector, self._index, hint="pass an index, a synset or one of the black box's names"
        )

    def _first_other(self, i: int, key: str) -> str:
        others = [k for k, v in self._index.items() if i in v and k != key]
        return min(others, key=len) if others else str(i)

    def resolve_many(self, selectors: Sequence[str | int]) -> list[int]:
        return [self.resolve(s) for s in selectors]
