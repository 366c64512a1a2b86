"""Building an rtsal black box from a transformers image classifier.

Imported when an ``hf:`` black box is built (it imports torch; transformers is imported by
:func:`import_transformers`, which turns its absence into one line saying what to install).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from rtsal import BlackBox, load_state_dict
from rtsal.errors import CheckpointError, RtsalError, WeightsUnavailableError, close_matches
from torch import nn

from rtsal_transformers import (
    PLUGIN_NAME,
    PREFIX,
    ModelSource,
    cached_classifiers,
    hub_cache,
    hub_reachable,
)

INSTALL_HINT = "pip install rtsal-transformers (or pip install 'transformers>=4.40')"
RANDOM_INIT_SEED = 0  # --no-pretrained builds the same network every time (train, then explain)
# PIL's resampling filters (PILImageResampling) by number, as image processors store them
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
T = TypeVar("T")


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise RtsalError(
            f"hf: black boxes need the transformers library, which cannot be imported "
            f"({type(exc).__name__}: {exc}): {INSTALL_HINT}"
        ) from None
    return transformers


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """An image processor's evaluation preprocessing, in the terms of :class:`rtsal.BlackBox`:
    ``(x - mean) / std`` of an image in [0, 1] gives the processor's ``pixel_values``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int]
    interpolation: str
    crop_pct: float


def read_preprocessing(processor: Any, config: Any, name: str) -> Preprocessing:
    """Normalisation, input size, resize filter and centre-crop fraction of ``processor``."""
    channels = int(getattr(config, "num_channels", 3) or 3)
    mean, std = _normalisation(processor, channels, name)
    input_size, crop_pct = _geometry(processor, config, name)
    return Preprocessing(
        mean, std, input_size, _interpolation(getattr(processor, "resample", None)), crop_pct
    )


def _per_channel(value: Any, channels: int, what: str, name: str) -> list[float]:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values *= channels
    if len(values) != channels:
        raise RtsalError(
            f"{name}: its image processor's {what} has {len(values)} values for a model with "
            f"{channels} channels"
        )
    return values


def _normalisation(
    processor: Any, channels: int, name: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor computes ``((255 x * factor - offset) - mean) / std`` (and EfficientNet's,
    with ``include_top``, divides by ``std`` once more); rewritten as ``(x - m) / s``."""
    image_mean = getattr(processor, "image_mean", None)
    image_std = getattr(processor, "image_std", None)
    if getattr(processor, "do_normalize", False) and image_mean is not None:
        mean = _per_channel(image_mean, channels, "image_mean", name)
        std = _per_channel(image_std if image_std is not None else 1.0, channels, "image_std", name)
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    if getattr(processor, "include_top", False) and image_std is not None:
        again = _per_channel(image_std, channels, "image_std", name)
        std = [s * t for s, t in zip(std, again, strict=True)]
    do_rescale = bool(getattr(processor, "do_rescale", True))
    factor = float(getattr(processor, "rescale_factor", 1 / 255) or 1 / 255) if do_rescale else 1.0
    offset = 1.0 if do_rescale and getattr(processor, "rescale_offset", False) else 0.0
    scale = 255.0 * factor
    if any(s == 0 for s in std):
        raise RtsalError(f"{name}: its image processor's image_std has a zero")
    return tuple((offset + m) / scale for m in mean), tuple(s / scale for s in std)


def _size_value(size: Any, key: str) -> int | None:
    """``size[key]`` of a processor's size: a dict, a ``SizeDict`` or (old processors) an int."""
    if size is None:
        return None
    if isinstance(size, int):
        return size if key in ("height", "width", "shortest_edge") else None
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value else None


def _geometry(processor: Any, config: Any, name: str) -> tuple[tuple[int, int], float]:
    """``(input_size, crop_pct)``: the size of ``pixel_values`` and the share of the resized image
    that the centre crop keeps."""
    size = getattr(processor, "size", None) if getattr(processor, "do_resize", True) else None
    height, width = _size_value(size, "height"), _size_value(size, "width")
    shortest = _size_value(size, "shortest_edge")
    crops = getattr(processor, "do_center_crop", False)
    crop = getattr(processor, "crop_size", None) if crops else None
    crop_h, crop_w = _size_value(crop, "height"), _size_value(crop, "width")
    crop_pct = getattr(processor, "crop_pct", None)
    if shortest and crop_pct:  # resize the short side to shortest / crop_pct, crop shortest
        if crop_h and crop_w:
            return (crop_h, crop_w), float(crop_pct)
        if shortest < 384:  # ConvNeXt's processor: crop below 384 pixels, warp from there on
            return (shortest, shortest), float(crop_pct)
        return (shortest, shortest), 1.0
    resized_short = min(height, width) if height and width else shortest
    if crop_h and crop_w:
        kept = min(crop_h, crop_w) / resized_short if resized_short else 1.0
        return (crop_h, crop_w), min(1.0, kept)
    if height and width:
        return (height, width), 1.0
    if shortest:
        return (shortest, shortest), 1.0
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, int):
        return (image_size, image_size), 1.0
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        return (int(image_size[0]), int(image_size[1])), 1.0
    raise RtsalError(
        f"{name}: cannot tell its input size: its image processor resizes to no fixed size "
        "(no height and width, shortest_edge or crop_size) and its config has no image_size"
    )


