"""``rtsal explain``: saliency masks for photos, folders and videos."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rtsal.cli._console import err, progress_bar
from rtsal.cli._options import (
    AllowOtherBlackBoxOption,
    BackendOption,
    BlackBoxOption,
    CheckpointOption,
    PretrainedOption,
    ShardOption,
    TrustCodeOption,
    WeightsOption,
)
from rtsal.inference import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from rtsal.runs.explain import ExplainRun

PARTIAL_FAILURE_EXIT = 3

Inputs = Annotated[
    list[str], typer.Argument(help="Images, folders (recursive), globs, or a video file.")
]
Classes = Annotated[
    list[str] | None,
    typer.Option(
        "--class",
        "-c",
        help="Class to explain "
        "(name, index or synset); repeat for several. Default: the top-1 "
        "prediction.",
    ),
]
TopK = Annotated[int | None, typer.Option(help="Explain the K most probable classes.")]
Method = Annotated[str, typer.Option(help="Explanation method (rtsal methods lists them).")]
MethodOptions = Annotated[
    list[str] | None,
    typer.Option("--method-option", help="Option for the method, KEY=VALUE (repeatable)."),
]
Out = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output folder (or .mp4 file for a video).")
]
SaveNpy = Annotated[bool, typer.Option("--save-npy", help="Also save float masks as .npy.")]
Resize = Annotated[
    str,
    typer.Option(help="auto (square for fixed-size models such as ViTs, else fit), fit or square."),
]
BatchSize = Annotated[int, typer.Option("--batch-size")]
ChunkSize = Annotated[
    int | None,
    typer.Option(
        "--chunk-size",
        min=1,
        show_default=False,
        help="(Image, class) pairs explained at once (default 16): memory stays the same "
        "whatever --topk is.",
    ),
]
Size = Annotated[int | None, typer.Option(help="Video: model resolution (short side).")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Workers = Annotated[
    int | None,
    typer.Option(
        min=0,
        show_default=False,
        help="Threads writing output images while the model works (reading also runs ahead "
        "in a thread); 0 does everything in turn. Default: 2 on CUDA/MPS, 0 on the CPU "
        "(where the threads would compete with the model's).",
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        help="float32, or bfloat16 (faster on CPUs with bf16 units; masks differ slightly)."
    ),
]
JsonOut = Annotated[
    bool, typer.Option("--json", help="One JSON object per image and class on stdout.")
]


def explain(
    inputs: Inputs,
    class_: Classes = None,
    topk: TopK = None,
    checkpoint: CheckpointOption = None,
    blackbox: BlackBoxOption = None,
    weights: WeightsOption = None,
    pretrained: PretrainedOption = True,
    method: Method = "masker",
    method_option: MethodOptions = None,
    out: Out = None,
    save_npy: SaveNpy = False,
    resize: Resize = "auto",
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    chunk_size: ChunkSize = None,
    size: Size = None,
    device: Device = "auto",
    backend: BackendOption = "auto",
    workers: Workers = None,
    precision: Precision = "float32",
    json_out: JsonOut = False,
    shard: ShardOption = None,
    trust_code: TrustCodeOption = False,
    allow_other_black_box: AllowOtherBlackBoxOption = False,
) -> None:
    """Explain what the black box sees in each input; writes masks, overlays and the
    (image x mask, image x (1 - mask)) pair. Exit code 3 when some inputs could not be read."""
    from rtsal.errors import RtsalError
    from rtsal.registry.methods import parse_method_options
    from rtsal.runs.explain import explain_inputs, video_input

    if topk is not None and topk < 1:
        raise typer.BadParameter("--topk must be at least 1")
    try:
        video = video_input(inputs)
    except RtsalError as exc:  # a usage error, as the --topk one
        raise typer.BadParameter(str(exc)) from None
    try:
        with progress_bar() as progress:
            run = explain_inputs(
                inputs,
                out=out,
                classes=class_,
                topk=topk,
                black_box=blackbox,
                weights=weights,
                pretrained=pretrained,
                shard=shard,
                save_npy=save_npy,
                batch_size=batch_size,
                video_size=size,
                workers=workers,
                progress=progress,
                on_record=lambda r: typer.echo(json.dumps(r) if json_out else _record_line(r)),
                on_error=_error,
                checkpoint=checkpoint,
                device=device,
                resize=resize,
                method=method,
                method_options=parse_method_options(method_option),
                precision=precision,
                backend=backend,
                chunk_size=chunk_size,
                trust_code=trust_code,
                allow_other_black_box=allow_other_black_box,
            )
    except KeyboardInterrupt:
        if out is not None and video is None:
            err.print(
                f"finished images are kept in {out}; the same command resumes",
                highlight=False,
                markup=False,
            )
        raise
    _report(run, json_out)


def _error(message: str) -> None:
    err.print(f"error: {message}", highlight=False, markup=False)


def _report(run: ExplainRun, json_out: bool) -> None:
    """The video written, or what was resumed, the contact sheet (or how many images other
    shards still have to explain) and how many inputs could not be read (exit 3)."""
    if run.video is not None:
        typer.echo(json.dumps(run.video) if json_out else _video_line(run.video))
        return
    shard = f" (shard {run.shard})" if run.shard.sharded else ""
    if run.skipped:
        err.print(
            f"{run.skipped} of {run.images} images already explained in {run.out}{shard}"
            + ("; nothing to do" if run.skipped == run.images else ""),
            highlight=False,
            markup=False,
        )
    if run.index_written:
        err.print(f"wrote {run.index}", highlight=False, markup=False)
    elif run.out is not None and run.unfinished:
        err.print(
            f"{run.unfinished} images of other shards still to explain; index.html is written "
            "when the last shard ends (or by rtsal merge)",
            highlight=False,
            markup=False,
        )
    if run.not_read:
        err.print(
            f"{run.summary.explained} explained, {run.not_read} could not be read", highlight=False
        )
        sys.exit(PARTIAL_FAILURE_EXIT)


def _record_line(rec: dict[str, Any]) -> str:
    box = "none" if rec["box"] is None else ",".join(map(str, rec["box"]))
    return (
        f"{rec['input']}: {rec['class_name']} p={rec['p_image']:.3f} "
        f"p(x*M)={rec['p_image_times_mask']:.3f} "
        f"p(x*(1-M))={rec['p_image_times_inverse_mask']:.3f} "
        f"area={rec['mask_area']:.3f} box={box}"
    )


def _video_line(result: dict[str, Any]) -> str:
    h, w = result["model_size"]
    return (
        f"wrote {result['output']}: {result['frames']} frames, {result['fps']:.1f} frames/s "
        f"at {w}x{h}"
    )


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
