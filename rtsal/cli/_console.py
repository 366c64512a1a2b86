"""Shared console helpers: a stderr console and a Rich progress bar that is quiet off a TTY."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True, soft_wrap=True)
out = Console(
    soft_wrap=True, width=None if sys.stdout.isatty() else 200
)  # tables unclipped in pipes


@contextmanager
def progress_bar(enabled: bool = True):
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not (enabled and err.is_terminal),
        transient=False,
    )
    with progress:
        yield progress


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    from rtsal.errors import RtsalError

    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise RtsalError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise RtsalError(f"{option} takes positive integers, got {text!r}")
    return vals
