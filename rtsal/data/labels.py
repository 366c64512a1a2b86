"""Labelled image lists for evaluation: a folder, or a file of paths, classes from names."""

from __future__ import annotations

from pathlib import Path

from rtsal.data.folders import _label_for, scan_image_folder
from rtsal.errors import DataError
from rtsal.registry.classes import ClassResolver


def labelled_samples(
    resolver: ClassResolver, *, data: Path | None = None, files: Path | None = None
) -> list[tuple[Path, int]]:
    if data is not None:
        return scan_image_folder(Path(data), resolver)
    assert files is not None
    if not files.is_file():
        raise DataError(f"file list not found: {files}")
    samples = []
    for line in files.read_text().splitlines():
        if not line.strip():
            continue
        p = Path(line.strip())
        label = _label_for(p.stem, resolver)
        if label is None:
            raise DataError(f"{p}: cannot tell its class from the file name")
        samples.append((p, label))
    if not samples:
        raise DataError(f"{files} lists no images")
    return samples
