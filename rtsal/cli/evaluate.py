"""``rtsal evaluate``: quality of a trained masking model on a labelled data set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import err, progress_bar
from rtsal.cli._options import (
    AllowOtherBlackBoxOption,
    PretrainedOption,
    TrustCodeOption,
    WeightsOption,
)

CheckpointArg = Annotated[Path, typer.Argument(help="Masking-model checkpoint directory.")]
DataOption = Annotated[
    str, typer.Option("--data", "-d", help="Image folder, or cifar10 / fashion-mnist.")
]
DataRootOption = Annotated[str | None, typer.Option(help="Local copy of a named data set.")]
BlackboxOption = Annotated[
    str | None,
    typer.Option(
        "--blackbox",
        "-b",
        help="Use this black box instead of the one the checkpoint names (checked for a match).",
    ),
]
SplitOption = Annotated[str, typer.Option(help="train or test (named sets).")]
LimitOption = Annotated[int | None, typer.Option(help="Evaluate a seeded subset.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size")]
GridOption = Annotated[int, typer.Option(help="Images in the Figure-6 grid (0: none).")]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write report.json and grid.png here.")
]
SeedOption = Annotated[int, typer.Option()]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
JsonOutOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def evaluate(
    checkpoint: CheckpointArg,
    data: DataOption,
    data_root: DataRootOption = None,
    blackbox: BlackboxOption = None,
    weights: WeightsOption = None,
    pretrained: PretrainedOption = True,
    split: SplitOption = "test",
    limit: LimitOption = None,
    batch_size: BatchSizeOption = 100,
    grid: GridOption = 20,
    out: OutOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    json_out: JsonOutOption = False,
    trust_code: TrustCodeOption = False,
    allow_other_black_box: AllowOtherBlackBoxOption = False,
) -> None:
    """Accuracy, f_c on preserved/destroyed images and mask areas for true and fake classes."""
    from rtsal.data.folders import make_loader
    from rtsal.device import resolve_device
    from rtsal.engine.checkpoint import load_masker
    from rtsal.files import prepare_out_dir
    from rtsal.registry.resolve import resolve_models
    from rtsal.tools.evaluate import evaluate_masker, training_removal

    out_dir = prepare_out_dir(out) if out else None
    dev = resolve_device(device)
    ckpt, box = resolve_models(
        checkpoint,
        black_box=blackbox,
        weights=weights,
        pretrained=pretrained,
        trust_code=trust_code,
        allow_other_black_box=allow_other_black_box,
    )
    model, box, meta = load_masker(
        ckpt, box, device=dev, allow_other_black_box=allow_other_black_box
    )
    ds = _labelled_set(data, box, split=split, data_root=data_root, limit=limit, seed=seed)
    removal = training_removal(meta)
    loader = make_loader(ds, batch_size, shuffle=False)
    with progress_bar() as progress:
        report = evaluate_masker(
            model, box, loader, removal=removal, seed=seed, device=dev, progress=progress
        )
    result = {"checkpoint": str(checkpoint), "data": data, "split": split, **report.to_dict()}
    if out_dir is not None:
        if grid > 0:
            result["grid"] = str(_save_grid(out_dir / "grid.png", model, box, ds, grid, seed, dev))
        (out_dir / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    if json_out:
        typer.echo(json.dumps(result))
        return
    _print_report(report)
    if out_dir is not None:
        err.print(f"wrote {out_dir / 'report.json'}", highlight=False)


def _labelled_set(data: str, box, *, split: str, data_root, limit, seed: int):
    """The data set ``data`` as ``box`` takes its inputs, labelled with ``box``'s classes."""
    from rtsal.data.folders import open_dataset
    from rtsal.registry.classes import ClassResolver

    return open_dataset(
        data,
        split=split,
        size=box.input_size,
        resolver=ClassResolver.for_black_box(box),
        data_root=data_root,
        interpolation=box.interpolation,
        crop_pct=box.crop_pct,
        channels=box.in_channels,
        limit=limit,
        seed=seed,
    )


def _save_grid(path: Path, model, box, dataset, n: int, seed: int, device) -> Path:
    """The Figure-6 grid of ``n`` images and their true-class masks, written to ``path``."""
    from rtsal.inference.visualize import figure6_grid

    images, masks, labels = grid_sample(model, dataset, n, seed, device)
    names = [box.class_names[i] for i in labels]
    figure6_grid(images, masks, names).save(path)
    return path


def _print_report(r) -> None:
    typer.echo(
        f"{r.images} images: accuracy {100 * r.accuracy:.2f} %\n"
        f"  f_c(X) {r.p_image:.3f}   f_c(Phi(X,M)) {r.p_preserved:.3f}   "
        f"f_c(Phi(X,1-M)) {r.p_destroyed:.3f}\n"
        f"  f_c(X*M) {r.p_image_times_mask:.3f}   f_c(X*(1-M)) {r.p_image_times_inverse:.3f}\n"
        f"  mask area: true class {r.area_true:.3f} (median {r.area_true_median:.3f}), "
        f"fake class {r.area_fake:.3f} (median {r.area_fake_median:.3f})"
    )


def grid_sample(model, dataset, n: int, seed: int, device):
    """A seeded sample of ``n`` images spread over the whole set, with their true-class masks."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))].tolist()
    pairs = [dataset[i] for i in idx]
    x = torch.stack([p[0] for p in pairs])
    y = torch.tensor([int(p[1]) for p in pairs])
    with torch.inference_mode():
        m = model(x.to(device), y.to(device)).mask.cpu()
    return x, m, y.tolist()


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
