"""``rtsal train``: train a masking model against a black box."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from rtsal.cli._console import err, parse_ints, progress_bar
from rtsal.cli._options import PretrainedOption, WeightsOption
from rtsal.training.config import TrainConfig

_DEFAULT = TrainConfig(blackbox="", data="")  # every default lives in TrainConfig
_INT_LISTS = ("upsampler_channels", "small_widths", "mosaic_tiles")


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


# One alias per option, so the command reads as its parameters.
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        help="Training options from a TOML or JSON file (keys named as the options, "
        "e.g. lr = 5e-4, upsampler_channels = [256, 128, 64]); options given on the "
        "command line win."
    ),
]
BlackboxOption = Annotated[
    str | None,
    typer.Option(
        "--blackbox",
        "-b",
        help="Black box to explain: a timm "
        "name, file.py:factory, a classifier checkpoint, or a plugin's name.",
    ),
]
DataOption = Annotated[
    str | None,
    typer.Option("--data", "-d", help="Image folder, or cifar10 / fashion-mnist."),
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(help="Continue the run in this directory (its own options are used)."),
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory to write.")]
DataRootOption = Annotated[
    str | None,
    typer.Option(
        help="Local copy of a named data set (folder or .tar.gz); downloads when absent and online."
    ),
]
PresetOption = Annotated[
    str,
    typer.Option(
        help="auto, photos, paper or authors. photos (what trains rtsal's ImageNet maskers: "
        "TV 40, area 9, destroy 10, preserved image filled with colour only, lr 5e-4, batch "
        "12, 30 % mosaics, colour jitter 0.1) is what auto means for a pretrained classifier "
        "of photos; paper (Eq. 4: TV 10, area 6, destroy 5, lr 1e-3, batch 32) for small "
        "images and the small from-scratch encoder. Options given win."
    ),
]
EpochsOption = Annotated[float | None, typer.Option(help="Epochs to train.")]
StepsOption = Annotated[int | None, typer.Option(help="Steps to train (overrides --epochs).")]
BatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", help="Images per step (default: the preset's)")
]
ImageSizeOption = Annotated[
    int | None, typer.Option(help="Training resolution (default: the black box's input size).")
]
WeightDecayOption = Annotated[float, typer.Option(help="AdamW weight decay.")]
ScheduleOption = Annotated[str, typer.Option(help="cosine, step or constant.")]
WarmupStepsOption = Annotated[int, typer.Option(help="Linear warm-up steps.")]
TvWeightOption = Annotated[float | None, typer.Option("--tv-weight", help="lambda1 (smoothness).")]
AreaWeightOption = Annotated[float | None, typer.Option("--area-weight", help="lambda2 (area).")]
AreaPowerOption = Annotated[
    float | None,
    typer.Option(
        help="The area term is the mean of (M + 5e-4) ** power (1 = the paper's mean; the "
        "authors' code used 0.3, which pushes faint mask values to 0).",
    ),
]
PreserveWeightOption = Annotated[float | None, typer.Option(help="Weight of the preserve term.")]
DestroyWeightOption = Annotated[float | None, typer.Option(help="lambda3 (destroy term).")]
DestroyPowerOption = Annotated[float | None, typer.Option(help="lambda4 (destroy power).")]
DestroyDilationOption = Annotated[
    int | None,
    typer.Option(
        help="Pixels by which the mask is grown for the destroy term only (0 = the paper): "
        "the destroyed image loses a margin around the mask, so the mask itself can end at "
        "the object's edge.",
    ),
]
KeepBlurProbOption = Annotated[
    float | None,
    typer.Option(
        help="Share of blurred alternatives in the preserved image Phi(X, M) (default: the "
        "paper's 0.5, as for the destroyed one); 0 fills what the mask removes with colour "
        "and noise only, so the kept region alone must carry the class."
    ),
]
EmbedWeightOption = Annotated[
    float | None, typer.Option(help="Weight of the class-embedding speed-up term (0 = off).")
]
FakeProbOption = Annotated[float, typer.Option(help="Share of fake class selectors.")]
EncoderOption = Annotated[
    str,
    typer.Option(
        help="auto, blackbox (share the black box's network), "
        "small (paper's from-scratch encoder) or timm:NAME."
    ),
]
EmbeddingOption = Annotated[
    str, typer.Option(help="auto, learned, classifier-init or classifier-tied.")
]
UpsamplerChannelsOption = Annotated[str, typer.Option(help="Widths of the upsampler blocks.")]
BottlenecksOption = Annotated[int, typer.Option(help="Bottleneck blocks per upsampler.")]
SmallWidthsOption = Annotated[str, typer.Option(help="Widths of the small encoder's blocks.")]
MaskStrideOption = Annotated[
    int | None,
    typer.Option(
        help="Head resolution relative to the image (default 4; 2 for the small encoder)."
    ),
]
LimitOption = Annotated[int | None, typer.Option(help="Train on a seeded subset of this size.")]
HoldoutOption = Annotated[
    float,
    typer.Option(help="Fraction of an image folder to hold out (listed in OUT/holdout.txt)."),
]
WorkersOption = Annotated[int, typer.Option(help="Data-loading worker processes.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
AmpOption = Annotated[bool, typer.Option(help="Mixed precision on CUDA.")]
ChannelsLastOption = Annotated[
    bool, typer.Option(help="Channels-last memory layout (faster on CPUs).")
]
NormOption = Annotated[
    str,
    typer.Option(
        help="batch or group normalisation in the decoder (group: the same "
        "result on any number of processes)."
    ),
]
CheckpointEveryOption = Annotated[
    int, typer.Option(help="Steps between resumable checkpoints (0: only at the end).")
]
InitOption = Annotated[
    Path | None,
    typer.Option(help="Start from this masking-model checkpoint (same model options)."),
]
MaxBadStepsOption = Annotated[
    int, typer.Option(help="Stop after this many non-finite losses in a row.")
]
LabelsOption = Annotated[
    str,
    typer.Option(
        help="Where labels come from: folder (class folders or synset file names), "
        "blackbox (the black box's top-1 class, so any folder of photos is training data), "
        "or auto (folder labels when the folder has them, else blackbox)."
    ),
]
MinConfidenceOption = Annotated[
    float,
    typer.Option(help="--labels blackbox: keep photos whose top-1 probability is at least this."),
]
ExcludeOption = Annotated[
    list[Path] | None,
    typer.Option(
        help="Evaluation folder whose photos, and copies of them, are never trained on "
        "(repeatable). ILSVRC2012_val_* files are always left out."
    ),
]
DedupOption = Annotated[bool, typer.Option(help="Leave out repeated photos.")]
CropScaleOption = Annotated[
    float, typer.Option(help="Random resized crops keep at least this share of the photo.")
]
ColorJitterOption = Annotated[
    float | None,
    typer.Option(
        help="Brightness, contrast and saturation jitter (0: off) (default: the preset's)"
    ),
]
MosaicOption = Annotated[
    float | None,
    typer.Option(
        help="Share of training samples that are mosaics of 2 or 4 photos of different "
        "classes, the selector naming one tile's class (default: the preset's)"
    ),
]
MosaicTilesOption = Annotated[str, typer.Option(help="Tile counts to draw from: 2, 4 or 2,4.")]
ValEveryOption = Annotated[
    int,
    typer.Option(
        help="Validate every N steps on held-out photos (mosaic localisation, masks' "
        "probabilities and areas); the best model so far goes to OUT/best. Needs --holdout."
    ),
]
ValPhotosOption = Annotated[
    int, typer.Option(help="Held-out photos (and as many mosaics) for validation.")
]
KeepValidatedOption = Annotated[
    bool, typer.Option(help="Keep the model of every validation in OUT/validated/step-N.")
]
ValBoxesOption = Annotated[
    Path | None,
    typer.Option(
        help="Photos with exact boxes (a boxes.json, or a folder holding one; never "
        "evaluation photos): validation then scores box localisation and picks OUT/best by it."
    ),
]
JsonOutOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def train(
    ctx: typer.Context,
    config: ConfigOption = None,
    blackbox: BlackboxOption = None,
    data: DataOption = None,
    resume: ResumeOption = None,
    out: OutOption = Path("runs/masker"),
    data_root: DataRootOption = None,
    weights: WeightsOption = None,
    pretrained: PretrainedOption = _DEFAULT.pretrained,
    preset: PresetOption = _DEFAULT.preset,
    epochs: EpochsOption = None,
    steps: StepsOption = None,
    batch_size: BatchSizeOption = None,
    image_size: ImageSizeOption = None,
    lr: Annotated[
        float | None, typer.Option(help="AdamW learning rate (default: the preset's)")
    ] = None,
    weight_decay: WeightDecayOption = _DEFAULT.weight_decay,
    schedule: ScheduleOption = _DEFAULT.schedule,
    warmup_steps: WarmupStepsOption = _DEFAULT.warmup_steps,
    tv_weight: TvWeightOption = None,
    area_weight: AreaWeightOption = None,
    area_power: AreaPowerOption = None,
    preserve_weight: PreserveWeightOption = None,
    destroy_weight: DestroyWeightOption = None,
    destroy_power: DestroyPowerOption = None,
    destroy_dilation: DestroyDilationOption = None,
    keep_blur_prob: KeepBlurProbOption = None,
    embed_weight: EmbedWeightOption = None,
    fake_prob: FakeProbOption = _DEFAULT.fake_prob,
    encoder: EncoderOption = _DEFAULT.encoder,
    embedding: EmbeddingOption = _DEFAULT.embedding,
    upsampler_channels: UpsamplerChannelsOption = _ints(_DEFAULT.upsampler_channels),
    bottlenecks: BottlenecksOption = _DEFAULT.bottlenecks,
    small_widths: SmallWidthsOption = _ints(_DEFAULT.small_widths),
    mask_stride: MaskStrideOption = None,
    limit: LimitOption = None,
    holdout: HoldoutOption = _DEFAULT.holdout,
    workers: WorkersOption = _DEFAULT.workers,
    seed: Annotated[int, typer.Option(help="Random seed.")] = _DEFAULT.seed,
    device: DeviceOption = _DEFAULT.device,
    amp: AmpOption = _DEFAULT.amp,
    channels_last: ChannelsLastOption = _DEFAULT.channels_last,
    norm: NormOption = _DEFAULT.norm,
    checkpoint_every: CheckpointEveryOption = _DEFAULT.checkpoint_every,
    init: InitOption = None,
    max_bad_steps: MaxBadStepsOption = _DEFAULT.max_bad_steps,
    labels: LabelsOption = _DEFAULT.labels,
    min_confidence: MinConfidenceOption = _DEFAULT.min_confidence,
    exclude: ExcludeOption = None,
    dedup: DedupOption = _DEFAULT.dedup,
    crop_scale: CropScaleOption = _DEFAULT.crop_scale,
    color_jitter: ColorJitterOption = None,
    mosaic: MosaicOption = None,
    mosaic_tiles: MosaicTilesOption = _ints(_DEFAULT.mosaic_tiles),
    val_every: ValEveryOption = _DEFAULT.val_every,
    val_photos: ValPhotosOption = _DEFAULT.val_photos,
    keep_validated: KeepValidatedOption = _DEFAULT.keep_validated,
    val_boxes: ValBoxesOption = None,
    json_out: JsonOutOption = False,
) -> None:
    """Train a masking model for BLACKBOX on DATA and write a checkpoint to OUT.

    Ctrl-C saves and stops; --resume OUT continues. Under torchrun (torchrun --nproc-per-node N
    -m rtsal train ...) the processes share each global batch of --batch-size images."""
    _train(ctx, config, resume, steps, json_out)


def _train(
    ctx: typer.Context, config: Path | None, resume: Path | None, steps: int | None, json_out: bool
) -> None:
    """A new run from the options given (and the --config file), or the run in ``resume``."""
    from rtsal.training.trainer import Trainer, resume_trainer

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
        if trainer.selection.note:
            err.print(trainer.selection.note, highlight=False, markup=False)
        err.print(trainer.selection.summary(), highlight=False, markup=False)
    if trainer.init_note:
        err.print(trainer.init_note, highlight=False, markup=False)
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
    from rtsal.engine.distributed import shutdown

    main = trainer.dist.is_main
    if main:
        cfg = trainer.cfg
        err.print(
            f"{headline} (preset {cfg.preset}: lr {cfg.lr:g}, batch {cfg.batch_size}, "
            f"mosaic {cfg.mosaic:g}; {len(trainer.dataset)} images, {trainer.total_steps} steps, "
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
