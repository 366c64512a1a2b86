"""How far bf16 autocast moves the shipped masking model's masks, on real photographs.

Explains scikit-image's photographs (top-1 class) with the shipped EfficientNet-Lite0 masking
model in float32 and under bf16 autocast, and reports the differences of the masks (at model
resolution), of the mask areas and of the top-1 class.

    python bench/precision.py
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera", "cat")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args()
    from skimage import data

    from rtsal.inference.explainer import Explainer

    fp32 = Explainer(device="cpu", resize="square")
    bf16 = Explainer(device="cpu", resize="square", precision="bfloat16")
    ims = []
    for name in PHOTOS:
        arr = getattr(data, name, None)
        if arr is not None:
            ims.append(Image.fromarray(arr()).convert("RGB"))
    x = torch.stack([fp32.prepare(im) for im in ims])
    m32, logits32, top32 = fp32.masks(x, None)
    m16, logits16, top16 = bf16.masks(x, top32)
    d = (m32 - m16).abs()
    area = (m32.flatten(1).mean(1) - m16.flatten(1).mean(1)).abs()
    same_top = (logits16.argmax(1) == top32).float().mean()
    size = f"{x.shape[-1]}x{x.shape[-2]}"
    print(
        f"{len(ims)} photos at {size}: max |dmask| {d.max():.3f}, mean |dmask| "
        f"{d.mean():.4f}, pixels off by > 0.1: {(d > 0.1).float().mean():.2%}, "
        f"max |d area| {area.max():.3f}, same top-1 class {same_top:.0%}"
    )


if __name__ == "__main__":
    main()
