"""Exporting a masking model together with its encoder (and black box) to TorchScript and ONNX.

The exported graph takes images in [0, 1], shape (B, C, H, W), float32, and class ids (B,),
int64, exactly like :class:`rtsal.inference.explainer.Explainer`; the black box's mean/std
normalisation is inside the graph. It returns the mask (B, 1, H, W) in [0, 1] and the black
box's softmax probabilities (B, K). With an encoder shared with the black box, one backbone pass
gives both.
Batch, height and width are dynamic, of any size (the decoder resizes each upsampled map to its
skip connection's size; at multiples of the encoder's stride, 32 for EfficientNet-Lite, the
resize is the identity). A JSON side-car ``<file>.json`` describes the inputs, outputs and class
names.

ONNX Runtime inside rtsal runs a graph made for one *size class* instead (``static=True``): the
sizes that halve alike at every stride-2 layer (all multiples of 32 are one class). There the
"same" padding of TensorFlow-ported convolutions (EfficientNet-Lite) is a constant folded into
each convolution and the decoder resizes only where sizes differ, which spares ONNX Runtime a
layout change around every strided convolution (:mod:`rtsal.inference.size_classes`,
``docs/performance.md``).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from rtsal import __version__
from rtsal.engine.model import TOP1
from rtsal.errors import RtsalError, UnknownNameError
from rtsal.files import atomic_write_bytes, atomic_write_with
from rtsal.inference.size_classes import fold_pads, size_class, size_class_levels, static_shapes

FORMATS = ("torchscript", "onnx")
SUFFIXES = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
}
SIDECAR_FORMAT = "rtsal-exported-masker"
DEFAULT_OPSET = 17
OPSETS = range(12, 21)  # einsum needs 12; 20 is the TorchScript-based exporter's last
TOLERANCE = 1e-4  # max |mask difference| an export must stay within


class ExportError(RtsalError):
    """An export cannot be written, or the exported model disagrees with PyTorch."""


class ExportableMasker(nn.Module):
    """Masking model plus black box as one module: ``(images, classes) -> (mask, probs)``."""

    def __init__(self, model: nn.Module, black_box: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.black_box = black_box.eval()
        self.shared_encoder = bool(model.shared_encoder)
        self.meta: dict[str, Any] = {}
        self.source = ""
        self.train(False)

    def train(self, mode: bool = True) -> ExportableMasker:
        """Always evaluation mode: exporters restore the mode they found, which must not be
        training (batch statistics in the decoder)."""
        return super().train(False)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path | None = None, **models: Any
    ) -> ExportableMasker:
        """Load a masking-model checkpoint (default: the shipped model) on the CPU; ``models``
        as :func:`rtsal.registry.resolve.resolve_models` takes them (``black_box``,
        ``trust_code``, ...)."""
        from rtsal.engine.checkpoint import load_masker
        from rtsal.registry.resolve import resolve_models

        ckpt, box = resolve_models(checkpoint, **models)
        allow = bool(models.get("allow_other_black_box"))
        model, black_box, meta = load_masker(ckpt, box, device="cpu", allow_other_black_box=allow)
        wrapper = cls(model, black_box)
        wrapper.meta = meta
        wrapper.source = str(ckpt.folder)
        return wrapper

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.black_box.input_size)

    @property
    def channels(self) -> int:
        return int(self.black_box.in_channels)

    @property
    def size_multiple(self) -> int:
        return int(getattr(self.model.encoder, "coarsest_stride", 1))

    def explain(
        self, images: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, probabilities and the classes explained; class -1 (``TOP1``) asks for that
        image's top-1 class (one backbone pass either way)."""
        feats = self.model.encode_and_classify(images, self.black_box)
        mask, classes = self.model.masks_for_classes(feats, classes, images.shape[-2:])
        return mask, feats.logits.softmax(dim=1), classes

    def forward(
        self, images: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the exported graph computes: ``(images, classes) -> (mask, probabilities)``."""
        mask, probs, _ = self.explain(images, classes)
        return mask, probs

    def top1(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, probabilities and class for each image's top-1 class (one encoder pass)."""
        return self.explain(images, images.new_full(images.shape[:1], TOP1, dtype=torch.long))


@dataclass
class ExportCheck:
    """Largest differences between the exported model and PyTorch on the same inputs."""

    mask_diff: float
    prob_diff: float
    prob_sum_diff: float  # max |sum_k p_k - 1| of the exported model
    runs: int
    shapes: list[list[int]]


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    bytes: int
    check: ExportCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sidecar": str(self.sidecar),
            "format": self.format,
            "bytes": self.bytes,
            "check": asdict(self.check) if self.check is not None else None,
        }


