"""Options several commands share, one ``Annotated`` alias each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Masking-model checkpoint: a folder or hf:ORG/NAME (default: the model rtsal "
        "ships for the black box; EfficientNet-Lite0's without --blackbox).",
    ),
]
BlackBoxOption = Annotated[
    str | None,
    typer.Option(
        "--blackbox",
        "-b",
        help="Black box (checked against the checkpoint; required for other methods).",
    ),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option(help="Black-box weights file (safetensors, or a .pt/.pth tensor file)."),
]
PretrainedOption = Annotated[bool, typer.Option(help="Use pretrained black-box weights.")]
ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        show_default=False,
        help="Do only shard I of N (from 0); rtsal merge joins the shards' outputs. Default "
        "under torchrun: RANK/WORLD_SIZE.",
    ),
]
TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Build the black box a checkpoint names even when that is code (file.py:factory, "
        "pkg.module:factory) or files outside the checkpoint. Only for checkpoints you trust.",
    ),
]
AllowOtherBlackBoxOption = Annotated[
    bool,
    typer.Option(
        "--allow-other-black-box",
        help="Use the checkpoint with a black box other than the network it was trained for "
        "(same classes and preprocessing; the masks then explain another classifier).",
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        help="auto (ONNX Runtime for the masking model when installed, exported once per "
        "checkpoint and cached; PyTorch otherwise), pytorch, or onnxruntime.",
    ),
]
