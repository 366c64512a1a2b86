"""``rtsal metric`` and ``rtsal localize``: the paper's evaluation for any method, one pass per
method over the images (see :mod:`rtsal.scoring`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rtsal.cli._console import err, progress_bar

_DATA_HELP = "Image folder (class sub-folders or synset-named files), or one image."


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _samples(explainer, data, files, boxes, class_map, pixel_masks, limit):
    from rtsal.errors import DataError, RtsalError
    from rtsal.labels import labelled_samples
    from rtsal.localization import read_boxes
    from rtsal.scoring import (
        Sample,
        annotated_samples,
        attach_pixel_masks,
        list_images,
        read_class_map,
    )

    if (data is None) == (files is None):
        raise RtsalError("give exactly one of --data DIR or --files LIST")
    if boxes is not None:
        mapping = read_class_map(class_map) if class_map else {}
        resolver = explainer.resolver

        def resolve(name: str) -> int:
            return resolver.resolve(mapping.get(name, name))

        if data is not None:
            images = list_images(Path(data))
        else:
            if not files.is_file():
                raise DataError(f"file list not found: {files}")
            images = [Path(line.strip()) for line in files.read_text().splitlines() if line.strip()]
        samples, missing = annotated_samples(
            images, read_boxes(boxes), resolve, pixel_masks=pixel_masks
        )
        if missing:
            err.print(f"{len(missing)} image(s) without boxes left out", highlight=False)
        if not samples:
            raise RtsalError(f"no image of {data or files} has boxes in {boxes}")
    else:
        samples = [
            Sample(p, label)
            for p, label in labelled_samples(explainer.resolver, data=data, files=files)
        ]
        if pixel_masks is not None:
            attach_pixel_masks(samples, pixel_masks)
    return spread(samples, limit)


def spread(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over the list (all classes of a sorted folder, not the
    first one's), in order; all of them without a limit."""
    if not limit or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def run_scoring(
    *,
    metrics: list[str],
    data: Path | None,
    files: Path | None,
    boxes: Path | None,
    class_map: Path | None,
    pixel_masks: Path | None,
    method: str,
    method_option: list[str] | None,
    checkpoint: Path | None,
    blackbox: str | None,
    limit: int | None,
    resize: str,
    steps: int,
    seed: int,
    device: str,
    out: Path | None,
    pr_png: Path | None,
    stem: str,
) -> dict[str, Any]:
    from rtsal.blackbox import create_black_box
    from rtsal.checkpoint import prepare_out_dir
    from rtsal.errors import RtsalError
    from rtsal.explain import Explainer
    from rtsal.methods import parse_method_options
    from rtsal.scoring import GT_BOX, NEEDS_BOXES, pixel_metrics_of, score_method

    if "pixel" in metrics and pixel_masks is None:
        raise RtsalError("the pixel metrics need ground-truth masks: give --pixel-masks DIR")
    if NEEDS_BOXES & set(metrics) and boxes is None:
        raise RtsalError(f"{'/'.join(sorted(NEEDS_BOXES & set(metrics)))} needs --boxes")
    if pr_png is not None and "pixel" not in metrics:
        raise RtsalError("--pr-png draws the pixel metrics' PR curve: add pixel to --metrics")
    out_dir = prepare_out_dir(out) if out else None
    box = create_black_box(blackbox) if blackbox else None
    explainer = Explainer(
        checkpoint,
        black_box=box,
        device=device,
        resize=resize,
        method="max-box" if method == GT_BOX else method,
        method_options=parse_method_options(method_option),
    )
    samples = _samples(explainer, data, files, boxes, class_map, pixel_masks, limit)
    rows: list[dict] = []
    with progress_bar() as progress:
        summary = score_method(
            explainer,
            samples,
            metrics,
            method=method,
            steps=steps,
            seed=seed,
            progress=progress,
            on_row=rows.append,
        )
    if out_dir is not None:
        path = out_dir / f"{method}-{stem}.csv"
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        (out_dir / f"{method}-{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
        err.print(f"wrote {path} and {path.with_suffix('.json').name}", highlight=False)
        if "pixel" in metrics and pr_png is None:
            pr_png = out_dir / f"{method}-pr.png"
    if pr_png is not None:
        from rtsal.pixel_metrics import plot_pr_curves

        plot_pr_curves({method: pixel_metrics_of(summary)}, pr_png, title=f"{method}: PR curve")
        err.print(f"wrote {pr_png}", highlight=False)
    return summary


def describe(s: dict[str, Any]) -> str:
    lines = [f"{s['method']} on {s['images']} images ({1000 * s['seconds_per_image']:.0f} ms each)"]
    m = s["metrics"]
    if "localization" in m:
        lines.append(
            f"  localisation error {_fmt(s['localization_error'], True)} (paper: threshold 0.5, "
            f"IoU > 0.5)  MaxBoxAcc {_fmt(s['max_box_acc'], True)} "
            f"(at {s['max_box_acc_threshold']:.2f})  MaxBoxAccV2 {_fmt(s['max_box_acc_v2'], True)}"
        )
    if "saliency" in m:
        lines.append(
            f"  saliency metric {_fmt(s['saliency'])} (lower is better; crop area "
            f"{_fmt(s['crop_area'])}, p(crop) {_fmt(s['crop_probability'])})"
        )
    lines.append(
        f"  f_c(X) {_fmt(s['p_image'])}  f_c(X*M) {_fmt(s['p_image_times_mask'])}  "
        f"f_c(X*(1-M)) {_fmt(s['p_image_times_inverse'])}  mask area {_fmt(s['area'])}"
        + (f", absent class {_fmt(s['area_absent'])}" if "saliency" in m else "")
    )
    if "pointing" in m:
        lines.append(f"  pointing game {_fmt(s['pointing'], True)}")
    if "deletion" in m or "insertion" in m:
        lines.append(
            f"  deletion AUC {_fmt(s.get('deletion'))} (lower is better)  "
            f"insertion AUC {_fmt(s.get('insertion'))} (higher is better)"
        )
    if "pixel" in m:
        lines.append(
            f"  max F_beta {_fmt(s['max_f'])} (beta^2 0.3, at level {s['max_f_threshold']})  "
            f"MAE {_fmt(s['mae'])}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- shared options

Data = Annotated[Path | None, typer.Option("--data", "-d", help=_DATA_HELP)]
Files = Annotated[
    Path | None,
    typer.Option(help="Text file listing image paths (e.g. a training run's holdout.txt)."),
]
ClassMap = Annotated[
    Path | None,
    typer.Option(
        help="Map annotation class names to black-box classes: CSV 'name,class' lines or a JSON "
        "object (default: names, synsets or indices the black box knows)."
    ),
]
PixelMasks = Annotated[
    Path | None,
    typer.Option(help="Folder of ground-truth masks (<image stem>.png, object > 127)."),
]
Method = Annotated[
    str,
    typer.Option(
        help="Explanation method (rtsal methods lists them); gt-box scores the ground-truth boxes "
        "themselves as masks (an upper bound, needs --boxes)."
    ),
]
MethodOption = Annotated[
    list[str] | None,
    typer.Option("--method-option", help="Option for the method, KEY=VALUE (repeatable)."),
]
Checkpoint = Annotated[
    Path | None, typer.Option(help="Masking-model checkpoint (default: the shipped model).")
]
Blackbox = Annotated[
    str | None, typer.Option("--blackbox", "-b", help="Black box (default: the checkpoint's).")
]
Limit = Annotated[
    int | None, typer.Option(help="Use N images spread evenly over the list (every class).")
]
Resize = Annotated[str, typer.Option(help="fit (keep aspect) or square.")]
Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write per-image rows (CSV) and the summary (JSON) here."),
]
Steps = Annotated[int, typer.Option(help="Steps of the deletion/insertion curves.")]
Seed = Annotated[int, typer.Option(help="Seed for the absent classes.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def metric(
    data: Data = None,
    files: Files = None,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            "-m",
            help="Comma-separated: saliency, localization, pointing, deletion, insertion, pixel; "
            "or all.",
        ),
    ] = "saliency",
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="Boxes (VOC/ImageNet XML folder or file, COCO JSON, CSV): classes and "
            "boxes for localization and pointing."
        ),
    ] = None,
    class_map: ClassMap = None,
    pixel_masks: PixelMasks = None,
    pr_png: Annotated[
        Path | None, typer.Option(help="Draw the PR curve here (default: in --out).")
    ] = None,
    method: Method = "masker",
    method_option: MethodOption = None,
    checkpoint: Checkpoint = None,
    blackbox: Blackbox = None,
    limit: Limit = None,
    resize: Resize = "fit",
    steps: Steps = 50,
    out: Out = None,
    seed: Seed = 0,
    device: Device = "auto",
    json_out: JsonOut = False,
) -> None:
    """Score a method: the paper's saliency metric (default), localisation, pointing game,
    deletion/insertion AUC, and PR curve / max F_beta / MAE against pixel masks."""
    from rtsal.scoring import parse_metrics

    summary = run_scoring(
        metrics=parse_metrics(metrics),
        data=data,
        files=files,
        boxes=boxes,
        class_map=class_map,
        pixel_masks=pixel_masks,
        method=method,
        method_option=method_option,
        checkpoint=checkpoint,
        blackbox=blackbox,
        limit=limit,
        resize=resize,
        steps=steps,
        seed=seed,
        device=device,
        out=out,
        pr_png=pr_png,
        stem="metric",
    )
    typer.echo(json.dumps(summary) if json_out else describe(summary))