# --------------------------------------------------------------------------- helpers


def resolve_format(fmt: str | None, out: str | Path) -> str:
    """The export format named, or the one the output's suffix implies."""
    if Path(out).expanduser().is_dir():
        raise ExportError(f"output path is a directory, expected a file name: {out}")
    if fmt is None:
        inferred = SUFFIXES.get(Path(out).suffix.lower())
        if inferred is None:
            raise ExportError(f"give --format ({' or '.join(FORMATS)}) for {Path(out).name}")
        return inferred
    if fmt.lower() not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS, hint="use torchscript or onnx")
    return fmt.lower()


def check_opset(opset: int) -> int:
    if opset not in OPSETS:
        raise ExportError(f"ONNX opset must be {OPSETS.start} to {OPSETS.stop - 1}, got {opset}")
    return opset


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def prepare_output(out: str | Path) -> Path:
    """Check the output file can be written (its folder is created) before any work starts."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise ExportError(f"output path is a directory, expected a file name: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".rtsal-write-test-"):
            pass
    except OSError as exc:
        raise ExportError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    return path


def _as_wrapper(ckpt: str | Path | ExportableMasker | None) -> ExportableMasker:
    return ckpt if isinstance(ckpt, ExportableMasker) else ExportableMasker.from_checkpoint(ckpt)


def _export_size(wrapper: ExportableMasker, size: int | Sequence[int] | None) -> tuple[int, int]:
    if size is None:
        h, w = wrapper.input_size
    elif isinstance(size, int):
        h = w = size
    elif len(size) in (1, 2):
        h, w = int(size[0]), int(size[-1])
    else:
        raise ExportError(f"export size is H,W or S, got {tuple(size)}")
    if h <= 0 or w <= 0:
        raise ExportError(f"export size must be positive, got {h}x{w}")
    return h, w


def example_inputs(wrapper: ExportableMasker, size: tuple[int, int], batch: int = 2):
    """Deterministic example images and classes for tracing."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, wrapper.channels, *size, generator=g)
    classes = torch.randint(0, int(wrapper.black_box.num_classes), (batch,), generator=g)
    return images, classes


def describe(
    wrapper: ExportableMasker, fmt: str, path: Path, size: tuple[int, int], **extra: Any
) -> dict[str, Any]:
    """The side-car: how to feed the exported model and what it returns."""
    box = wrapper.black_box
    m = wrapper.size_multiple
    return {
        "format": SIDECAR_FORMAT,
        "export_format": fmt,
        "file": path.name,
        "rtsal_version": __version__,
        "checkpoint": wrapper.source,
        "checkpoint_rtsal_version": wrapper.meta.get("rtsal_version", ""),
        "black_box": box.name,
        "input_size": list(box.input_size),
        "export_size": list(size),
        "channels": wrapper.channels,
        "size_multiple": m,
        "interpolation": box.interpolation,
        "inputs": {
            "images": f"float32 (B, {wrapper.channels}, H, W), values in [0, 1], any H and W "
            f"(multiples of {m} are what rtsal feeds); mean/std normalisation happens inside "
            "the model",
            "classes": "int64 (B,), the class to explain for each image",
        },
        "outputs": {
            "mask": "float32 (B, 1, H, W) in [0, 1], the saliency mask",
            "probabilities": f"float32 (B, {box.num_classes}), the black box's softmax",
        },
        "dynamic_axes": ["batch", "height", "width"],
        "mean": list(box.mean_values),
        "std": list(box.std_values),
        "shared_encoder": wrapper.shared_encoder,
        "num_classes": box.num_classes,
        "class_names": list(box.class_names),
        **extra,
    }


def _write_sidecar(path: Path, description: dict[str, Any]) -> Path:
    side = sidecar_path(path)
    atomic_write_bytes(side, (json.dumps(description, indent=2) + "\n").encode())
    return side


@contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about the Python branches it fixes (odd sizes only) and the legacy path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------- export


