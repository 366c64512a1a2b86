"""Files that are whole or absent: output folders checked before long work starts, files
written (or linked) under a temporary name and renamed into place once on disk, and the
temporaries a killed writer leaves behind.

A foundation module (the standard library alone): checkpoints, the training state, exports and
batch runs all write through it. Every temporary is ``.NAME.<random>.tmp`` beside ``NAME``, so
:func:`remove_temporaries` can tell whose it is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from rtsal.errors import RtsalError


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` (a directory) and check it is writable, before any long work starts."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise RtsalError(f"output path exists and is not a directory: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".rtsal-write-test-"):
            pass
    except OSError as exc:
        raise RtsalError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    return out


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (where the file system allows it)."""
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file ``.NAME.<random>.tmp`` beside ``path``, with the mode a finished
    file gets (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over it."""
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path`` (for writers that take a file name, such
    as ``torch.jit.save`` or ``torch.onnx.export``), then rename it over ``path``."""
    fd, tmp = _temporary_beside(path)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_lines(path: Path) -> Iterator[IO[str]]:
    """A text file written line by line under a temporary name beside ``path`` and renamed
    over it once complete and on disk: readers see the old file or the whole new one. An error
    (or a kill) leaves ``path`` as it was (a kill, also a hidden temporary:
    :func:`remove_temporaries`)."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` the same file as ``src``: a hard link where the file system allows, else a
    copy; put in place by a rename, so ``dst`` is never partial."""
    with contextlib.suppress(OSError):
        if dst.exists() and os.path.samefile(src, dst):
            return
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path, owned: Callable[[str], bool] | None = None) -> int:
    """Delete the temporaries a killed writer left in ``folder`` (``.NAME.*.tmp``, as
    :func:`atomic_lines` and :func:`atomic_write_bytes` make them), never a finished file; with
    ``owned``, only those of the files whose NAME it accepts (this process's, so that it never
    removes a file another process is writing). The number removed."""
    removed = 0
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file() and (owned is None or owned(p.name[1:-4].rpartition(".")[0])):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
