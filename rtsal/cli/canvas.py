"""``rtsal canvas``: a localisation benchmark of real objects on cluttered canvases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import progress_bar


def _parse_scale(text: str) -> tuple[float, float]:
    from rtsal.errors import RtsalError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise RtsalError(f"--scale takes LOW,HIGH (e.g. 0.45,0.75), got {text!r}") from None
    return lo, hi


def canvas(
    out: Annotated[
        Path, typer.Argument(help="Output folder: new, empty, or an earlier canvas data set.")
    ],
    source: Annotated[str, typer.Option(help="Objects from fashion-mnist or cifar10.")] = (
        "fashion-mnist"
    ),
    size: Annotated[int, typer.Option(help="Canvas side in pixels.")] = 64,
    train: Annotated[int, typer.Option(help="Training canvases.")] = 12000,
    test: Annotated[int, typer.Option(help="Test canvases.")] = 1000,
    scale: Annotated[
        str, typer.Option(help="Object's longer side as a fraction of the canvas side, LOW,HIGH.")
    ] = "0.45,0.75",
    seed: Annotated[int, typer.Option(help="Same seed and options, same files.")] = 0,
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Where the source data set is (a folder or .tar.gz; see rtsal.data.folders)."
        ),
    ] = None,
    clutter: Annotated[
        bool,
        typer.Option(
            "--clutter/--no-clutter", help="Textured background with shapes, or a plain colour."
        ),
    ] = True,
) -> None:
    """Real objects on larger cluttered canvases, with exact boxes (Pascal VOC) and pixel masks,
    for scoring saliency maps on localisation and segmentation."""
    from rtsal.tools.canvas import CanvasConfig, make_canvas_dataset

    cfg = CanvasConfig(
        source=source,
        size=size,
        train=train,
        test=test,
        scale=_parse_scale(scale),
        clutter=clutter,
        seed=seed,
        data_root=str(data_root) if data_root is not None else None,
    ).checked()
    start = time.perf_counter()
    with progress_bar() as progress:
        result = make_canvas_dataset(cfg, out, progress=progress)
    seconds = time.perf_counter() - start
    out_dir = result.out_dir
    typer.echo(
        f"wrote {result.counts['train']} train and {result.counts['test']} test canvases "
        f"({result.source}, {cfg.size} px) to {out_dir} in {seconds:.0f} s\n"
        f"preview: {out_dir / 'preview.png'}"
    )


def register(app: typer.Typer) -> None:
    app.command("canvas")(canvas)