def _export(
    ckpt: str | Path | ExportableMasker | None,
    out_path: str | Path,
    fmt: str,
    write: Callable[[ExportableMasker, Path, tuple[int, int]], None],
    check_fn: Callable[..., ExportCheck],
    size: int | Sequence[int] | None,
    check: bool,
    tolerance: float,
    extra: dict[str, Any],
) -> ExportResult:
    path = prepare_output(out_path)
    wrapper = _as_wrapper(ckpt)
    hw = _export_size(wrapper, size)
    result: dict[str, ExportCheck] = {}

    def write_and_check(tmp: Path) -> None:
        write(wrapper, tmp, hw)
        if check:
            res = check_fn(wrapper, tmp)
            if not res.mask_diff <= tolerance:
                raise ExportError(
                    f"exported {fmt} model disagrees with PyTorch: max |Δmask| = "
                    f"{res.mask_diff:.3g} > {tolerance:g}; nothing written"
                )
            result["check"] = res

    atomic_write_with(path, write_and_check)
    side = _write_sidecar(path, describe(wrapper, fmt, path, hw, **extra))
    return ExportResult(path, side, fmt, path.stat().st_size, result.get("check"))


def _trace(wrapper: ExportableMasker, tmp: Path, size: tuple[int, int]) -> None:
    images, classes = example_inputs(wrapper, size)
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(wrapper, (images, classes), check_trace=False)
            torch.jit.save(traced, str(tmp))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ExportError(f"TorchScript export failed: {_first_line(exc)}") from None


