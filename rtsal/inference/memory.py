"""The explainer's memory guard: what a call would need, estimated before any work, and a
one-line refusal naming what to lower when that is above the limit."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rtsal.errors import RtsalError

# (image, class) pairs decoded and scored in one pass (masks, f_c(X * M), f_c(X * (1 - M)),
# boxes): the per-pair working memory is this many pairs' worth, whatever topk is. 16 is as fast
# as 32 on a CPU (from 16 rows on, the 1 x 1 convolutions take oneDNN's faster path) for half
# the memory (docs/performance.md).
DEFAULT_CHUNK_SIZE = 16
# Refuse a call whose estimated memory is above this (bytes; RTSAL_MEMORY_LIMIT, e.g. "12G",
# overrides it, "0" turns the check off).
DEFAULT_MEMORY_LIMIT = 8 * 10**9
# Estimated working memory of one (image, class) pair in a chunk, per pixel at the model's
# resolution: its encoder features, the decoder's activations, X * M, X * (1 - M) and the black
# box's activations on them. Measured on the shipped model (EfficientNet-Lite0 at 224 x 352,
# 35-45 MB a pair, docs/performance.md) and rounded up.
PAIR_BYTES_PER_PIXEL = 600
# What ``rtsal explain`` keeps of each (image, class) pair until the end: its record (about
# 1.1 kB, measured with tracemalloc) and its rows in index.html and explanations.jsonl, built
# at the end; rounded up.
RECORD_BYTES = 4096


@dataclass(frozen=True)
class MemoryGuard:
    """Estimates and the check for an explainer that explains ``chunk_size`` (image, class)
    pairs at a time under a limit of ``limit`` bytes (0: none)."""

    chunk_size: int
    limit: int

    def estimate(
        self,
        images: int,
        per_image: int,
        size: tuple[int, int],
        *,
        hold_masks: bool = False,
        records: int = 0,
    ) -> dict[str, int]:
        """Bytes a call needs, by what they are for (estimates, see ``PAIR_BYTES_PER_PIXEL``):
        ``working`` for the encoder pass over ``images`` images and one chunk of (image, class)
        pairs at model resolution ``size``; ``masks`` for the masks :meth:`explain_batch` returns
        (at model resolution, ``hold_masks``); ``records`` for ``rtsal explain``'s records."""
        pixels = size[0] * size[1]
        pairs = images * per_image
        return {
            "working": (min(self.chunk_size, pairs) + images) * pixels * PAIR_BYTES_PER_PIXEL,
            "masks": pairs * pixels * 4 if hold_masks else 0,
            "records": records * RECORD_BYTES,
        }

    def check(
        self,
        estimate: dict[str, int],
        *,
        images: int,
        per_image: int,
        batch: int | None = None,
    ) -> None:
        """Refuse, in one line saying what to lower, a call whose estimate is above the limit
        (``images`` in all, ``batch`` of them, default all, in one encoder pass)."""
        total = sum(estimate.values())
        if not self.limit or total <= self.limit:
            return
        biggest = max(estimate, key=estimate.__getitem__)
        pairs = f"{images} image{'s' if images != 1 else ''} x {per_image} classes"
        if biggest == "working":
            at_once = min(self.chunk_size, (batch or images) * per_image)
            what = f"{at_once} (image, class) pairs at a time"
            lower = f"lower the chunk size (--chunk-size, chunk_size; now {self.chunk_size})"
        elif biggest == "masks":
            what = f"{pairs}, every mask held in the results"
            lower = (
                "lower topk or the number of images per call, or use iter_explanations "
                "(one explanation at a time)"
            )
        else:
            what = f"{pairs}, a record kept for each"
            lower = "lower --topk or explain fewer images per run"
        raise RtsalError(
            f"explaining {what} would need about {total / 1e9:.1f} GB, above the "
            f"{self.limit / 1e9:.1f} GB limit: {lower} (or raise RTSAL_MEMORY_LIMIT)"
        )


def memory_limit(limit: int | str | None) -> int:
    """Bytes from an option or ``RTSAL_MEMORY_LIMIT`` ("8G", "500M", "8e9"; 0: no limit)."""
    if limit is None:
        limit = os.environ.get("RTSAL_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT
    if isinstance(limit, int) and not isinstance(limit, bool):
        value = float(limit)
    else:
        text = str(limit).strip().upper().removesuffix("B")
        scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(text[-1:], 1.0)
        try:
            value = float(text[:-1] if scale != 1.0 else text) * scale
        except ValueError:
            value = -1.0
    if not 0 <= value < float("inf"):
        raise RtsalError(
            f"memory limit {limit!r} (RTSAL_MEMORY_LIMIT): give a size such as 8G or 500M, "
            "or 0 for no limit"
        )
    return int(value)
