"""Peak memory of ``rtsal explain PHOTO --topk K --out DIR`` against K, with the (image, class)
pairs explained in chunks (the default ``--chunk-size``, or ``--chunk``) and all at once
(``--chunk-size 1000000``: one chunk, the computation as it was before chunking).

Each run is a fresh process; its peak resident set is the ``ru_maxrss`` that ``os.wait4``
reports for that process alone. The photo is scikit-image's ``chelsea`` (451 x 300, 224 x 352 at
model resolution) unless ``--photo`` names another. The processes run this checkout's ``rtsal``
(put first on ``PYTHONPATH``, and checked), whatever ``rtsal`` the interpreter has installed.

    OMP_NUM_THREADS=1 nice -n 10 python bench/topk_memory.py --topk 1,10,100,1000 --repeats 3 \
        --pair-times 4,8,16,32,64 --out docs/performance.md

``--tree DIR`` adds a variant: the ``rtsal`` package in DIR (an older commit:
``git archive COMMIT rtsal | tar -x -C DIR``) run the same way. Its runs expected above
``--budget-gb`` are not made (a shared machine): all at once, a pair costs about 40 MB on the
shipped model. This checkout's ``rtsal explain`` refuses those itself, before any work, above its
memory limit (``RTSAL_MEMORY_LIMIT``, default 8 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _markdown import write_section  # bench/_markdown.py, beside this script

REPO = Path(__file__).resolve().parents[1]
ALL_AT_ONCE = 1_000_000  # a chunk larger than any topk: every pair in one pass
PAIR_MB = 40  # what one pair costs when all are explained at once (the shipped model, 224 x 352)
# the shipped model's black box comes from the in-repo plugin; no other plugin is loaded
PLUGIN_ENV = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "", "RTSAL_PLUGINS": "efficientnet-lite"}


def command(photo: Path, k: int, out: Path, chunk: int | None) -> list[str]:
    cmd = ["rtsal", "explain", str(photo), "--topk", str(k), "--out", str(out)]
    return cmd + (["--chunk-size", str(chunk)] if chunk is not None else [])


PAIR_TIMES = """
import json, sys, time
from rtsal.allocator import keep_freed_memory
keep_freed_memory()
from PIL import Image
from rtsal.inference.explainer import Explainer
ex = Explainer(device="cpu")
photo, k, sizes = [Image.open(sys.argv[1]).convert("RGB")], int(sys.argv[2]), sys.argv[3]
ex.explain_batch(photo, topk=8)  # warm-up
out = {}
for rnd in range(2):  # the second round is reported
    for size in map(int, sizes.split(",")):
        ex.chunk_size = size
        t0 = time.perf_counter()
        for _ in ex.iter_explanations(photo, topk=k):
            pass
        out[size] = (time.perf_counter() - t0) / k * 1000
print(json.dumps(out))
"""


def pair_times(photo: Path, k: int, sizes: str, cwd: Path) -> dict[str, float]:
    """Milliseconds per (image, class) pair of ``iter_explanations`` (no files written) for each
    chunk size, in one fresh process."""
    p = subprocess.run(
        [sys.executable, "-c", PAIR_TIMES, str(photo), str(k), sizes],
        cwd=cwd,
        env=child_env(None),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout)


def child_env(tree: Path | None) -> dict[str, str]:
    """The environment of a measured process: this checkout's ``rtsal`` (or the one in ``tree``)
    first on the path, whatever ``rtsal`` the interpreter has installed."""
    return {**os.environ, **PLUGIN_ENV, "PYTHONPATH": str(tree or REPO)}


def check_package(tree: Path | None, cwd: Path) -> None:
    """Refuse to measure anything but the package meant: another one, run at K = 1000 without
    chunking, would take every byte of the machine's memory."""
    code = "import rtsal, sys; sys.stdout.write(rtsal.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=child_env(tree), capture_output=True, text=True
    ).stdout
    meant = (tree or REPO).resolve() / "rtsal" / "__init__.py"
    if Path(where).resolve() != meant:
        raise SystemExit(f"the measured process would import {where!r}, not {meant}")


