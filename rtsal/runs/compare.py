"""``rtsal compare``: two methods (or two checkpoints) scored on the same images by
``rtsal metric --out`` or ``rtsal localize --out``, compared image by image.

A difference of a few points between two scores on a few hundred images may be chance; scored
on the same images, the images where the two disagree say whether it is. Rates (localisation
error, pointing) get the exact McNemar test, per-image scores (the saliency metric,
deletion/insertion, f_c on the kept and removed parts, the absent-class area) a paired-bootstrap
95 % interval of the mean difference (see :mod:`rtsal.metrics.uncertainty`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rtsal.errors import RtsalError
from rtsal.metrics.uncertainty import MeanComparison, RateComparison, compare_means, compare_rates
from rtsal.runs.records import SCORES, collect_scores

# (name in the output, record field, True when the rate counts the images where the field is false)
RATES: tuple[tuple[str, str, bool], ...] = (
    ("localization_error", "localized", True),
    ("pointing", "pointing_hit", False),
)
# record fields whose per-image values are compared by their mean
MEANS: tuple[str, ...] = (
    "saliency",
    "p_image_times_mask",
    "p_image_times_inverse",
    "area_absent",
    "deletion",
    "insertion",
)


@dataclass(frozen=True)
class Scores:
    """One run's per-image records (its records file), keyed by (input, class)."""

    path: Path
    method: str
    command: str
    checkpoint: str | None
    rows: dict[tuple[str, int], Mapping[str, Any]]


@dataclass
class Comparison:
    a: Scores
    b: Scores
    images: int  # scored by both
    only_in_a: int
    only_in_b: int
    rates: dict[str, RateComparison]
    means: dict[str, MeanComparison]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": _run(self.a),
            "b": _run(self.b),
            "images": self.images,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "rates": {k: {**asdict(v), "difference": v.difference} for k, v in self.rates.items()},
            "means": {k: asdict(v) for k, v in self.means.items()},
        }


def _run(s: Scores) -> dict[str, Any]:
    return {"path": str(s.path), "method": s.method, "checkpoint": s.checkpoint}


def _name(s: Scores) -> str:
    return s.method + (f", checkpoint {s.checkpoint}" if s.checkpoint else "")


def _records(path: Path) -> tuple[Path, dict[str, Any], list[Any]]:
    """The header and records of ``path``: a records file, or a folder holding one run's scores
    (one file, or every shard of it: joined as ``rtsal merge`` joins them)."""
    from rtsal.runs.journal import read_journal

    path = Path(path).expanduser()
    if path.is_file():
        header, records = read_journal(path)
        if header is None or header.get("rtsal") != SCORES:
            raise RtsalError(f"{path}: not a scores file of rtsal metric or rtsal localize")
        return path, header, records
    if not path.is_dir():
        raise RtsalError(f"{path}: no such file or folder")
    runs = collect_scores([path])
    if not runs:
        raise RtsalError(
            f"{path}: no scores in it (the --out folder of rtsal metric or rtsal localize)"
        )
    if len(runs) > 1:
        names = ", ".join(f"{r.method}-{r.command}" for r in runs)
        raise RtsalError(f"{path} holds several runs' scores ({names}); name the file")
    run = runs[0]
    return path, run.header, run.records


def read_scores(path: Path) -> Scores:
    """The records of ``path`` (a records file, or the folder holding one run's scores)."""
    file, header, records = _records(path)
    rows: dict[tuple[str, int], Mapping[str, Any]] = {}
    for r in records:
        if not isinstance(r, dict) or "input" not in r or "class_index" not in r:
            raise RtsalError(f"{file}: a record without input and class_index")
        rows[(str(r["input"]), int(r["class_index"]))] = r
    if not rows:
        raise RtsalError(f"{file}: no images scored")
    opts = header.get("options", {})
    ckpt = opts.get("checkpoint")
    return Scores(
        file, str(opts.get("method")), str(header.get("command")), ckpt and str(ckpt), rows
    )


def compare_scores(a: Path, b: Path, *, seed: int = 0) -> Comparison:
    """A and B on the images both scored: every rate and mean both records hold."""
    sa, sb = read_scores(a), read_scores(b)
    common = [k for k in sa.rows if k in sb.rows]
    if not common:
        raise RtsalError(
            f"{sa.path} and {sb.path} share no image (same --data and --boxes are needed)"
        )
    ra = [sa.rows[k] for k in common]
    rb = [sb.rows[k] for k in common]
    rates, means = {}, {}
    for name, field, invert in RATES:
        if all(field in r for r in ra) and all(field in r for r in rb):
            rates[name] = compare_rates(
                [bool(r[field]) != invert for r in ra], [bool(r[field]) != invert for r in rb]
            )
    for field in MEANS:
        if all(r.get(field) is not None for r in ra) and all(r.get(field) is not None for r in rb):
            means[field] = compare_means(
                [float(r[field]) for r in ra], [float(r[field]) for r in rb], seed=seed
            )
    if not rates and not means:
        raise RtsalError(f"{sa.path} and {sb.path} have no metric in common")
    return Comparison(
        sa, sb, len(common), len(sa.rows) - len(common), len(sb.rows) - len(common), rates, means
    )


def describe(c: Comparison) -> str:
    """The comparison as lines of text."""
    lines = [
        f"A: {_name(c.a)} ({c.a.path})",
        f"B: {_name(c.b)} ({c.b.path})",
        f"on the {c.images} images both scored"
        + (
            f" ({c.only_in_a} only in A, {c.only_in_b} only in B, left out)"
            if c.only_in_a or c.only_in_b
            else ""
        ),
    ]
    labels = {"localization_error": "localisation error", "pointing": "pointing game"}
    for name, r in c.rates.items():
        what = "wrong" if name == "localization_error" else "right"
        lines.append(
            f"  {labels[name]:<22} A {100 * r.a:5.1f}%  B {100 * r.b:5.1f}%  "
            f"A-B {100 * r.difference:+.1f} points; {what} for A only {r.only_a}, for B only "
            f"{r.only_b} (exact McNemar p = {r.p_value:.2g})"
        )
    for name, m in c.means.items():
        lo, hi = m.interval
        verdict = "" if lo <= 0 <= hi else "  (differs)"
        lines.append(
            f"  {name:<22} A {m.a:6.3f}  B {m.b:6.3f}  A-B {m.difference:+.3f} "
            f"[95% CI {lo:+.3f} to {hi:+.3f}]{verdict}"
        )
    return "\n".join(lines)
