"""Work that survives a kill, and work split over processes.

A :class:`Journal` is an append-only JSON-lines file: a header line (what the work is), then
one line per unit of finished work, each written with one ``write`` and made durable with
``fsync`` before the next unit starts. A kill can only tear the last line; opening the journal
again drops it (the file is cut back to its last complete line), so a unit is either wholly in
the journal or not at all. One process writes a journal at a time (an exclusive ``flock``);
others may read it (:func:`read_journal` ignores a torn last line).

A :class:`Shard` is one of N parts of a list: the I-th of every N blocks of consecutive items.
``--shard I/N`` names one; under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) each process
is shard RANK/WORLD_SIZE (:func:`choose_shard`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rtsal.errors import RtsalError

try:  # POSIX; elsewhere journals are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- shards


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


def process_device(
    device: str, environ: Mapping[str, str] | None = None, cuda_devices: int | None = None
) -> str:
    """The device of this process: under ``torchrun`` (``LOCAL_RANK`` set) with several CUDA
    devices, ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` (modulo the number of devices), so
    the processes of a machine share its GPUs instead of all using the first; otherwise
    ``device`` itself."""
    env = os.environ if environ is None else environ
    local = env.get("LOCAL_RANK")
    if local is None or str(device).lower() not in ("auto", "cuda") or not local.isdigit():
        return device
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_devices < 2:
        return device
    return f"cuda:{int(local) % cuda_devices}"


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


# --------------------------------------------------------------------------- journals


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


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
                _fsync_dir(path.parent)
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


@contextlib.contextmanager
def atomic_lines(path: Path) -> Iterator[IO[str]]:
    """A text file written line by line under a temporary name beside ``path`` and renamed
    over it once complete and on disk: readers see the old file or the whole new one. An error
    (or a kill) leaves ``path`` as it was (a kill, also a hidden temporary:
    :func:`remove_temporaries`)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path, owned: Callable[[str], bool]) -> int:
    """Delete the temporaries a killed writer left in ``folder`` (``.NAME.*.tmp``, as
    :func:`atomic_lines` and ``atomic_write_bytes`` make them) for the files whose NAME
    ``owned`` accepts: only this process's, so that it never removes a file another process is
    writing."""
    removed = 0
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file() and owned(p.name[1:-4].rpartition(".")[0]):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
