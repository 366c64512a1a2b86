"""Training throughput and where a training step's time goes.

Runs `rtsal train`'s trainer for a few steps (after warm-up) under torch.profiler and reports
images/s and the share of each phase: data loading, the masking model's forward pass (frozen
encoder + decoder), evidence removal Phi, the black box on Phi(X, M) and Phi(X, 1 - M), the
backward pass and the optimiser.

    python bench/train_profile.py --blackbox efficientnet_lite0 \
        --data ../shared/data/imagenet-sample --batch-size 12 --steps 8 --out runs/train-profile.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

PHASES = [
    "rtsal: masking model",
    "rtsal: evidence removal",
    "rtsal: black box",
    "rtsal: objective",
    "rtsal: backward",
    "rtsal: optimizer",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blackbox", default="efficientnet_lite0")
    ap.add_argument("--data", default="../shared/data/imagenet-sample")
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--nchw", action="store_true", help="train in the default NCHW layout")
    ap.add_argument("--out", default=None, help="also write the Markdown report here")
    a = ap.parse_args()
    from rtsal.allocator import keep_freed_memory

    keep_freed_memory()  # as the rtsal command does

    from rtsal.training.trainer import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            blackbox=a.blackbox,
            data=a.data,
            out=str(Path(tmp) / "m"),
            batch_size=a.batch_size,
            steps=a.warmup + a.steps,
            workers=a.workers,
            checkpoint_every=0,
            device="cpu",
            channels_last=not a.nchw,
        )
        trainer = Trainer(cfg)
        batches = iter(trainer._loader(0, 0))
        for _ in range(a.warmup):
            x, y = next(batches)
            trainer.train_step(x, y)
        data_s = step_s = 0.0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                t0 = time.perf_counter()
                x, y = next(batches)
                t1 = time.perf_counter()
                trainer.train_step(x, y)
                t2 = time.perf_counter()
                data_s += t1 - t0
                step_s += t2 - t1
    total = data_s + step_s
    times = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in PHASES}
    # the objective's own time excludes the removal and black-box phases nested in it
    objective_rest = (
        times.get("rtsal: objective", 0.0)
        - times.get("rtsal: evidence removal", 0.0)
        - times.get("rtsal: black box", 0.0)
    )
    rows = [("data loading", data_s)]
    rows += [
        ("masking model forward (encoder + decoder)", times.get("rtsal: masking model", 0.0)),
        ("evidence removal Φ (blur, noise, blend)", times.get("rtsal: evidence removal", 0.0)),
        ("black box on Φ(X, M) and Φ(X, 1 − M)", times.get("rtsal: black box", 0.0)),
        ("objective terms (TV, area, log-probs)", objective_rest),
        ("backward", times.get("rtsal: backward", 0.0)),
        ("optimizer (AdamW)", times.get("rtsal: optimizer", 0.0)),
    ]
    accounted = sum(t for _, t in rows)
    rows.append(("other (bookkeeping, profiler)", max(total - accounted, 0.0)))
    ips = a.steps * a.batch_size / total
    lines = [
        f"Training throughput: **{ips:.1f} images/s** ({a.blackbox}, batch {a.batch_size}, "
        f"{'NCHW' if a.nchw else 'channels-last'} layout, "
        f"{a.steps} steps after {a.warmup} warm-up, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}).",
        "",
        "| phase | seconds | share |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {t:.2f} | {100 * t / total:.1f} % |" for name, t in rows]
    lines += [f"| **total** | {total:.2f} | 100 % |"]
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