def localize(
    data: Data = None,
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="Ground-truth boxes: VOC/ImageNet XML (folder or file), COCO JSON or "
            "CSV (image,class,x0,y0,x1,y1)."
        ),
    ] = None,
    files: Files = None,
    class_map: ClassMap = None,
    method: Method = "masker",
    method_option: MethodOption = None,
    checkpoint: Checkpoint = None,
    blackbox: Blackbox = None,
    limit: Limit = None,
    resize: Resize = "fit",
    out: Out = None,
    device: Device = "auto",
    json_out: JsonOut = False,
) -> None:
    """Weakly supervised localisation: the paper's error (mask > 0.5, tightest box, IoU > 0.5
    with a ground-truth box of the class) and MaxBoxAcc over thresholds."""
    from rtsal.errors import RtsalError

    if boxes is None:
        raise RtsalError("rtsal localize needs --boxes (VOC XML, COCO JSON or CSV)")
    summary = run_scoring(
        metrics=["localization"],
        data=data,
        files=files,
        boxes=boxes,
        class_map=class_map,
        pixel_masks=None,
        method=method,
        method_option=method_option,
        checkpoint=checkpoint,
        blackbox=blackbox,
        limit=limit,
        resize=resize,
        steps=0,
        seed=0,
        device=device,
        out=out,
        pr_png=None,
        stem="localize",
    )
    typer.echo(json.dumps(summary) if json_out else describe(summary))


def register(app: typer.Typer) -> None:
    app.command("metric")(metric)
    app.command("localize")(localize)