def _interpolation(resample: Any) -> str:
    value = getattr(resample, "value", resample)  # PILImageResampling or InterpolationMode
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, int):
        return RESAMPLE_NAMES.get(value, "bilinear")
    return "bilinear"


def class_names(config: Any) -> list[str]:
    """``config.id2label`` in index order, one name per logit."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels))]


def class_synonyms(names: list[str]) -> list[tuple[str, ...]] | None:
    """ImageNet-style labels ("tabby, tabby cat") answer to each of their comma-separated names."""
    if not any("," in n for n in names):
        return None
    return [tuple(p.strip() for p in n.split(",") if p.strip()) or (n,) for n in names]


# --------------------------------------------------------------------------- the network


class HFClassifier(nn.Module):
    """A transformers image classifier as a plain network: normalised pixels in, logits out.

    With ``fixed_input_size`` (a ViT's position embeddings fit one size) an image of another
    size is one error line rather than transformers' exception.
    """

    def __init__(self, model: nn.Module, *, name: str, input_size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.box_name = name
        self.input_size = input_size
        self.fixed_input_size = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.fixed_input_size and tuple(pixel_values.shape[-2:]) != self.input_size:
            (h, w), (got_h, got_w) = self.input_size, pixel_values.shape[-2:]
            raise RtsalError(
                f"black box {self.box_name!r} takes {h} x {w} images only, got {got_h} x "
                f"{got_w} (explain with --resize square; train without --image-size)"
            )
        return self.model(pixel_values=pixel_values, return_dict=True).logits


class HFFeatureClassifier(HFClassifier):
    """An :class:`HFClassifier` whose base model gives its last hidden state, offered as timm
    offers it: ``forward_features`` (patch tokens (B, N, D) of a transformer, a feature map
    (B, C, h, w) of a convolutional network) and ``num_prefix_tokens`` (class, distillation and
    register tokens before the patch tokens). rtsal's Grad-CAM reads both to find its layer."""

    num_prefix_tokens = 0

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return base_features(self.model, pixel_values)


def base_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The last hidden state of ``model``'s base model (``model.vit`` of a ViT classifier)."""
    base = model.base_model
    if base is model:
        raise RtsalError(f"{type(model).__name__} has no separate base model")
    return base(pixel_values=pixel_values, return_dict=True).last_hidden_state


def _patch_grid(config: Any, size: tuple[int, int]) -> int | None:
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, int) and patch > 0:
        patch = (patch, patch)
    if not (isinstance(patch, (list, tuple)) and len(patch) == 2 and all(patch)):
        return None
    return (size[0] // int(patch[0])) * (size[1] // int(patch[1]))


def with_features(network: HFClassifier, config: Any, channels: int) -> HFClassifier:
    """``network`` as an :class:`HFFeatureClassifier` when its base model gives a last hidden
    state of tokens or a feature map; as it is otherwise."""
    h, w = network.input_size
    try:
        with torch.no_grad():
            features = base_features(network.model, torch.zeros(1, channels, h, w))
    except Exception:
        return network
    if not isinstance(features, torch.Tensor) or features.dim() not in (3, 4):
        return network
    wrapped = HFFeatureClassifier(network.model, name=network.box_name, input_size=(h, w))
    wrapped.fixed_input_size = network.fixed_input_size
    grid = _patch_grid(config, (h, w))
    if features.dim() == 3 and grid is not None and 0 <= features.shape[1] - grid <= 16:
        wrapped.num_prefix_tokens = int(features.shape[1] - grid)
    return wrapped


def _takes_size(network: HFClassifier, channels: int, size: tuple[int, int]) -> torch.Tensor:
    with torch.no_grad():
        return network(torch.zeros(1, channels, *size))


def probe_fixed_input_size(network: HFClassifier, channels: int, num_classes: int) -> bool:
    """Check the network takes its input size and gives one logit per class; then whether it
    takes another size too (a convolutional network does, a ViT does not)."""
    h, w = network.input_size
    try:
        logits = _takes_size(network, channels, (h, w))
    except Exception as exc:
        raise RtsalError(
            f"{network.box_name}: the model does not take the {h} x {w} images its image "
            f"processor makes ({_first_line(exc)})"
        ) from None
    if tuple(logits.shape) != (1, num_classes):
        raise RtsalError(
            f"{network.box_name}: the model gives logits of shape {tuple(logits.shape)} for "
            f"{num_classes} labels in its config"
        )
    try:
        _takes_size(network, channels, (h + 32, w + 64))
    except Exception:
        return True
    return False


# --------------------------------------------------------------------------- loading


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """No progress bars, log lines or warnings from transformers while a model loads."""
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def _not_found(source: ModelSource, offline: bool, what: str, exc: BaseException) -> RtsalError:
    files = {"config": "config.json", "image processor": "preprocessor_config.json"}
    if source.local:
        writer = "model" if what == "config" else "image_processor"
        return RtsalError(
            f"{source.name}: the directory has no {what} ({files.get(what, what)}): write it "
            f"with {writer}.save_pretrained(DIR)"
        )
    if offline:
        subject = source.name if what == "config" else f"{source.name}: its {what}"
        matches = close_matches(source.path, cached_classifiers()) if what == "config" else []
        suggestion = "".join(f"; did you mean '{PREFIX}:{m}'?" for m in matches[:1])
        return WeightsUnavailableError(
            f"{subject} could not be found locally and the Hugging Face Hub cannot be reached: "
            f"offline use needs the model in the Hugging Face cache ({hub_cache()}) or a local "
            f"directory written by save_pretrained (hf:/path/to/dir){suggestion}"
        )
    return RtsalError(
        f"{source.name}: cannot load its {what} from the Hugging Face Hub ({_first_line(exc)})"
    )


def _read(source: ModelSource, offline: bool, what: str, load: Callable[[], T]) -> T:
    try:
        return load()
    except OSError as exc:
        raise _not_found(source, offline, what, exc) from None
    except (ValueError, KeyError) as exc:
        if type(exc).__name__ == "HFValidationError":  # neither a directory nor a model id
            raise RtsalError(
                f"{source.name}: no such directory, nor a Hugging Face model id "
                f"({_first_line(exc)})"
            ) from None
        raise RtsalError(
            f"{source.name}: transformers cannot read its {what} ({_first_line(exc)})"
        ) from None


def _random_model(auto: Any, config: Any) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return auto.from_config(config)


def _load_weights(model: nn.Module, weights: str, name: str) -> None:
    state = load_state_dict(weights)  # safetensors, or a torch file read without pickled code
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        raise CheckpointError(f"{weights} does not fit {name} ({_first_line(exc)})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit {name}: {len(missing)} tensors missing "
            f"({', '.join(missing[:3])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:3])})"
        )


def _build_model(
    transformers: Any,
    config: Any,
    source: ModelSource,
    hub: dict[str, Any],
    offline: bool,
    *,
    pretrained: bool,
    weights: str | None,
) -> nn.Module:
    auto = transformers.AutoModelForImageClassification
    if weights:
        model = _random_model(auto, config)
        _load_weights(model, str(weights), source.name)
        return model
    if not pretrained:
        return _random_model(auto, config)
    try:
        model, info = auto.from_pretrained(
            source.path, config=config, output_loading_info=True, **hub
        )
    except OSError as exc:
        if source.local:
            raise WeightsUnavailableError(
                f"{source.name}: the directory has no weights ({_first_line(exc)}): pass "
                "--no-pretrained for random weights, or --weights FILE"
            ) from None
        raise _not_found(source, offline, "weights", exc) from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise WeightsUnavailableError(
            f"{source.name}: its weights leave {len(missing)} tensors of "
            f"{type(model).__name__} untrained ({', '.join(missing[:3])}): it is not a trained "
            "image classifier (pass --no-pretrained for random weights)"
        )
    return model


def hf_black_box(
    spec: str, *, pretrained: bool = True, weights: str | None = None, **_: Any
) -> BlackBox:
    """The black box ``hf:SPEC``: SPEC is a directory written by ``save_pretrained`` or a Hub
    model id (read from the local cache when the Hub cannot be reached).

    ``pretrained=False`` builds the architecture of its config with random weights (the same
    ones every time); ``weights`` loads a state-dict file into that architecture instead.
    """
    source = ModelSource.parse(spec)
    if source.local and not (Path(source.path) / "config.json").is_file():
        raise _not_found(source, False, "config", FileNotFoundError(source.path))
    transformers = import_transformers()
    offline = not source.local and not hub_reachable()
    hub: dict[str, Any] = {}
    if not source.local:
        hub = {"cache_dir": str(hub_cache()), "local_files_only": offline}
    with quiet(transformers):
        read_config = partial(transformers.AutoConfig.from_pretrained, source.path, **hub)
        config = _read(source, offline, "config", read_config)
        if type(config) not in transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
            architectures = ", ".join(getattr(config, "architectures", None) or ()) or "none"
            raise RtsalError(
                f"{source.name} is not an image classifier: AutoModelForImageClassification "
                f"has no model for its config (model type {config.model_type!r}, "
                f"architectures: {architectures})"
            )
        auto_processor = transformers.AutoImageProcessor
        read_processor = partial(auto_processor.from_pretrained, source.path, **hub)
        processor = _read(source, offline, "image processor", read_processor)
        prep = read_preprocessing(processor, config, source.name)
        model = _build_model(
            transformers, config, source, hub, offline, pretrained=pretrained, weights=weights
        )
    names = class_names(config)
    channels = len(prep.mean)
    network = HFClassifier(model.float().eval(), name=source.name, input_size=prep.input_size)
    network.fixed_input_size = probe_fixed_input_size(network, channels, len(names))
    network = with_features(network, config, channels)
    box = BlackBox(
        network,
        name=source.name,
        class_names=names,
        mean=prep.mean,
        std=prep.std,
        input_size=prep.input_size,
        interpolation=prep.interpolation,
        crop_pct=prep.crop_pct,
        provider=PLUGIN_NAME,
        pretrained=bool(weights) or pretrained,
        source=str(weights) if weights else (source.path if pretrained else "random init"),
    )
    box.fixed_input_size = network.fixed_input_size  # resize images to input_size exactly
    synonyms = class_synonyms(names)
    if synonyms is not None:
        box.class_synonyms = synonyms
    return box


__all__ = [
    "HFClassifier",
    "HFFeatureClassifier",
    "Preprocessing",
    "class_names",
    "class_synonyms",
    "hf_black_box",
    "import_transformers",
    "probe_fixed_input_size",
    "read_preprocessing",
]
