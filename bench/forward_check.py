"""The black box's forward pass under each autograd mode, and rtsal's Grad-CAM, timed straight
after one another on the same images: a cross-check for the speed table's Grad-CAM rows.

    python bench/forward_check.py --batch 32 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from rtsal.allocator import keep_freed_memory

    keep_freed_memory()  # as the rtsal command does

    from rtsal.inference.explainer import Explainer
    from rtsal.registry.methods import create_method

    box = Explainer(device="cpu").black_box  # the shipped model's EfficientNet-Lite0, channels-last
    x = torch.rand(a.batch, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
    classes = torch.zeros(a.batch, dtype=torch.long)
    gradcam = create_method("gradcam", box)

    def inference_mode():
        with torch.inference_mode():
            box(x)

    def no_grad():
        with torch.no_grad():
            box(x)

    for name, fn in (
        ("forward, inference_mode", inference_mode),
        ("forward, no_grad", no_grad),
        ("forward, autograd on", lambda: box(x)),
        ("Grad-CAM (rtsal)", lambda: gradcam.explain(x, classes)),
        ("forward, inference_mode (again)", inference_mode),
    ):
        fn()  # warm-up
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{name}: {a.batch / best:.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
