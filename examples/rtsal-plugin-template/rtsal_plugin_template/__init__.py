"""A minimal rtsal plugin: registers the ``template-tinynet`` black box and a ``hello-template``
command. Copy this package, rename it, and replace the network with yours.

rtsal finds this module through the ``rtsal`` entry point in ``pyproject.toml`` and calls the
functions below marked with ``@rtsal.hookimpl`` (see ``rtsal.registry.hookspecs`` for every hook).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import typer
from rtsal import BlackBox, hookimpl, load_state_dict
from rtsal.errors import CheckpointError
from torch import nn

__version__ = "0.1.0"

BLACK_BOX_NAME = "template-tinynet"
PROVIDER = "template"  # the entry-point name in pyproject.toml
CLASS_NAMES = ("circle", "square", "triangle", "cross")
INPUT_SIZE = (64, 64)


class TinyNet(nn.Module):
    """Two strided convs and a linear head: (B, 3, 64, 64) normalised -> (B, 4) logits."""

    def __init__(self, num_classes: int = len(CLASS_NAMES), width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),  # (B, w, 32, 32)
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),  # (B, 2w, 16, 16)
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _load_weights(net: nn.Module, weights: str) -> None:
    """Load a safetensors or plain tensor file (``rtsal.load_state_dict`` never unpickles code)."""
    state = load_state_dict(weights)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:  # wrong shapes or names
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"cannot load {weights} into {BLACK_BOX_NAME}: {first}") from None


def create_tinynet(*, pretrained: bool = True, weights: str | None = None, **_: Any) -> BlackBox:
    """The black box. ``weights`` loads a file; without one the weights are seeded random
    (this template has no pretrained weights to fetch, so ``pretrained`` changes nothing)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyNet()
    if weights:
        _load_weights(net, weights)
    return BlackBox(
        net,
        name=BLACK_BOX_NAME,
        class_names=CLASS_NAMES,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        input_size=INPUT_SIZE,
        interpolation="bilinear",
        provider=PROVIDER,
        pretrained=bool(weights),
        source=weights or "seeded random init",
    )


@hookimpl
def register_black_boxes(register: Any) -> None:
    """Make ``create_black_box("template-tinynet")`` and ``--blackbox template-tinynet`` work."""
    register(
        BLACK_BOX_NAME,
        create_tinynet,
        aliases=("tinynet",),
        summary="template plugin: a tiny 4-class CNN with seeded random weights",
        input_size=INPUT_SIZE,
        num_classes=len(CLASS_NAMES),
    )


def hello_template(
    name: Annotated[str, typer.Option(help="Who to greet.")] = "world",
) -> None:
    """Greet, and show the template's black box: a model for new plugin commands."""
    from rtsal import create_black_box

    box = create_black_box(BLACK_BOX_NAME)
    typer.echo(
        f"hello {name}: {box.name} has {box.num_classes} classes "
        f"({', '.join(box.class_names)}) at {box.input_size[0]}x{box.input_size[1]}"
    )


@hookimpl
def register_commands(app: Any) -> None:
    """Add ``rtsal hello-template``; ``app`` is rtsal's root ``typer.Typer``."""
    app.command("hello-template")(hello_template)