def run_one(cmd: list[str], tree: Path | None, cwd: Path) -> dict:
    """Run ``cmd`` (an ``rtsal`` command line) in a fresh process: its peak RSS, time, outcome.
    ``cwd`` is not the repository, so that ``--tree`` runs do not pick up its ``rtsal``."""
    argv = [sys.executable, "-m", "rtsal", *cmd[1:]]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=child_env(tree),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()  # until the process closes it, i.e. ends
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    return {
        "peak_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "seconds": time.perf_counter() - t0,
        "exit": proc.returncode,
        "error": errors[0] if errors else (stderr.strip()[-300:] if proc.returncode else None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topk", default="1,10,100,1000", help="comma-separated K values")
    ap.add_argument("--photo", type=Path, default=None, help="default: scikit-image's chelsea")
    ap.add_argument("--chunk", type=int, default=None, help="--chunk-size of the chunked runs")
    ap.add_argument("--variants", default="chunked,all-at-once", help="chunked, all-at-once")
    ap.add_argument("--tree", type=Path, default=None, help="also run the rtsal package in DIR")
    ap.add_argument("--tree-label", default=None, help="the --tree column's title")
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell (median, range)")
    ap.add_argument("--budget-gb", type=float, default=12.0, help="skip settings expected above")
    ap.add_argument(
        "--pair-times",
        default=None,
        help="also time iter_explanations per pair at these chunk sizes (e.g. 4,8,16,32,64)",
    )
    ap.add_argument("--pair-topk", type=int, default=64, help="classes timed by --pair-times")
    ap.add_argument("--out", default=None, help="write the Markdown section into this file")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    a = ap.parse_args()
    ks = [int(k) for k in a.topk.split(",")]
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if a.tree is not None:
        variants.append("tree")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = a.photo
        if photo is None:
            from PIL import Image
            from skimage import data

            photo = Path(tmp) / "chelsea.jpg"
            Image.fromarray(data.chelsea()).save(photo, quality=95)
        check_package(None, Path(tmp))
        if a.tree is not None:
            check_package(a.tree, Path(tmp))
        done: set[tuple[int, str]] = set()  # refused or skipped: not repeated
        for repeat in range(a.repeats):  # the whole grid in turn, so that drifts hit every cell
            for k in ks:
                for variant in variants:
                    if (k, variant) in done:
                        continue
                    out = Path(tmp) / f"out-{variant}-{k}-{repeat}"
                    chunk = {"chunked": a.chunk, "all-at-once": ALL_AT_ONCE, "tree": None}[variant]
                    cmd = command(photo, k, out, chunk)
                    shown = command(Path(photo.name), k, Path("DIR"), chunk)
                    shown_env = f"PYTHONPATH={a.tree} " if variant == "tree" else ""
                    row = {"k": k, "variant": variant, "command": shown_env + shlex.join(shown)}
                    expected_gb = k * PAIR_MB / 1000
                    if variant == "tree" and expected_gb > a.budget_gb:
                        row["skipped"] = f"not run: about {expected_gb:.0f} GB expected"
                    else:
                        tree = a.tree if variant == "tree" else None
                        row.update(run_one(cmd, tree, Path(tmp)))
                        row["files"] = len(list(out.glob("*"))) if out.exists() else 0
                        shutil.rmtree(out, ignore_errors=True)
                    if "skipped" in row or row["exit"] != 0:
                        done.add((k, variant))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        times = pair_times(photo, a.pair_topk, a.pair_times, Path(tmp)) if a.pair_times else None
    tree_title = a.tree_label or f"package in `{a.tree}`"
    photo_name = a.photo.name if a.photo else "chelsea.jpg"
    text = report(rows, photo_name, tree_title, sys.argv[1:], a.repeats)
    if times:
        text += "\n\n" + "\n".join(
            [
                f"Time per pair of `Explainer.iter_explanations` on {photo_name}, top "
                f"{a.pair_topk} classes, masks and probabilities only, no files (`--pair-times`; "
                "one process, the second of two rounds):",
                "",
                "| chunk size | " + " | ".join(times) + " |",
                "|---|" + "---|" * len(times),
                "| ms per pair | " + " | ".join(f"{v:.1f}" for v in times.values()) + " |",
            ]
        )
    print(text)
    if a.out:
        write_section(Path(a.out), "bench/topk_memory.py", text)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cell(runs: list[dict]) -> str:
    """Median peak and time of a cell's runs, with the range of the peaks if more than one."""
    first = runs[0]
    if "skipped" in first:
        return first["skipped"]
    if first["exit"] != 0:
        return f"refused ({first['seconds']:.0f} s): `{first['error']}`"
    peaks = [r["peak_mb"] for r in runs]
    spread = f" ({min(peaks):,.0f}-{max(peaks):,.0f})" if len(runs) > 1 else ""
    seconds = statistics.median(r["seconds"] for r in runs)
    return f"{statistics.median(peaks):,.0f} MB{spread}, {seconds:.0f} s"


def report(
    rows: list[dict], photo_name: str, tree_title: str, args: list[str], repeats: int
) -> str:
    import torch

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    ks = list(dict.fromkeys(r["k"] for r in rows))
    titles = {
        "chunked": "chunked (default `--chunk-size`)",
        "all-at-once": f"all at once (`--chunk-size {ALL_AT_ONCE}`)",
        "tree": tree_title,
    }
    lines = [
        "## Memory against --topk",
        "",
        f"`OMP_NUM_THREADS=1 nice -n 10 python bench/topk_memory.py {shlex.join(args)}` on "
        f"{cpu_name()} "
        f"({os.cpu_count()} cores), torch {torch.__version__}, Python "
        f"{platform.python_version()}: peak resident set (`ru_maxrss` of a fresh process per "
        f"run, freed memory kept as `rtsal` does) and wall time of `rtsal explain` on "
        f"{photo_name} (shipped model, plugins limited to `RTSAL_PLUGINS=efficientnet-lite`); "
        + (
            f"the median of {repeats} runs, the grid run {repeats} times in turn, with the "
            "range of the peaks in brackets."
            if repeats > 1
            else "one run."
        ),
        "",
        "| K | " + " | ".join(titles[v] for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for k in ks:
        cells = [cell([r for r in rows if r["k"] == k and r["variant"] == v]) for v in variants]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "Commands (DIR: a fresh output folder each time):", "", "```"]
    lines += list(dict.fromkeys(r["command"] for r in rows))
    lines += ["```"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
