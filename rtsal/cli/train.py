"""``rtsal train``: train a masking model against a black box."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from rtsal.cli._console import err, parse_ints, progress_bar
from rtsal.train_config import TrainConfig

_DEFAULT = TrainConfig(blackbox="", data="")  # every default lives in TrainConfig
_INT_LISTS = ("upsampler_channels", "small_widths", "mosaic_tiles")


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def train(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Training options from a TOML or JSON file (keys named as the options, "
            "e.g. lr = 5e-4, upsampler_channels = [256, 128, 64]); options given on the "
            "command line win."
        ),
    ] = None,
    blackbox: Annotated[
        str | None,
        typer.Option(
            "--blackbox",
            "-b",
            help="Black box to explain: a timm "
            "name, file.py:factory, a classifier checkpoint, or a plugin's name.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Image folder, or cifar10 / fashion-mnist."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this directory (its own options are used)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory to write.")] = Path(
        "runs/masker"
    ),
    data_root: Annotated[
        str | None,
        typer.Option(
            help="Local copy of a named data set (folder "
            "or .tar.gz); downloads when absent and online."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="Black-box weights file (safetensors, or a .pt/.pth tensor file)."),
    ] = None,
    pretrained: Annotated[
        bool, typer.Option(help="Use pretrained black-box weights.")
    ] = _DEFAULT.pretrained,
    preset: Annotated[
        str, typer.Option(help="Objective preset: paper or authors.")
    ] = _DEFAULT.preset,
    epochs: Annotated[float | None, typer.Option(help="Epochs to train.")] = None,
    steps: Annotated[int | None, typer.Option(help="Steps to train (overrides --epochs).")] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per step.")
    ] = _DEFAULT.batch_size,
    image_size: Annotated[
        int | None, typer.Option(help="Training resolution (default: the black box's input size).")
    ] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = _DEFAULT.lr,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay.")
    ] = _DEFAULT.weight_decay,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant.")] = _DEFAULT.schedule,
    warmup_steps: Annotated[
        int, typer.Option(help="Linear warm-up steps.")
    ] = _DEFAULT.warmup_steps,
    tv_weight: Annotated[
        float | None, typer.Option("--tv-weight", help="lambda1 (smoothness).")
    ] = None,
    area_weight: Annotated[
        float | None, typer.Option("--area-weight", help="lambda2 (area).")
    ] = None,
    preserve_weight: Annotated[
        float | None, typer.Option(help="Weight of the preserve term.")
    ] = None,
    destroy_weight: Annotated[float | None, typer.Option(help="lambda3 (destroy term).")] = None,
    destroy_power: Annotated[float | None, typer.Option(help="lambda4 (destroy power).")] = None,
    embed_weight: Annotated[
        float | None, typer.Option(help="Weight of the class-embedding speed-up term (0 = off).")
    ] = None,
    fake_prob: Annotated[
        float, typer.Option(help="Share of fake class selectors.")
    ] = _DEFAULT.fake_prob,
    encoder: Annotated[
        str,
        typer.Option(
            help="auto, blackbox (share the black box's network), "
            "small (paper's from-scratch encoder) or timm:NAME."
        ),
    ] = _DEFAULT.encoder,
    embedding: Annotated[
        str, typer.Option(help="auto, learned, classifier-init or classifier-tied.")
    ] = _DEFAULT.embedding,
    upsampler_channels: Annotated[
        str, typer.Option(help="Widths of the upsampler blocks.")
    ] = _ints(_DEFAULT.upsampler_channels),
    bottlenecks: Annotated[
        int, typer.Option(help="Bottleneck blocks per upsampler.")
    ] = _DEFAULT.bottlenecks,
    small_widths: Annotated[
        str, typer.Option(help="Widths of the small encoder's blocks.")
    ] = _ints(_DEFAULT.small_widths),
    mask_stride: Annotated[
        int | None,
        typer.Option(
            help="Head resolution relative to the image (default 4; 2 for the small encoder)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Train on a seeded subset of this size.")
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(help="Fraction of an image folder to hold out (listed in OUT/holdout.txt)."),
    ] = _DEFAULT.holdout,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = _DEFAULT.workers,
    seed: Annotated[int, typer.Option(help="Random seed.")] = _DEFAULT.seed,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = _DEFAULT.device,
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA.")] = _DEFAULT.amp,
    channels_last: Annotated[
        bool, typer.Option(help="Channels-last memory layout (faster on CPUs).")
    ] = _DEFAULT.channels_last,
    norm: Annotated[
        str,
        typer.Option(
            help="batch or group normalisation in the decoder (group: the same "
            "result on any number of processes)."
        ),
    ] = _DEFAULT.norm,
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between resumable checkpoints (0: only at the end).")
    ] = _DEFAULT.checkpoint_every,
    init: Annotated[
        Path | None,
        typer.Option(help="Start from this masking-model checkpoint (same model options)."),
    ] = None,
    max_bad_steps: Annotated[
        int, typer.Option(help="Stop after this many non-finite losses in a row.")
    ] = _DEFAULT.max_bad_steps,
    labels: Annotated[
        str,
        typer.Option(
            help="Where labels come from: folder (class folders or synset file names) or "
            "blackbox (the black box's top-1 class, so any folder of photos is training data)."
        ),
    ] = _DEFAULT.labels,
    min_confidence: Annotated[
        float,
        typer.Option(
            help="--labels blackbox: keep photos whose top-1 probability is at least this."
        ),
    ] = _DEFAULT.min_confidence,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            help="Evaluation folder whose photos, and copies of them, are never trained on "
            "(repeatable). ILSVRC2012_val_* files are always left out."
        ),
    ] = None,
    dedup: Annotated[bool, typer.Option(help="Leave out repeated photos.")] = _DEFAULT.dedup,
    crop_scale: Annotated[
        float, typer.Option(help="Random resized crops keep at least this share of the photo.")
    ] = _DEFAULT.crop_scale,
    color_jitter: Annotated[
        float, typer.Option(help="Brightness, contrast and saturation jitter (0: off).")
    ] = _DEFAULT.color_jitter,
    mosaic: Annotated[
        float,
        typer.Option(
            help="Share of training samples that are mosaics of 2 or 4 photos of different "
            "classes, the selector naming one tile's class."
        ),
    ] = _DEFAULT.mosaic,
    mosaic_tiles: Annotated[
        str, typer.Option(help="Tile counts to draw from: 2, 4 or 2,4.")
    ] = _ints(_DEFAULT.mosaic_tiles),
    val_every: Annotated[
        int,
        typer.Option(
            help="Validate every N steps on held-out photos (mosaic localisation, masks' "
            "probabilities and areas); the best model so far goes to OUT/best. Needs --holdout."
        ),
    ] = _DEFAULT.val_every,
    val_photos: Annotated[
        int, typer.Option(help="Held-out photos (and as many mosaics) for validation.")
    ] = _DEFAULT.val_photos,
    keep_validated: Annotated[
        bool, typer.Option(help="Keep the model of every validation in OUT/validated/step-N.")
    ] = _DEFAULT.keep_validated,
    val_boxes: Annotated[
        Path | None,
        typer.Option(
            help="Photos with exact boxes (a boxes.json, or a folder holding one; never "
            "evaluation photos): validation then scores box localisation and picks OUT/best by it."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a masking model for BLACKBOX on DATA and write a checkpoint to OUT.

    Ctrl-C saves and stops; --resume OUT continues. Under torchrun (torchrun --nproc-per-node N
    -m rtsal train ...) the processes share each global batch of --batch-size images.
    """
    from rtsal.trainer import Trainer, resume_trainer

    if resume is not None:
        trainer = resume_trainer(resume, **({"steps": steps} if steps is not None else {}))
        _run(trainer, json_out, f"resuming {resume} at step {trainer.step}")
        return
    cfg = TrainConfig.from_sources(config, _given_options(ctx))
    with progress_bar() as progress:
        task = progress.add_task("indexing photos", total=None)

        def on_index(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        trainer = Trainer(cfg, index_progress=on_index)
    if trainer.selection is not None:
        err.print(trainer.selection.summary(), highlight=False, markup=False)
    _run(trainer, json_out, f"training a masking model for {trainer.black_box.name} on {cfg.data}")


def _given_options(ctx: typer.Context) -> dict[str, Any]:
    """The TrainConfig fields set on the command line (not left at their defaults), typed."""
    names = {f.name for f in fields(TrainConfig)}
    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if name not in names or source is None or source.name.startswith("DEFAULT"):
            continue
        if name in _INT_LISTS:
            value = parse_ints(value, "--" + name.replace("_", "-"))
        elif isinstance(value, Path):
            value = str(value)
        elif name == "exclude":
            value = tuple(str(v) for v in value or ())
        given[name] = value
    return given


def _run(trainer, json_out: bool, headline: str) -> None:
    from rtsal.distributed import shutdown

    main = trainer.dist.is_main
    if main:
        err.print(
            f"{headline} ({len(trainer.dataset)} images, {trainer.total_steps} steps, "
            f"{trainer.dist.world_size} process(es) on {trainer.device.type}, encoder "
            f"{trainer.model_config.encoder})",
            highlight=False,
            markup=False,
        )
    with progress_bar(enabled=main) as progress:
        task = progress.add_task("train", total=trainer.total_steps)

        def on_step(step: int, total: int, m: dict[str, float]) -> None:
            progress.update(
                task,
                completed=step,
                description=(
                    f"tv {m['tv']:.3f} area {m['area']:.3f} "
                    f"preserve {m['preserve']:.3f} destroy {m['destroy']:.3f}"
                ),
            )

        result = trainer.fit(on_step)
    shutdown(trainer.dist)
    if not main:
        return
    summary = {
        "checkpoint": str(result.out),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "interrupted": result.interrupted,
        **result.final_losses,
    }
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        f = result.final_losses
        typer.echo(
            f"wrote {result.out} after {result.steps} steps in {result.seconds:.0f} s"
            + (
                f" (interrupted; continue with rtsal train --resume {result.out})"
                if result.interrupted
                else ""
            )
            + f"; last-50-step means: total {f.get('total', float('nan')):.3f}, "
            f"mask area real {f.get('mask_area_real', float('nan')):.3f} / "
            f"fake {f.get('mask_area_fake', float('nan')):.3f}"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
