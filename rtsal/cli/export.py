"""``rtsal export``: a masking model with its encoder and black box as TorchScript or ONNX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import err, parse_ints

OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="File to write (.onnx or .pt); a side-car <file>.json describes its inputs.",
    ),
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format", "-f", help="torchscript or onnx (default: from the --out suffix, .onnx or .pt)."
    ),
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Masking-model checkpoint (default: the shipped EfficientNet-Lite0 model).",
    ),
]
SizeOption = Annotated[
    str | None,
    typer.Option(
        help="Trace size H,W (or S), multiples of the encoder's stride (default: the black "
        "box's input size); other sizes still work."
    ),
]
OpsetOption = Annotated[int, typer.Option(help="ONNX opset version (12 to 20).")]
CheckOption = Annotated[
    bool,
    typer.Option(
        "--check/--no-check",
        help="Run the exported file (ONNX Runtime, or TorchScript loaded back) and PyTorch "
        "on real photos; refuse the export if the masks differ by more than 1e-4.",
    ),
]
JsonOutOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def export(
    out: OutOption,
    format_: FormatOption = None,
    checkpoint: CheckpointOption = None,
    size: SizeOption = None,
    opset: OpsetOption = 17,
    check: CheckOption = True,
    json_out: JsonOutOption = False,
) -> None:
    """Export the masking model together with its encoder and black box.

    The exported model takes images (B, C, H, W) float32 in [0, 1] (normalisation is inside) and
    class ids (B,) int64, and returns the mask (B, 1, H, W) in [0, 1] and the black box's softmax
    probabilities (B, K). Batch, height and width are dynamic; height and width must be
    multiples of the encoder's stride (32 for the shipped model; size_multiple in the side-car).
    """
    from rtsal.inference.export import (
        ExportableMasker,
        check_opset,
        export_onnx,
        export_torchscript,
        prepare_output,
        resolve_format,
    )

    fmt = resolve_format(format_, out)
    check_opset(opset)
    hw = parse_ints(size, "--size") if size else None
    path = prepare_output(out)  # before loading anything
    wrapper = ExportableMasker.from_checkpoint(checkpoint)
    if fmt == "onnx":
        result = export_onnx(wrapper, path, hw, opset, check=check)
    else:
        result = export_torchscript(wrapper, path, hw, check=check)
    if json_out:
        typer.echo(json.dumps(result.to_dict()))
        return
    mb = result.bytes / 2**20
    err.print(f"wrote {result.path} ({fmt}, {mb:.1f} MB) and {result.sidecar}", highlight=False)
    if result.check is not None:
        runner = "onnxruntime" if fmt == "onnx" else "TorchScript"
        c = result.check
        typer.echo(
            f"max |Δmask| = {c.mask_diff:.2e}, max |Δp| = {c.prob_diff:.2e} "
            f"({runner} vs PyTorch, {c.runs} batches of real photos)"
        )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
