"""Work split over processes.

A :class:`Shard` is one of N parts of a list: the I-th of every N blocks of consecutive items.
``--shard I/N`` names one; under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) each process
is shard RANK/WORLD_SIZE (:func:`choose_shard`), and on a machine with several GPUs takes its
own (:func:`rtsal.device.process_device`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rtsal.errors import RtsalError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the items in blocks ``b`` with ``b % count == index``."""

    index: int = 0
    count: int = 1

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def owns(self, position: int, block: int = 1) -> bool:
        """Whether the item at ``position`` of the whole list, in blocks of ``block``
        consecutive items, is this shard's."""
        return (position // max(1, block)) % self.count == self.index

    @property
    def suffix(self) -> str:
        """File-name part of this shard's outputs: ``""``, or ``".shard-1-of-4"``."""
        return f".shard-{self.index}-of-{self.count}" if self.sharded else ""

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (0 <= I < N) -> :class:`Shard`; anything else is one-line error."""
    index, sep, count = str(text).strip().partition("/")
    try:
        shard = Shard(int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise RtsalError(f"--shard takes I/N with 0 <= I < N (e.g. 0/4); got {text!r}")
    return shard


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard:
    """Shard RANK/WORLD_SIZE when both are set (as ``torchrun`` does), else the whole list."""
    env = os.environ if environ is None else environ
    rank, world = env.get("RANK"), env.get("WORLD_SIZE")
    if rank is None or world is None:
        return Shard()
    try:
        return parse_shard(f"{int(rank)}/{int(world)}")
    except (ValueError, RtsalError):
        raise RtsalError(
            f"RANK={rank!r} and WORLD_SIZE={world!r} do not name a shard (0 <= RANK < WORLD_SIZE)"
        ) from None


def choose_shard(spec: str | Shard | None, environ: Mapping[str, str] | None = None) -> Shard:
    """``--shard`` if given, else RANK/WORLD_SIZE from the environment, else the whole list."""
    if isinstance(spec, Shard):
        return spec
    return parse_shard(spec) if spec else shard_from_env(environ)