def export_torchscript(
    ckpt: str | Path | ExportableMasker | None,
    out_path: str | Path,
    size: int | Sequence[int] | None = None,
    *,
    check: bool = False,
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Trace the model at ``size`` (default: the black box's input size) and save it.

    With ``check``, the saved file is loaded back and compared with PyTorch before it replaces
    ``out_path``; a larger mask difference than ``tolerance`` raises :class:`ExportError`.
    """
    return _export(
        ckpt, out_path, "torchscript", _trace, check_torchscript, size, check, tolerance, {}
    )


def export_onnx(
    ckpt: str | Path | ExportableMasker | None,
    out_path: str | Path,
    size: int | Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    check: bool = False,
    tolerance: float = TOLERANCE,
    static: bool = False,
) -> ExportResult:
    """Export to ONNX with dynamic batch, height and width (traced at ``size``).

    With ``static``, the graph serves the size class of ``size`` only (:func:`size_class`: the
    sizes that halve alike at every stride-2 layer), with constant padding folded into the
    convolutions: what rtsal's ONNX Runtime back end runs. With ``check``, ONNX Runtime runs the
    file on real photos and is compared with PyTorch before it replaces ``out_path``; a larger
    mask difference than ``tolerance`` raises.
    """
    check_opset(opset)

    def write(wrapper: ExportableMasker, tmp: Path, hw: tuple[int, int]) -> None:
        images, classes = example_inputs(wrapper, hw)
        spatial = {0: "batch", 2: "height", 3: "width"}
        try:
            with _quiet(), torch.no_grad(), static_shapes(wrapper, hw) if static else nullcontext():
                torch.onnx.export(
                    wrapper,
                    (images, classes),
                    str(tmp),
                    dynamo=False,  # the TorchScript-based exporter needs no onnxscript
                    opset_version=opset,
                    input_names=["images", "classes"],
                    output_names=["mask", "probabilities"],
                    dynamic_axes={
                        "images": spatial,
                        "classes": {0: "batch"},
                        "mask": spatial,
                        "probabilities": {0: "batch"},
                    },
                )
        except ImportError as exc:
            raise ExportError(
                f"ONNX export needs {exc.name or 'onnx'} (pip install onnx)"
            ) from None
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ExportError(f"ONNX export (opset {opset}) failed: {_first_line(exc)}") from None
        if static:
            fold_pads(tmp)

    extra: dict[str, Any] = {"opset": opset}
    check_fn: Callable[..., ExportCheck] = check_onnx
    if static:
        ckpt = _as_wrapper(ckpt)
        hw = _export_size(ckpt, size)
        extra["size_class"] = size_class(*hw, levels=size_class_levels(ckpt))
        check_fn = partial(check_onnx, size=hw)  # the photos at this size only
    return _export(ckpt, out_path, "onnx", write, check_fn, size, check, tolerance, extra)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- checks


def sample_photos() -> list[Image.Image]:
    """Real photos from scikit-image: astronaut, coffee, chelsea (RGB)."""
    from skimage import data

    return [Image.fromarray(f()) for f in (data.astronaut, data.coffee, data.chelsea)]


def _to_tensor(
    im: Image.Image | np.ndarray, size: tuple[int, int], wrapper: ExportableMasker
) -> torch.Tensor:
    from rtsal.data.images import pil_interpolation, pil_to_tensor

    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    im = im.convert("L" if wrapper.channels == 1 else "RGB")
    interp = pil_interpolation(wrapper.black_box.interpolation)
    return pil_to_tensor(im.resize((size[1], size[0]), interp))


def check_inputs(
    wrapper: ExportableMasker,
    images: Sequence[Image.Image | np.ndarray] | None = None,
    size: tuple[int, int] | None = None,
) -> list[torch.Tensor]:
    """Batches to compare on: all photos at the black box's input size, then each photo of
    another aspect alone at its own aspect-keeping size (so batch, height and width all vary);
    with ``size``, all photos and the first alone, at that size."""
    from rtsal.data.images import fit_size

    photos = list(images) if images is not None else sample_photos()
    if not photos:
        raise ExportError("no images to check the export on")
    if size is not None:
        batch = torch.stack([_to_tensor(im, size, wrapper) for im in photos])
        return [batch, batch[:1]]
    size = wrapper.input_size
    batches = [torch.stack([_to_tensor(im, size, wrapper) for im in photos])]
    if getattr(wrapper.black_box, "fixed_input_size", False):  # a ViT takes its size only
        return batches
    m = wrapper.size_multiple
    for im in photos:
        w, h = (im.width, im.height) if isinstance(im, Image.Image) else im.shape[1::-1]
        fit = fit_size(w, h, min(size), multiple=m)
        if fit != size:
            batches.append(_to_tensor(im, fit, wrapper)[None])
    return batches


def _compare(
    wrapper: ExportableMasker,
    run: Callable[[torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray]],
    images: Sequence[Image.Image | np.ndarray] | None,
    size: tuple[int, int] | None = None,
) -> ExportCheck:
    mask_diff = prob_diff = sum_diff = 0.0
    shapes = []
    for x in check_inputs(wrapper, images, size):
        with torch.inference_mode():
            mask, probs, classes = wrapper.top1(x)  # as `rtsal explain` does
        m, p = run(x, classes)
        mask_diff = max(mask_diff, float(np.abs(m - mask.numpy()).max()))
        prob_diff = max(prob_diff, float(np.abs(p - probs.numpy()).max()))
        sum_diff = max(sum_diff, float(np.abs(p.astype(np.float64).sum(axis=1) - 1).max()))
        shapes.append(list(x.shape))
    return ExportCheck(mask_diff, prob_diff, sum_diff, len(shapes), shapes)


def check_onnx(
    ckpt: str | Path | ExportableMasker | None,
    onnx_path: str | Path,
    images: Sequence[Image.Image | np.ndarray] | None = None,
    size: tuple[int, int] | None = None,
) -> ExportCheck:
    """Run the ONNX file under ONNX Runtime (CPU) and the PyTorch model on the same real photos
    (default: scikit-image's; with ``size``, at that size only); returns the largest mask and
    probability differences."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            "checking an ONNX export needs ONNX Runtime (pip install onnxruntime); "
            "or skip the check (--no-check)"
        ) from None

    wrapper = _as_wrapper(ckpt)
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(
            f"{onnx_path}: ONNX Runtime cannot load it ({_first_line(exc)})"
        ) from None

    def run(x: torch.Tensor, classes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        mask, probs = session.run(None, {"images": x.numpy(), "classes": classes.numpy()})
        return mask, probs

    return _compare(wrapper, run, images, size)


def check_torchscript(
    ckpt: str | Path | ExportableMasker | None,
    path: str | Path,
    images: Sequence[Image.Image | np.ndarray] | None = None,
) -> ExportCheck:
    """Load the TorchScript file back and compare it with the PyTorch model on real photos."""
    wrapper = _as_wrapper(ckpt)
    try:
        with _quiet():
            loaded = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"{path}: cannot load it back ({_first_line(exc)})") from None

    def run(x: torch.Tensor, classes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            mask, probs = loaded(x, classes)
        return mask.numpy(), probs.numpy()

    return _compare(wrapper, run, images)


__all__ = [
    "FORMATS",
    "ExportCheck",
    "ExportError",
    "ExportResult",
    "ExportableMasker",
    "check_onnx",
    "check_torchscript",
    "export_onnx",
    "export_torchscript",
    "resolve_format",
    "sample_photos",
    "sidecar_path",
]
