"""What keeping freed memory is worth: the black box's forward pass and the masking model's
explanation with the C library's default malloc and with ``rtsal.keep_freed_memory()``.

The setting is process-wide, so each variant runs in its own process; the two alternate
(``--pairs`` times) so that slow drifts of a shared machine hit both alike. Each process times
``--calls`` calls of each after a warm-up (the median) and counts page faults and system time.

    python bench/allocator.py --pairs 3 --out docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _markdown import write_section  # bench/_markdown.py, beside this script

CHILD = """
import json, resource, statistics, sys, time, torch
from rtsal.allocator import keep_freed_memory
tuned = sys.argv[1] == "tuned" and keep_freed_memory()
from rtsal.inference.explainer import Explainer
ex = Explainer(device="cpu")
box, model = ex.black_box, ex.model
x = torch.rand(int(sys.argv[2]), 3, 224, 224).contiguous(memory_format=torch.channels_last)
def forward():
    with torch.inference_mode():
        box(x)
def masker():
    ex.masks(x, None)
out = {"tuned": bool(tuned)}
for name, fn in (("forward", forward), ("masker", masker)):
    fn()
    times, r0 = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(int(sys.argv[3])):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = len(times)
    out[name] = {"seconds": statistics.median(times),
                 "faults_per_call": (r1.ru_minflt - r0.ru_minflt) / n,
                 "system_s_per_call": (r1.ru_stime - r0.ru_stime) / n,
                 "user_s_per_call": (r1.ru_utime - r0.ru_utime) / n}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", default=None, help="update this Markdown file's allocator section")
    a = ap.parse_args()
    runs: dict[str, list[dict]] = {"system": [], "tuned": []}
    for i in range(a.pairs):
        for variant in ("system", "tuned") if i % 2 == 0 else ("tuned", "system"):
            res = subprocess.run(
                [sys.executable, "-c", CHILD, variant, str(a.batch), str(a.calls)],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise SystemExit(res.stderr[-2000:])
            runs[variant].append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = runs[variant][-1]
            print(
                f"{variant:6s} forward {a.batch / r['forward']['seconds']:6.1f} img/s  "
                f"masker {a.batch / r['masker']['seconds']:6.1f} img/s  "
                f"faults/call {r['forward']['faults_per_call']:9.0f}",
                flush=True,
            )

    def med(variant: str, method: str, key: str) -> float:
        return statistics.median(r[method][key] for r in runs[variant])

    command = f"python bench/allocator.py --pairs {a.pairs} --batch {a.batch} --calls {a.calls}"
    lines = [
        "## Allocator: keeping freed memory",
        "",
        f"`{command}` (shipped EfficientNet-Lite0 masking model, 224 px, batch {a.batch}; "
        f"{a.pairs} processes of each kind, alternating; medians):",
        "",
        "| malloc | method | img/s | page faults per call | system CPU s per call | "
        "user CPU s per call |",
        "|---|---|---|---|---|---|",
    ]
    for variant, label in (("system", "C library default"), ("tuned", "keep_freed_memory")):
        for method in ("forward", "masker"):
            lines.append(
                f"| {label} | {method} | {a.batch / med(variant, method, 'seconds'):.1f} | "
                f"{med(variant, method, 'faults_per_call'):,.0f} | "
                f"{med(variant, method, 'system_s_per_call'):.2f} | "
                f"{med(variant, method, 'user_s_per_call'):.2f} |"
            )
    gain_f = med("system", "forward", "seconds") / med("tuned", "forward", "seconds")
    gain_m = med("system", "masker", "seconds") / med("tuned", "masker", "seconds")
    lines += [
        "",
        f"Keeping freed memory makes the forward pass {gain_f:.2f}× and the explanation "
        f"{gain_m:.2f}× as fast.",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        write_section(Path(a.out), "bench/allocator.py", text)


if __name__ == "__main__":
    main()
