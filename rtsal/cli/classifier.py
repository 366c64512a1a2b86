"""``rtsal classifier train``: a reference classifier for CIFAR-10, Fashion-MNIST or a split
folder of small images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import err, progress_bar
from rtsal.cli._options import PretrainedOption

classifier_app = typer.Typer(
    help="Reference classifiers to use as black boxes.", no_args_is_help=True
)


DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="cifar10, fashion-mnist, or a folder with train/ and test/ class sub-folders "
        "(e.g. from rtsal canvas).",
    ),
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory.")]
DataRootOption = Annotated[str | None, typer.Option(help="Local copy of the data set.")]
ArchOption = Annotated[
    str, typer.Option(help="resnet9, resnet18 or vit (a small vision transformer).")
]
WidthOption = Annotated[int, typer.Option(help="Base channel width.")]
EpochsOption = Annotated[int, typer.Option(help="Epochs (one-cycle schedule).")]
StepsOption = Annotated[int | None, typer.Option(help="Stop after this many steps.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size")]
LrOption = Annotated[
    float | None,
    typer.Option(help="Peak learning rate (default: 0.2, SGD, for ResNets; 1e-3, AdamW, for vit)."),
]
LimitOption = Annotated[int | None, typer.Option(help="Train on a seeded subset.")]
WorkersOption = Annotated[int, typer.Option(help="Data-loading workers.")]
SeedOption = Annotated[int, typer.Option()]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
JsonOutOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@classifier_app.command("train")
def train_classifier_cmd(
    data: DataOption = "cifar10",
    out: OutOption = Path("runs/classifier"),
    data_root: DataRootOption = None,
    arch: ArchOption = "resnet9",
    width: WidthOption = 32,
    epochs: EpochsOption = 10,
    steps: StepsOption = None,
    batch_size: BatchSizeOption = 256,
    lr: LrOption = None,
    limit: LimitOption = None,
    workers: WorkersOption = 0,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    json_out: JsonOutOption = False,
) -> None:
    """Train a classifier; the output directory then works as --blackbox DIR."""
    from rtsal.tools.classifier import ClassifierConfig, train_classifier

    cfg = ClassifierConfig(
        data=data,
        data_root=data_root,
        arch=arch,
        width=width,
        epochs=epochs,
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        limit=limit,
        workers=workers,
        seed=seed,
        device=device,
        out=str(out),
    )
    err.print(f"training {arch} (width {width}) on {data}", highlight=False)
    with progress_bar() as progress:
        result = train_classifier(cfg, progress)
    summary = {
        "checkpoint": str(result.out),
        "test_accuracy": result.test_accuracy,
        "steps": result.steps,
        "seconds": round(result.train_seconds, 1),
    }
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"wrote {result.out}: test accuracy {100 * result.test_accuracy:.2f} % after "
            f"{result.steps} steps in {result.train_seconds:.0f} s"
        )


@classifier_app.command("evaluate")
def evaluate_classifier_cmd(
    blackbox: Annotated[str, typer.Option("--blackbox", "-b", help="Any black-box name.")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="Image folder (class sub-folders or "
            "synset-named files), cifar10 or fashion-mnist.",
        ),
    ],
    data_root: Annotated[str | None, typer.Option(help="Local copy of a named data set.")] = None,
    split: Annotated[str, typer.Option(help="train or test (named sets).")] = "test",
    weights: Annotated[Path | None, typer.Option(help="Black-box weights file.")] = None,
    pretrained: PretrainedOption = True,
    limit: Annotated[int | None, typer.Option(help="Evaluate a seeded subset.")] = None,
    batch_size: BatchSizeOption = 32,
    workers: WorkersOption = 0,
    device: DeviceOption = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-1 / top-5 accuracy of a black box, with its own preprocessing."""
    from rtsal.data.folders import make_loader, open_dataset
    from rtsal.device import resolve_device
    from rtsal.registry.blackbox import create_black_box
    from rtsal.registry.classes import ClassResolver
    from rtsal.tools.classifier import black_box_accuracy

    dev = resolve_device(device)
    given = {"weights": str(weights.expanduser())} if weights is not None else {}
    box = create_black_box(blackbox, pretrained=pretrained, **given).to(dev)
    ds = open_dataset(
        data,
        split=split,
        size=box.input_size,
        data_root=data_root,
        resolver=ClassResolver.for_black_box(box),
        interpolation=box.interpolation,
        crop_pct=box.crop_pct,
        channels=box.in_channels,
        limit=limit,
    )
    with progress_bar() as progress:
        res = black_box_accuracy(
            box, make_loader(ds, batch_size, shuffle=False, workers=workers), dev, progress
        )
    res = {"blackbox": box.name, "data": data, **res}
    if json_out:
        typer.echo(json.dumps(res))
    else:
        typer.echo(
            f"{box.name} on {data}: top-1 {100 * res['top1']:.2f} %, "
            f"top-5 {100 * res['top5']:.2f} % ({res['images']} images)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(classifier_app, name="classifier")
