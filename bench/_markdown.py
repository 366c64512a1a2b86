"""Writing a benchmark's section into a Markdown page, between markers named after the script,
so that reruns replace it and leave the rest of the page alone."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, script: str, text: str) -> None:
    """Put ``text`` between ``<!-- {script}: begin -->`` and ``<!-- {script}: end -->``."""
    begin, end = f"<!-- {script}: begin -->", f"<!-- {script}: end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    doc = path.read_text() if path.exists() else "# Performance\n"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
