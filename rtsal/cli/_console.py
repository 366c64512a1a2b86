"""Shared console helpers: a stderr console and a Rich progress bar that, off a TTY (a log file
of a job run with nohup), writes a plain line now and then instead."""

from __future__ import annotations

import os
import sys
import time
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


class _LoggedProgress(Progress):
    """A disabled Rich progress that writes ``description: N/M (P%), elapsed, ~left`` to stderr
    at most every ``every`` seconds: long work run into a log file still says how far it is.
    Work done before the first interval ends prints nothing; a task that printed a line prints
    one more when it completes."""

    def __init__(self, *columns, every: float, **kw):
        super().__init__(*columns, **kw)
        self.every = every
        self._logged: dict = {}  # task id -> time of its last line

    def update(self, task_id, **kw) -> None:  # type: ignore[override]
        super().update(task_id, **kw)
        self._log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        last = self._logged.get(task_id)  # None: no line yet; inf: the last line is written
        if last == float("inf"):
            return
        now = time.monotonic()
        done = task.total is not None and task.completed >= task.total
        if done:
            if last is None:  # quick work stays quiet
                return
        elif now - (last if last is not None else task.start_time or now) < self.every:
            return
        self._logged[task_id] = float("inf") if done else now
        elapsed = task.elapsed or 0.0
        line = f"{task.description}: {task.completed:.0f}"
        if task.total:
            line += f"/{task.total:.0f} ({100 * task.completed / task.total:.0f}%)"
        line += f", {_duration(elapsed)} elapsed"
        if task.total and task.completed and not done:
            left = elapsed * (task.total - task.completed) / task.completed
            line += f", about {_duration(left)} left"
        print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _log_every() -> float:
    """Seconds between the plain progress lines off a TTY (``RTSAL_PROGRESS_EVERY``, 30)."""
    try:
        return max(0.0, float(os.environ.get("RTSAL_PROGRESS_EVERY", "30")))
    except ValueError:
        return 30.0


@contextmanager
def progress_bar(enabled: bool = True):
    if enabled and not err.is_terminal:
        with _LoggedProgress(console=err, disable=True, every=_log_every()) as progress:
            yield progress
        return
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
