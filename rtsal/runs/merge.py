"""``rtsal merge``: the outputs of shards (``--shard I/N`` of ``rtsal explain``, ``rtsal metric``
and ``rtsal localize``), written to one folder or several, joined into the folder one run would
have written: for explanations, every image's files, ``explanations.jsonl``, ``index.html`` and
one manifest; for scores, the records, the CSV rows, the summary and the PR curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rtsal.errors import RtsalError
from rtsal.files import atomic_lines, link_or_copy, remove_temporaries
from rtsal.runs.manifest import Finished, manifest_name, read_finished, running_manifests
from rtsal.runs.outputs import VIEW_FILES, write_finished
from rtsal.runs.records import MergedScores, collect_scores
from rtsal.runs.shards import Shard, choose_shard


@dataclass
class MergedExplanations:
    images: int  # listed
    explained: int
    failed: int
    manifests: int  # merged
    index: Path


@dataclass
class MergeResult:
    out: Path
    explanations: MergedExplanations | None = None
    scores: list[MergedScores] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        e = self.explanations
        return {
            "out": str(self.out),
            "explanations": None if e is None else {**asdict(e), "index": str(e.index)},
            "scores": [
                {
                    "command": s.command,
                    "method": s.method,
                    "samples": s.samples,
                    "files": s.parts,
                    "summary": s.summary,
                }
                for s in self.scores
            ],
        }


def merge_outputs(sources: Sequence[str | Path], out: str | Path | None = None) -> MergeResult:
    """Join the shards' outputs in the folders ``sources`` into ``out`` (default: the one source
    folder, in place). Outputs already in ``out`` take part. Refused in one line, before anything
    is written, when the shards are of different runs, when one is still running, or when some
    image or sample is in no shard's output."""
    from rtsal.files import prepare_out_dir

    folders = [Path(s).expanduser() for s in sources]
    for f in folders:
        if not f.is_dir():
            raise RtsalError(f"{f}: no such folder")
    if out is None:
        if len(folders) != 1:
            raise RtsalError("merging several folders needs --out")
        out = folders[0]
    target = Path(out).expanduser()
    if target.is_dir() and not any(_same(target, f) for f in folders):
        folders.append(target)
    finished = collect_explanations(folders)
    scores = collect_scores(folders)
    if finished is None and not scores:
        raise RtsalError(
            f"nothing to merge in {', '.join(map(str, folders))}: no manifest of rtsal explain "
            "and no records of rtsal metric or localize (their --out folders)"
        )
    target = prepare_out_dir(target)
    result = MergeResult(target, None, scores)
    if finished is not None:
        result.explanations = write_explanations(finished, target)
    for group in scores:
        group.write(target)
    return result


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def collect_explanations(folders: Sequence[Path]) -> Finished | None:
    """The manifests of ``rtsal explain`` in ``folders`` as one run (None when there are none),
    checked: of the same run, none being written, every image finished (or unreadable) and every
    file they list present."""
    running = running_manifests(folders)
    if running:
        raise RtsalError(
            f"{running[0]} is being written by a running rtsal explain; merge when it has ended"
        )

    def refuse(path: Path, first: Path | None, how: tuple[str, str, str]) -> str:
        what, a, b = how
        return f"{path} and {first} are of different runs ({what}: {a} against {b})"

    finished = read_finished(folders, refuse=refuse)
    if finished.header is None:
        return None
    if not finished.complete:
        raise RtsalError(_unfinished(finished))
    _output_files(finished)
    return finished


def write_explanations(finished: Finished, out: Path) -> MergedExplanations:
    """Every image's files (hard links, or copies), one manifest, ``explanations.jsonl`` and
    ``index.html`` in ``out``."""
    for src in _output_files(finished):
        if not _same(src.parent, out):
            link_or_copy(src, out / src.name)
    remove_temporaries(out, lambda name: name in VIEW_FILES or name == manifest_name(Shard()))
    _write_manifest(out, finished)
    write_finished(out, finished)
    return MergedExplanations(
        finished.images,
        len(finished.done),
        len(finished.failed),
        len(finished.manifests),
        out / "index.html",
    )


def _unfinished(finished: Finished) -> str:
    missing = finished.unfinished()
    shards = [
        (choose_shard(h.get("shard", "0/1")), int(h.get("batch_size", 1)))
        for h in _headers(finished)
    ]
    sharded = [(s, b) for s, b in shards if s.sharded]
    owner = ""
    if sharded:
        shard, block = sharded[0]
        owner = f", of shard {(missing[0] // block) % shard.count}/{shard.count}"
    return (
        f"{len(missing)} of {finished.images} images are in no manifest (the first is image "
        f"{missing[0]}{owner}): run or resume the shards that are missing, then merge"
    )


def _headers(finished: Finished) -> list[dict[str, Any]]:
    from rtsal.runs.journal import read_journal

    return [h for h in (read_journal(p)[0] for p in finished.manifests) if h]


def _output_files(finished: Finished) -> list[Path]:
    files = []
    for i, (_, records) in sorted(finished.done.items()):
        folder = finished.folders[i]
        for r in records:
            for name in r["files"].values():
                src = folder / Path(name).name
                if not src.is_file():
                    raise RtsalError(f"{src} is missing, though a manifest of {folder} lists it")
                files.append(src)
    return files


def _write_manifest(out: Path, finished: Finished) -> None:
    """One manifest for the whole run, its files in ``out``: the folder then reads as a run
    that was never split (``rtsal explain`` with the same options finds nothing to do)."""
    import json

    assert finished.header is not None
    header = {**finished.header, "shard": str(Shard())}
    with atomic_lines(out / manifest_name(Shard())) as f:
        f.write(json.dumps(header, separators=(",", ":")) + "\n")
        for i in range(finished.images):
            if i in finished.done:
                name, records = finished.done[i]
                records = [
                    {**r, "files": {k: str(out / Path(v).name) for k, v in r["files"].items()}}
                    for r in records
                ]
                entry = {"index": i, "name": name, "records": records}
            else:
                name, error = finished.failed[i]
                entry = {"index": i, "name": name, "error": error}
            f.write(json.dumps({"images": [entry]}, separators=(",", ":")) + "\n")
