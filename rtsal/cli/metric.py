"""``rtsal metric``: the paper's saliency metric and mask statistics for any method."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import err, progress_bar


def metric(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="Image folder (class sub-folders or synset-named files)."
        ),
    ] = None,
    files: Annotated[
        Path | None,
        typer.Option(
            help="Text file listing image paths (e.g. a "
            "training run's holdout.txt); classes from the file names."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option(help="Explanation method (rtsal methods lists them).")
    ] = "masker",
    method_option: Annotated[
        list[str] | None,
        typer.Option("--method-option", help="Option for the method, KEY=VALUE (repeatable)."),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Masking-model checkpoint (default: the shipped model).")
    ] = None,
    blackbox: Annotated[
        str | None, typer.Option("--blackbox", "-b", help="Black box (default: the checkpoint's).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N images.")] = None,
    resize: Annotated[str, typer.Option(help="fit or square.")] = "fit",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write per-image rows (CSV) and the summary (JSON) here."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the absent classes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Saliency metric (lower is better), f_c on image x mask and image x (1 - mask), and mask
    areas for the true class and for an absent class."""
    from rtsal.blackbox import create_black_box
    from rtsal.checkpoint import prepare_out_dir
    from rtsal.errors import RtsalError
    from rtsal.evaluate import evaluate_saliency
    from rtsal.explain import Explainer
    from rtsal.labels import labelled_samples
    from rtsal.methods import parse_method_options

    if (data is None) == (files is None):
        raise RtsalError("give exactly one of --data DIR or --files LIST")
    out_dir = prepare_out_dir(out) if out else None
    box = create_black_box(blackbox) if blackbox else None
    explainer = Explainer(
        checkpoint,
        black_box=box,
        device=device,
        resize=resize,
        method=method,
        method_options=parse_method_options(method_option),
    )
    samples = labelled_samples(explainer.resolver, data=data, files=files)[:limit]
    with progress_bar() as progress:
        rows: list[dict] = []
        report = evaluate_saliency(
            explainer, samples, method=method, seed=seed, progress=progress, on_row=rows.append
        )
    summary = report.to_dict()
    if out_dir is not None:
        with (out_dir / f"{method}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (out_dir / f"{method}.json").write_text(json.dumps(summary, indent=2) + "\n")
        err.print(f"wrote {out_dir / (method + '.csv')}", highlight=False)
    if json_out:
        typer.echo(json.dumps(summary))
        return
    r = report
    typer.echo(
        f"{r.method} on {r.images} images: saliency metric {r.saliency_metric:.3f} "
        f"(crop area {r.crop_area:.3f}, p(crop) {r.crop_probability:.3f})\n"
        f"  f_c(X) {r.p_image:.3f}  f_c(X*M) {r.p_image_times_mask:.3f}  "
        f"f_c(X*(1-M)) {r.p_image_times_inverse:.3f}  keep ratio {r.keep_ratio:.3f}\n"
        f"  mask area: true class {r.area_true:.3f}, absent class {r.area_absent:.3f}; "
        f"{1000 * r.seconds_per_image:.0f} ms per image"
    )


def register(app: typer.Typer) -> None:
    app.command("metric")(metric)
