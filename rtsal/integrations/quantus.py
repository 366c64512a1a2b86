"""Quantus's ``explain_func`` for rtsal's methods (docs/api.md, "Quantus").

Quantus computes explanations as ``explain_func(model=model, inputs=x_batch, targets=y_batch,
**explain_func_kwargs)``, on the same ``x_batch`` it feeds ``model``. rtsal explains images in
[0, 1], and its black boxes normalise images themselves, so the convention here is: **the Quantus
model is an rtsal black box and ``x_batch`` holds images in [0, 1]** (B, C, H, W)::

    model = rtsal.create_black_box("efficientnet_lite0")  # the shipped masking model's
    x_batch, y_batch, s_batch = box_batch("photos/boxes.json", model)
    quantus.PointingGame()(model=model, x_batch=x_batch, y_batch=y_batch, s_batch=s_batch,
                           explain_func=rtsal.explain_func,
                           explain_func_kwargs={"method": "masker"})

Quantus's perturbations then act on real pixels (its ``"black"`` baseline is the image's
darkest value, not a normalised mean). Nothing here imports Quantus: attributions are NumPy
arrays in the layout Quantus's own ``quantus.explain`` gives, (B, 1, H, W).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtsal.errors import DataError, RtsalError

if TYPE_CHECKING:
    import torch

    from rtsal.inference.explainer import Explainer
    from rtsal.registry.blackbox import BlackBox

OPTIONS = ("checkpoint", "method_options", "device")  # explain_func's keyword options
CACHE_SIZE = 4  # explainers kept between calls (Quantus calls explain_func once per batch)

# (method, checkpoint, id(model), device, method options) -> (model, options, explainer); the
# model and options are held so that their ids stay theirs while the entry lives.
_cache: OrderedDict[tuple[Any, ...], tuple[Any, Any, Explainer]] = OrderedDict()


def explain_func(
    model: BlackBox | None,
    inputs: np.ndarray | torch.Tensor,
    targets: Any = None,
    method: str = "masker",
    **kwargs: Any,
) -> np.ndarray:
    """Attributions for Quantus: masks in [0, 1], a float32 NumPy array (B, 1, H, W).

    ``model``: the classifier Quantus evaluates, an :class:`rtsal.BlackBox` (it takes images in
    [0, 1] and normalises them itself): ``rtsal.create_black_box(name)``,
    ``Explainer(checkpoint).black_box``, or a network of your own wrapped as
    ``rtsal.BlackBox(network, name=..., class_names=..., mean=..., std=..., input_size=...)``;
    ``None`` is the checkpoint's black box. ``inputs``: (B, C, H, W) images in [0, 1], NumPy or
    torch, explained as they are, at their resolution. ``targets``: one class per image (NumPy
    integer array, list, tensor), one class for all (an ``int``), or ``None`` for each image's
    top-1 class; names and synsets work too.

    ``method``: ``"masker"``, the masking model (the shipped one, or ``checkpoint=`` a checkpoint
    directory trained for ``model``'s black box), or any method ``rtsal methods`` lists
    (``"gradcam"``, ``"gradient"``, ...) run on ``model``; ``method_options``: the method's own
    options; ``device``: where to run (default: ``model``'s device; Quantus passes its own
    ``device`` here). The explainer is built once per (method, checkpoint, model, device,
    options) and reused by later calls. Anything wrong raises :class:`~rtsal.errors.RtsalError`
    with one line.
    """
    unknown = sorted(set(kwargs) - set(OPTIONS))
    if unknown:
        raise RtsalError(
            f"explain_func: unknown option {unknown[0]!r}; rtsal takes method, "
            + ", ".join(OPTIONS)
        )
    explainer = explainer_for(model, method, **kwargs)
    masks = explainer.attribute(_as_tensor(inputs), _as_targets(targets))
    return masks.detach().cpu().numpy().astype(np.float32, copy=False)


def explainer_for(
    model: BlackBox | None = None,
    method: str = "masker",
    *,
    checkpoint: str | os.PathLike | None = None,
    method_options: dict[str, Any] | None = None,
    device: Any = None,
) -> Explainer:
    """The :class:`~rtsal.inference.explainer.Explainer` :func:`explain_func` uses for these
    arguments: built on first use, then taken from a cache of the last ``CACHE_SIZE``."""
    if not isinstance(method, str):
        raise RtsalError(
            "method must be a method's name ('masker', 'gradcam', ...); got "
            f"{type(method).__name__}"
        )
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise RtsalError(
            f"checkpoint must be a checkpoint directory (a str or a Path); got "
            f"{type(checkpoint).__name__}"
        )
    if method_options is not None and not isinstance(method_options, dict):
        raise RtsalError(
            f"method_options must be a dict of the method's options; got "
            f"{type(method_options).__name__}"
        )
    black_box = _black_box(model)
    where = _device(black_box, device)
    method = "masker" if method.lower() == "masker" else method
    path = None if checkpoint is None else str(Path(checkpoint).expanduser())
    key = (method.lower(), path, id(black_box), where, _options_key(method_options))
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached[2]
    from rtsal.inference.explainer import Explainer

    explainer = Explainer(
        path,
        black_box=black_box,
        device=where,
        method=method,
        method_options=method_options,
    )
    _cache[key] = (black_box, method_options, explainer)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return explainer


def clear_cache() -> None:
    """Let go of the explainers (and the models they hold) kept between calls."""
    _cache.clear()


def box_batch(
    path: str | os.PathLike, black_box: BlackBox, files: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantus's ``x_batch``, ``y_batch`` and ``s_batch`` for photos with ground-truth boxes.

    ``path``: a box file (a ``boxes.json`` in the form of ImageNet-val box sets, ``{file:
    {synset, boxes}}``, COCO, VOC or CSV, as ``rtsal metric --boxes`` reads) or a folder holding
    a ``boxes.json``; the photos are beside it. ``files``: which photos (default: all, sorted).
    Each photo is resized to ``black_box``'s input size with its filter; ``x_batch`` holds them
    in [0, 1], float32 (N, C, H, W); ``y_batch`` (N,) int64 is the class of each photo's first
    box; ``s_batch`` (N, 1, H, W) float32 is 1 inside that class's boxes (scaled with the
    photo), 0 elsewhere. A missing photo or box raises :class:`~rtsal.errors.DataError`.
    """
    from rtsal.boxes import resize_box
    from rtsal.data.annotations import annotation_entries, read_boxes
    from rtsal.data.images import load_image, pil_interpolation, pil_to_tensor
    from rtsal.registry.classes import ClassResolver

    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    annotations = read_boxes(path)
    names = sorted(annotations) if files is None else [str(f) for f in files]
    if not names:
        raise DataError(f"{path} lists no photos")
    h, w = black_box.input_size
    resolver = ClassResolver.for_black_box(black_box)
    interpolation = pil_interpolation(black_box.interpolation)
    mode = "L" if black_box.in_channels == 1 else "RGB"
    xs, ys, ss = [], [], []
    for name in names:
        entries = annotation_entries(annotations, name)
        if not entries:
            raise DataError(f"{path} has no boxes for {name}")
        im = load_image(folder / name, mode)
        cls = entries[0][0]
        s = np.zeros((1, h, w), np.float32)
        for c, box in entries:
            if c == cls:
                x0, y0, x1, y1 = resize_box(box, (im.height, im.width), (h, w))
                s[0, y0:y1, x0:x1] = 1.0
        xs.append(pil_to_tensor(im.resize((w, h), interpolation)).numpy())
        ys.append(resolver.resolve(cls))
        ss.append(s)
    return np.stack(xs), np.array(ys, dtype=np.int64), np.stack(ss)


def _black_box(model: Any) -> BlackBox | None:
    from rtsal.registry.blackbox import BlackBox

    if model is None or isinstance(model, BlackBox):
        return model
    raise RtsalError(
        f"model: rtsal explains an rtsal.BlackBox, which takes images in [0, 1] and normalises "
        f"them itself; got {type(model).__name__}: pass rtsal.create_black_box(name) or wrap "
        "your network as rtsal.BlackBox(network, name=..., class_names=..., mean=..., std=..., "
        "input_size=...), and give Quantus images in [0, 1]"
    )


def _device(black_box: BlackBox | None, device: Any) -> str:
    """The device asked for, else the black box's, else the CPU (as a name)."""
    if device is not None:
        from rtsal.device import resolve_device

        return str(resolve_device(str(device)))
    if black_box is not None:
        for t in (*black_box.parameters(), *black_box.buffers()):
            return str(t.device)
    return "cpu"


def _options_key(options: dict[str, Any] | None) -> Any:
    """The method options as a key: values by value when hashable, else by identity."""
    if options is None:
        return None

    def value(v: Any) -> Any:
        try:
            hash(v)
        except TypeError:
            return ("id", id(v))
        return v

    return tuple(sorted((str(k), value(v)) for k, v in options.items()))


def _as_tensor(inputs: Any) -> torch.Tensor:
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs
    if isinstance(inputs, np.ndarray):
        if inputs.dtype.kind not in "biuf":
            raise RtsalError(f"inputs: an array of images in [0, 1]; got dtype {inputs.dtype}")
        # Quantus's arrays may be read-only views: copy those rather than share them
        writeable = inputs.flags.writeable
        return torch.from_numpy(np.ascontiguousarray(inputs) if writeable else inputs.copy())
    raise RtsalError(
        "inputs must be a NumPy array or a torch tensor (B, C, H, W) of images in [0, 1]; got "
        f"{type(inputs).__name__}"
    )


def _as_targets(targets: Any) -> Any:
    """Quantus's ``y_batch`` as :meth:`Explainer.attribute` takes targets."""
    import torch

    if isinstance(targets, np.ndarray):
        flat = targets.reshape(-1)
        if flat.dtype.kind in "iu":
            return torch.from_numpy(flat.astype(np.int64))
        if flat.dtype.kind in "fb":  # refused by attribute, saying it wants integers
            return torch.from_numpy(flat.copy())
        return flat.tolist()  # names or synsets (anything else is refused one by one)
    return targets
