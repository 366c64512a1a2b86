"""Work that survives a kill.

A :class:`Journal` is an append-only JSON-lines file: a header line (what the work is), then
one line per unit of finished work, each written with one ``write`` and made durable with
``fsync`` before the next unit starts. A kill can only tear the last line; opening the journal
again drops it (the file is cut back to its last complete line), so a unit is either wholly in
the journal or not at all. One process writes a journal at a time (an exclusive ``flock``);
others may read it (:func:`read_journal` ignores a torn last line).

A journal's header says what the work is; :func:`fingerprint` and :func:`first_difference`
tell whether a journal found in a folder is of the same work (resuming, merging shards).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rtsal.errors import RtsalError
from rtsal.files import fsync_dir

try:  # POSIX; elsewhere journals are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def fingerprint(keys: Iterable[str]) -> str:
    """A short digest of an ordered list of names: two processes listed the same inputs."""
    h = hashlib.sha256()
    for key in keys:
        h.update(key.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()[:16]


def first_difference(
    then: Mapping[str, Any], now: Mapping[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first key whose value differs between two option sets: (key, then, now)."""
    for key in dict.fromkeys([*then, *now]):
        if then.get(key) != now.get(key):
            return key, then.get(key), now.get(key)
    return None


def _lines(data: bytes) -> tuple[list[Any], int]:
    """The JSON values of the complete, valid lines at the start of ``data``, and the number
    of bytes they take (where a torn or damaged line begins)."""
    values, end = [], 0
    while True:
        nl = data.find(b"\n", end)
        if nl < 0:
            return values, end
        try:
            values.append(json.loads(data[end:nl]))
        except ValueError:
            return values, end
        end = nl + 1


def read_journal(path: Path) -> tuple[dict[str, Any] | None, list[Any]]:
    """The header and the entries of the journal at ``path`` as written so far, without
    changing it (a torn last line, as a writer killed mid-line leaves, is left out)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, []
    values, _ = _lines(data)
    if not values or not isinstance(values[0], dict):
        return None, []
    return values[0], values[1:]


def is_being_written(path: Path) -> bool:
    """Whether a process holds the journal at ``path`` open for writing."""
    if fcntl is None or not Path(path).is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


class Journal:
    """The append-only journal at ``path``, open for writing by this process alone.

    :meth:`open` creates it with ``header`` as its first line, or opens an existing one (cut
    back to its last complete line) and keeps the header it was started with; ``entries`` are
    the lines already in it. :meth:`append` adds one entry durably."""

    def __init__(self, path: Path, fd: int, header: dict[str, Any], entries: list[Any]):
        self.path = path
        self.fd = fd
        self.header = header
        self.entries = entries

    @classmethod
    def open(cls, path: Path, header: dict[str, Any]) -> Journal:
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise RtsalError(
                        f"{path} is being written by another process; wait for it to finish "
                        "or stop it first"
                    ) from None
            data = b""
            while chunk := os.read(fd, 1 << 20):
                data += chunk
            values, end = _lines(data)
            if end < len(data):  # a torn or damaged tail: cut it off
                os.ftruncate(fd, end)
                os.fsync(fd)
            if not values or not isinstance(values[0], dict):  # new (or torn before the header)
                os.ftruncate(fd, 0)
                journal = cls(path, fd, header, [])
                journal._write(header)
                fsync_dir(path.parent)
                return journal
            return cls(path, fd, values[0], values[1:])
        except BaseException:
            os.close(fd)
            raise

    def _write(self, value: Any) -> None:
        data = memoryview((json.dumps(value, separators=(",", ":")) + "\n").encode())
        while data:
            data = data[os.write(self.fd, data) :]
        os.fsync(self.fd)

    def append(self, entry: Any) -> None:
        """Write ``entry`` as one line and wait until it is on disk."""
        self._write(entry)
        self.entries.append(entry)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
