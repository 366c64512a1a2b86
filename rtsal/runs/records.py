"""The records files of ``rtsal metric`` and ``rtsal localize``: one line per scored sample
after a header saying what the run is (:func:`rtsal.runs.scoring.scores_header`), written
whole or not at all; a whole run's CSV rows, summary and PR curve beside them; and the files of
a run's shards, checked to be of one run and joined (:func:`collect_scores`), as ``rtsal merge``
and ``rtsal compare`` read them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtsal.errors import RtsalError
from rtsal.files import atomic_lines, remove_temporaries
from rtsal.metrics.scoring import pixel_metrics_of, summarize
from rtsal.runs.journal import first_difference, read_journal
from rtsal.runs.shards import Shard, choose_shard

SCORES = "scores"  # the header's "rtsal" of a records file
SCORES_VERSION = 1
CSV_LEFT_OUT = ("sample", "state")  # what a record holds beyond its CSV row


def records_name(header: Mapping[str, Any]) -> str:
    shard = choose_shard(header["shard"])
    return f"{header['options']['method']}-{header['command']}{shard.suffix}.jsonl"


def write_scores(
    out_dir: Path,
    header: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    *,
    pr_png: Path | None = None,
) -> list[Path]:
    """A shard's records; or a whole run's records, CSV rows, summary JSON and PR curve."""
    import csv
    import json

    path = out_dir / records_name(header)
    remove_temporaries(out_dir, lambda name: name == path.name)  # a killed run's
    with atomic_lines(path) as f:
        f.write(json.dumps(header) + "\n")
        for r in records:
            f.write(json.dumps(r) + "\n")
    if choose_shard(header["shard"]).sharded:
        return [path]
    method, stem = header["options"]["method"], header["command"]
    csv_path = out_dir / f"{method}-{stem}.csv"
    rows = [{k: v for k, v in r.items() if k not in CSV_LEFT_OUT} for r in records]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    csv_path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    written = [csv_path, csv_path.with_suffix(".json"), path]
    if "pixel" in header["options"]["metrics"]:
        written.append(draw_pr_curve(pr_png or out_dir / f"{method}-pr.png", method, summary))
    return written


def draw_pr_curve(path: Path, method: str, summary: Mapping[str, Any]) -> Path:
    from rtsal.metrics.pixel import plot_pr_curves

    curves = {method: pixel_metrics_of(summary)}
    return plot_pr_curves(curves, path, title=f"{method}: PR curve")


@dataclass
class MergedScores:
    """One method and command's records from several files, checked to make one whole run
    (:func:`collect_scores`); :meth:`write` makes its files."""

    command: str
    method: str
    header: dict[str, Any]  # the whole run's
    records: list[dict[str, Any]]  # one per sample, in order
    parts: int  # files merged
    summary: dict[str, Any] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return len(self.records)

    def write(self, out: Path) -> None:
        self.summary = summarize(self.records, self.header["options"]["metrics"], self.method)
        self.written = write_scores(out, self.header, self.records, self.summary)


def collect_scores(folders: Sequence[Path]) -> list[MergedScores]:
    """The records files (``<method>-<stem>[.shard-I-of-N].jsonl``) in ``folders``, one
    :class:`MergedScores` for each method and command. Files of the same method and command must
    be of the same run, and every sample must be in one of them (:class:`RtsalError` otherwise,
    before anything is written)."""
    import json

    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any], list[Any]]]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.jsonl")):
            header, records = read_journal(path)
            if header is None or header.get("rtsal") != SCORES:
                continue
            opts = header.get("options")
            if not isinstance(opts, dict) or any(
                k not in header for k in ("command", "samples", "inputs", "shard")
            ):
                raise RtsalError(f"{path}: a scores file whose header lacks its run's fields")
            key = (header["command"], opts.get("method"))
            groups.setdefault(key, []).append((path, header, records))
    merged = []
    for (command, method), parts in groups.items():
        first_path, first, _ = parts[0]
        by_sample: dict[int, dict[str, Any]] = {}
        for path, header, records in parts:
            diff = first_difference(
                {**first["options"], "samples": first["samples"], "inputs": first["inputs"]},
                {**header["options"], "samples": header["samples"], "inputs": header["inputs"]},
            )
            if diff is not None:
                what, a, b = diff
                raise RtsalError(
                    f"{path} is not of the run of {first_path} ({what}: {json.dumps(b)} "
                    f"against {json.dumps(a)})"
                )
            for r in records:
                by_sample.setdefault(int(r["sample"]), r)
        n = int(first["samples"])
        missing = [k for k in range(n) if k not in by_sample]
        if missing:
            counts = sorted({choose_shard(h["shard"]).count for _, h, _ in parts} - {1})
            owner = f" (shard {missing[0] % counts[0]}/{counts[0]})" if counts else ""
            raise RtsalError(
                f"{method} {command}: {len(missing)} of {n} samples are in none of the files, "
                f"e.g. sample {missing[0]}{owner}; run the missing shards first"
            )
        header = {**first, "shard": str(Shard())}
        records = [by_sample[k] for k in range(n)]
        merged.append(MergedScores(command, method, header, records, len(parts)))
    return merged
