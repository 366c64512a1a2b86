"""Peak memory while `rtsal explain` works through a folder of 1,000 photos: the resident set
size of the process, sampled every 0.2 s, against the number of photos done (outputs written).
Streaming means the curve is flat: no growth with the number of images.

    python bench/memory.py --photos 1000 --out docs/memory.md

The folder is made of links to the ImageNet sample photos (repeated to reach --photos).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None, help="also write the Markdown report here")
    a = ap.parse_args()
    sources = sorted(p for p in Path(a.source).iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(a.photos):
            src = sources[i % len(sources)]
            os.symlink(src, folder / f"{i:04d}_{src.name}")
        out = Path(tmp) / "explained"
        cmd = [
            sys.executable,
            "-m",
            "rtsal",
            "explain",
            str(folder),
            "--out",
            str(out),
            "--batch-size",
            str(a.batch_size),
        ]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples: list[tuple[float, int, float]] = []  # (seconds, photos done, RSS MB)
        while proc.poll() is None:
            r = rss_mb(proc.pid)
            done = len(list(out.glob("*.mask.png"))) if out.exists() else 0
            if r is not None:
                samples.append((time.perf_counter() - t0, done, r))
            time.sleep(0.2)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"rtsal explain failed ({proc.returncode}):\n{err[-2000:]}")
        wall = time.perf_counter() - t0
    checkpoints = [a.photos * k // 10 for k in range(1, 11)]
    rows = []
    for n in checkpoints:
        seen = [r for s, d, r in samples if d <= n]
        rows.append((n, max(seen) if seen else float("nan")))
    first_tenth = rows[0][1]
    peak = max(r for _, _, r in samples)
    lines = [
        f"`rtsal explain` on {a.photos} photos (batch {a.batch_size}, the shipped model, every "
        f"output written): {wall:.0f} s, {a.photos / wall:.1f} photos/s end to end; peak RSS "
        f"{peak:.0f} MB, {peak - first_tenth:+.0f} MB over the peak after the first "
        f"{checkpoints[0]} photos.",
        "",
        "| photos done | peak RSS so far (MB) |",
        "|---|---|",
    ]
    lines += [f"| {n} | {r:.0f} |" for n, r in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
