"""``rtsal explain``: saliency masks for photos, folders and videos."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import err, progress_bar

PARTIAL_FAILURE_EXIT = 3


def explain(
    inputs: Annotated[
        list[str], typer.Argument(help="Images, folders (recursive), globs, or a video file.")
    ],
    class_: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            "-c",
            help="Class to explain "
            "(name, index or synset); repeat for several. Default: the top-1 "
            "prediction.",
        ),
    ] = None,
    topk: Annotated[int | None, typer.Option(help="Explain the K most probable classes.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Masking-model checkpoint (default: the shipped EfficientNet-Lite0 model).",
        ),
    ] = None,
    blackbox: Annotated[
        str | None,
        typer.Option(
            "--blackbox",
            "-b",
            help="Black box (checked against the checkpoint; required for other methods).",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option(help="Explanation method (rtsal methods lists them).")
    ] = "masker",
    method_option: Annotated[
        list[str] | None,
        typer.Option("--method-option", help="Option for the method, KEY=VALUE (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (or .mp4 file for a video).")
    ] = None,
    save_npy: Annotated[
        bool, typer.Option("--save-npy", help="Also save float masks as .npy.")
    ] = False,
    resize: Annotated[str, typer.Option(help="fit (keep aspect) or square.")] = "fit",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    size: Annotated[int | None, typer.Option(help="Video: model resolution (short side).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    backend: Annotated[
        str,
        typer.Option(
            help="pytorch, or onnxruntime (the masking model exported once and cached; about "
            "half the latency of one image on a CPU)."
        ),
    ] = "pytorch",
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            show_default=False,
            help="Threads writing output images while the model works (reading also runs ahead "
            "in a thread); 0 does everything in turn. Default: 2 on CUDA/MPS, 0 on the CPU "
            "(where the threads would compete with the model's).",
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="float32, or bfloat16 (faster on CPUs with bf16 units; masks differ slightly)."
        ),
    ] = "float32",
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per image and class on stdout.")
    ] = False,
) -> None:
    """Explain what the black box sees in each input; writes masks, overlays and the
    (image x mask, image x (1 - mask)) pair. Exit code 3 when some inputs could not be read."""
    from rtsal.blackbox import create_black_box
    from rtsal.checkpoint import prepare_out_dir
    from rtsal.explain import Explainer
    from rtsal.explain_files import (
        VIDEO_EXTENSIONS,
        check_inputs_exist,
        expand_inputs,
        explain_files,
    )
    from rtsal.methods import parse_method_options

    if topk is not None and topk < 1:
        raise typer.BadParameter("--topk must be at least 1")
    videos = [p for p in inputs if Path(p).suffix.lower() in VIDEO_EXTENSIONS]
    box = create_black_box(blackbox) if blackbox else None
    explainer = Explainer(
        checkpoint,
        black_box=box,
        device=device,
        resize=resize,
        method=method,
        method_options=parse_method_options(method_option),
        precision=precision,
        backend=backend,
    )
    classes = explainer.resolver.resolve_many(class_) if class_ else None
    if videos:
        from rtsal.video import explain_video

        if len(inputs) != 1:
            raise typer.BadParameter("explain one video at a time")
        target = out or Path(videos[0]).with_suffix(".rtsal.mp4")
        with progress_bar() as progress:
            stats = explain_video(
                explainer,
                Path(videos[0]),
                target,
                classes=classes,
                short_side=size,
                progress=progress,
                workers=workers,
            )
        result = {"input": videos[0], "output": str(target), **stats}
        typer.echo(
            json.dumps(result)
            if json_out
            else f"wrote {target}: {stats['frames']} frames, {stats['fps']:.1f} frames/s "
            f"at {stats['model_size'][1]}x{stats['model_size'][0]}"
        )
        return
    items, missing = expand_inputs(inputs)
    check_inputs_exist(items, missing)  # nothing to explain: one line, exit 1
    for m in missing:
        err.print(f"error: {m}", highlight=False, markup=False)
    out_dir = prepare_out_dir(out) if out else None

    def on_record(rec: dict) -> None:
        if json_out:
            typer.echo(json.dumps(rec))
        else:
            box_txt = "none" if rec["box"] is None else ",".join(map(str, rec["box"]))
            typer.echo(
                f"{rec['input']}: {rec['class_name']} p={rec['p_image']:.3f} "
                f"p(x*M)={rec['p_image_times_mask']:.3f} "
                f"p(x*(1-M))={rec['p_image_times_inverse_mask']:.3f} "
                f"area={rec['mask_area']:.3f} box={box_txt}"
            )

    with progress_bar() as progress:
        task = progress.add_task("explain", total=len(items))
        summary = explain_files(
            explainer,
            items,
            out=out_dir,
            classes=classes,
            topk=topk,
            batch_size=batch_size,
            save_npy=save_npy,
            workers=workers,
            on_record=on_record,
            on_error=lambda msg: err.print(f"error: {msg}", highlight=False, markup=False),
            on_image=lambda: progress.update(task, advance=1),
        )
    n_failed = len(summary.failed) + len(missing)
    if out_dir is not None and summary.explained:
        err.print(f"wrote {out_dir / 'index.html'}", highlight=False)
    if n_failed:
        err.print(f"{summary.explained} explained, {n_failed} could not be read", highlight=False)
        sys.exit(PARTIAL_FAILURE_EXIT)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
