"""``rtsal metric`` and ``rtsal localize``: the paper's evaluation for any method, one pass per
method over the images. Each command reads its options into a
:class:`rtsal.runs.scoring.SampleSource` and :class:`rtsal.runs.scoring.ScoringOptions`
and calls :func:`rtsal.runs.scoring.run_scoring`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rtsal.cli._console import err, progress_bar
from rtsal.cli._options import (
    AllowOtherBlackBoxOption,
    PretrainedOption,
    ShardOption,
    TrustCodeOption,
    WeightsOption,
)
from rtsal.runs.scoring import SampleSource, ScoringOptions

_DEFAULT = ScoringOptions()  # every default of the scoring options lives in ScoringOptions

_DATA_HELP = "Image folder (class sub-folders or synset-named files), or one image."


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _ci(s: dict[str, Any], key: str, pct: bool = False) -> str:
    """The summary's 95 % interval of ``key`` as text, or nothing when it has none."""
    ci = s.get(f"{key}_ci95")
    if not ci:
        return ""
    lo, hi = (100 * v for v in ci) if pct else ci
    return f" [95% CI {lo:.1f}-{hi:.1f}%]" if pct else f" [95% CI {lo:.3f} to {hi:.3f}]"


def describe(s: dict[str, Any]) -> str:
    if not s["images"]:  # a shard without samples
        return f"{s['method']} on 0 images"
    lines = [f"{s['method']} on {s['images']} images ({1000 * s['seconds_per_image']:.0f} ms each)"]
    m = s["metrics"]
    if "localization" in m:
        lines.append(
            f"  localisation error {_fmt(s['localization_error'], True)}"
            f"{_ci(s, 'localization_error', True)} (paper: threshold 0.5, "
            f"IoU > 0.5)  MaxBoxAcc {_fmt(s['max_box_acc'], True)} "
            f"(at {s['max_box_acc_threshold']:.2f})  MaxBoxAccV2 {_fmt(s['max_box_acc_v2'], True)}"
        )
    if "saliency" in m:
        lines.append(
            f"  saliency metric {_fmt(s['saliency'])}{_ci(s, 'saliency')} (lower is better; "
            f"median {_fmt(s.get('saliency_median'))}, crop area "
            f"{_fmt(s['crop_area'])}, p(crop) {_fmt(s['crop_probability'])})"
        )
    lines.append(
        f"  f_c(X) {_fmt(s['p_image'])}  f_c(X*M) {_fmt(s['p_image_times_mask'])}  "
        f"f_c(X*(1-M)) {_fmt(s['p_image_times_inverse'])}  mask area {_fmt(s['area'])}"
        + (f", absent class {_fmt(s['area_absent'])}" if "saliency" in m else "")
    )
    if "wrong_way" in s:
        lines.append(
            f"  wrong way round (f_c(X*(1-M)) >= f_c(X*M)) {_fmt(s['wrong_way'], True)}"
            f"{_ci(s, 'wrong_way', True)}  removal halves f_c {_fmt(s['removal_halves'], True)}"
        )
    if "pointing" in m:
        lines.append(f"  pointing game {_fmt(s['pointing'], True)}{_ci(s, 'pointing', True)}")
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
Resize = Annotated[
    str,
    typer.Option(help="auto (square for fixed-size models such as ViTs, else fit), fit or square."),
]
Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write per-image rows (CSV) and the summary (JSON) here."),
]
Steps = Annotated[int, typer.Option(help="Steps of the deletion/insertion curves.")]
Seed = Annotated[int, typer.Option(help="Seed for the absent classes.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
Metrics = Annotated[
    str,
    typer.Option(
        "--metrics",
        "-m",
        help="Comma-separated: saliency, localization, pointing, deletion, insertion, pixel; "
        "or all.",
    ),
]
MetricBoxes = Annotated[
    Path | None,
    typer.Option(
        help="Boxes (VOC/ImageNet XML folder or file, COCO JSON, CSV): classes and "
        "boxes for localization and pointing."
    ),
]
PrPng = Annotated[Path | None, typer.Option(help="Draw the PR curve here (default: in --out).")]


def metric(
    data: Data = None,
    files: Files = None,
    metrics: Metrics = ",".join(_DEFAULT.metrics),
    boxes: MetricBoxes = None,
    class_map: ClassMap = None,
    pixel_masks: PixelMasks = None,
    pr_png: PrPng = None,
    method: Method = _DEFAULT.method,
    method_option: MethodOption = None,
    checkpoint: Checkpoint = None,
    blackbox: Blackbox = None,
    weights: WeightsOption = None,
    pretrained: PretrainedOption = True,
    limit: Limit = None,
    resize: Resize = _DEFAULT.resize,
    steps: Steps = _DEFAULT.steps,
    out: Out = None,
    seed: Seed = _DEFAULT.seed,
    device: Device = _DEFAULT.device,
    json_out: JsonOut = False,
    shard: ShardOption = None,
    trust_code: TrustCodeOption = False,
    allow_other_black_box: AllowOtherBlackBoxOption = False,
) -> None:
    """Score a method: the paper's saliency metric (default), localisation, pointing game,
    deletion/insertion AUC, and PR curve / max F_beta / MAE against pixel masks."""
    from rtsal.registry.methods import parse_method_options

    options = ScoringOptions(
        metrics=metrics,
        method=method,
        method_options=parse_method_options(method_option),
        checkpoint=checkpoint,
        blackbox=blackbox,
        weights=weights,
        pretrained=pretrained,
        trust_code=trust_code,
        allow_other_black_box=allow_other_black_box,
        shard=shard,
        resize=resize,
        device=device,
        steps=steps,
        seed=seed,
        out=out,
        pr_png=pr_png,
    )
    source = SampleSource(
        data=data,
        files=files,
        boxes=boxes,
        class_map=class_map,
        pixel_masks=pixel_masks,
        limit=limit,
    )
    _run(source, options, json_out)


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
    method: Method = _DEFAULT.method,
    method_option: MethodOption = None,
    checkpoint: Checkpoint = None,
    blackbox: Blackbox = None,
    weights: WeightsOption = None,
    pretrained: PretrainedOption = True,
    limit: Limit = None,
    resize: Resize = _DEFAULT.resize,
    out: Out = None,
    device: Device = _DEFAULT.device,
    json_out: JsonOut = False,
    shard: ShardOption = None,
    trust_code: TrustCodeOption = False,
    allow_other_black_box: AllowOtherBlackBoxOption = False,
) -> None:
    """Weakly supervised localisation: the paper's error (mask > 0.5, tightest box, IoU > 0.5
    with a ground-truth box of the class) and MaxBoxAcc over thresholds."""
    from rtsal.errors import RtsalError
    from rtsal.registry.methods import parse_method_options

    if boxes is None:
        raise RtsalError("rtsal localize needs --boxes (VOC XML, COCO JSON or CSV)")
    options = ScoringOptions(
        metrics=("localization",),
        method=method,
        method_options=parse_method_options(method_option),
        checkpoint=checkpoint,
        blackbox=blackbox,
        weights=weights,
        pretrained=pretrained,
        trust_code=trust_code,
        allow_other_black_box=allow_other_black_box,
        shard=shard,
        resize=resize,
        device=device,
        out=out,
        stem="localize",
    )
    source = SampleSource(data=data, files=files, boxes=boxes, class_map=class_map, limit=limit)
    _run(source, options, json_out)


def _run(source: SampleSource, options: ScoringOptions, json_out: bool) -> None:
    from rtsal.runs.scoring import run_scoring

    with progress_bar() as progress:
        result = run_scoring(source, options, progress=progress)
    if result.written:
        err.print(f"wrote {', '.join(map(str, result.written))}", highlight=False)
    if result.shard.sharded:
        err.print(
            f"shard {result.shard}: {result.summary['images']} of {result.samples} samples; "
            "rtsal merge joins the shards' records into the run's summary",
            highlight=False,
        )
    typer.echo(json.dumps(result.summary) if json_out else describe(result.summary))


def register(app: typer.Typer) -> None:
    app.command("metric")(metric)
    app.command("localize")(localize)
