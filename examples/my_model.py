"""Your own classifier as a black box: ``--blackbox examples/my_model.py:build``.

rtsal imports this file, calls ``build()`` with no arguments and wraps the ``nn.Module`` it
returns. The module takes *normalised* input and returns logits; these optional attributes tell
rtsal how to use it, read from the returned module (here: class attributes of ``TinyCifarNet``)
or, where it has none, from this file's top level:

    class_names   one name per output (default: class_0, class_1, ...)
    mean, std     per-channel normalisation rtsal applies to images in [0, 1]
    input_size    (H, W) the network expects
    interpolation resize filter for its preprocessing ("bilinear", "bicubic", ...)

The network here is a tiny CIFAR-10 CNN. It loads ``my_model.safetensors`` from this folder when
that file exists, and otherwise starts from seeded random weights (so explanations of it show the
machinery working, not a meaningful classifier).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
WEIGHTS_FILE = Path(__file__).with_name("my_model.safetensors")


class TinyCifarNet(nn.Module):
    """Three conv blocks and a linear head: (B, 3, 32, 32) normalised -> (B, 10) logits."""

    class_names = CIFAR10_CLASSES
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    input_size = (32, 32)
    interpolation = "bilinear"

    def __init__(self, width: int = 16, num_classes: int = len(CIFAR10_CLASSES)):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(3, width),  # (B, w, 16, 16)
            block(width, 2 * width),  # (B, 2w, 8, 8)
            block(2 * width, 4 * width),  # (B, 4w, 4, 4)
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 10)
        return self.head(self.features(x))


def build(weights: str | Path | None = None, seed: int = 0) -> TinyCifarNet:
    """The classifier, with ``weights`` (or ``my_model.safetensors`` here) if there is a file."""
    with torch.random.fork_rng():  # seeded init without touching the caller's random state
        torch.manual_seed(seed)
        net = TinyCifarNet()
    path = Path(weights) if weights else WEIGHTS_FILE
    if weights or path.is_file():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(path)))
    return net.eval()


def save(net: TinyCifarNet, path: str | Path = WEIGHTS_FILE) -> Path:
    """Write ``net``'s weights where :func:`build` looks for them (safetensors, no pickle)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return Path(path)


if __name__ == "__main__":
    net = build()
    n = sum(p.numel() for p in net.parameters())
    source = WEIGHTS_FILE.name if WEIGHTS_FILE.is_file() else "seeded random weights"
    print(f"{type(net).__name__}: {n} parameters, {len(net.class_names)} classes, {source}")
