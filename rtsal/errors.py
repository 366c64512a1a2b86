"""Domain errors. The CLI turns every ``RtsalError`` into one line on stderr and exit code 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RtsalError(Exception):
    """Base class for errors caused by user input (files, names, options), not by bugs."""


class UnknownNameError(RtsalError, KeyError):
    """A name (black box, class, method, preset) is not known; suggests close matches."""

    def __init__(self, kind: str, name: str, candidates: Iterable[str] = (), hint: str = ""):
        self.kind = kind
        self.name = name
        self.matches = close_matches(name, candidates)
        msg = f"unknown {kind} {name!r}"
        if self.matches:
            msg += "; did you mean " + ", ".join(repr(m) for m in self.matches) + "?"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class UnknownBlackBoxError(UnknownNameError):
    def __init__(self, name: str, candidates: Iterable[str] = (), hint: str = ""):
        super().__init__("black box", name, candidates, hint)


class UnknownClassError(UnknownNameError):
    def __init__(self, name: str, candidates: Iterable[str] = (), hint: str = ""):
        super().__init__("class", name, candidates, hint)


class AmbiguousClassError(RtsalError):
    def __init__(self, name: str, candidates: list[str]):
        self.candidates = candidates
        shown = ", ".join(candidates[:8]) + (" ..." if len(candidates) > 8 else "")
        super().__init__(f"class {name!r} is ambiguous: it matches {shown}")


class CheckpointError(RtsalError):
    """A checkpoint is missing, corrupt, or does not belong to the black box in use."""


class DataError(RtsalError):
    """A data set or image cannot be read."""


class WeightsUnavailableError(RtsalError):
    """Pretrained weights cannot be obtained (offline, no local file)."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    cands = list(dict.fromkeys(candidates))
    lowered = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if not hits:  # substring matches help with long timm names ("resnet" -> "resnet50")
        hits = [c for c in lowered if name.lower() in c][:n]
    return [lowered[h] for h in hits]
