"""Does torch.compile help the masking model on this CPU? Eager (channels-last, inference mode,
as `rtsal explain` runs it) against torch.compile of the decoder and of the whole explanation,
in one run on the same images; compile time reported separately.

    python bench/compile_trial.py --batch 32 --repeats 5 --out runs/compile-trial.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from rtsal.allocator import keep_freed_memory

    keep_freed_memory()  # as the rtsal command does

    from rtsal.inference.explainer import Explainer

    e = Explainer(device="cpu")  # the shipped model, channels-last
    model = e.model
    x = torch.rand(a.batch, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)

    def eager(x):
        with torch.inference_mode():
            f = model.encode(x, with_logits=True)
            return model.decode(f, f.logits.argmax(1), x.shape[-2:]).mask

    decode_c = torch.compile(model.decode, dynamic=False)

    def compiled_decoder(x):
        with torch.inference_mode():
            f = model.encode(x, with_logits=True)
            return decode_c(f, f.logits.argmax(1), x.shape[-2:]).mask

    whole_c = torch.compile(eager.__wrapped__ if hasattr(eager, "__wrapped__") else eager)

    rows = []
    reference = eager(x)
    for name, fn in (
        ("eager (as rtsal explain runs)", eager),
        ("torch.compile(decoder)", compiled_decoder),
        ("torch.compile(encoder + decoder)", whole_c),
    ):
        t0 = time.perf_counter()
        out = fn(x)  # compiles on the first call
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
        diff = float((out - reference).abs().max())
        rows.append((name, a.batch / best, first, diff))
        print(
            f"{name}: {a.batch / best:.1f} img/s, first call {first:.1f} s, max |Δmask| {diff:.1e}",
            flush=True,
        )
    base = rows[0][1]
    lines = [
        f"Masking model (shipped EfficientNet-Lite0), batch {a.batch} at {a.size} px, best of "
        f"{a.repeats}, {torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| variant | img/s | × eager | first call (s, incl. compile) | max abs Δmask |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {v:.1f} | {v / base:.2f} | {f:.1f} | {d:.1e} |" for n, v, f, d in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
