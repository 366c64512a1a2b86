"""Explaining images: class-specific masks at each image's own resolution, with the numbers a
user wants beside them (probabilities on the image, on image x mask and on image x (1 - mask)).

The library's front door is :class:`Explainer` (``from rtsal import Explainer``; docs/api.md):
``Explainer()(images, target)`` gives masks at each image's resolution, and
``Explainer.attribute(inputs, target)`` follows Captum's conventions for a batch of inputs."""

from __future__ import annotations

import operator
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from rtsal.data.images import _to_rgb, fit_size, load_image, pil_to_tensor
from rtsal.engine.checkpoint import default_checkpoint
from rtsal.engine.model import TOP1
from rtsal.errors import RtsalError
from rtsal.inference import DEFAULT_BATCH_SIZE
from rtsal.metrics.boxes import threshold_box
from rtsal.registry.classes import ClassResolver
from rtsal.registry.methods import check_method_output

ImageLike = Image.Image | str | Path | torch.Tensor  # one image (a tensor: one or a batch)
Target = int | str | Sequence[int | str] | torch.Tensor | None  # None: each image's top-1

# Tensors are images in [0, 1]; values well outside (normalised or 0-255 images) are refused,
# while the small overshoot of a bicubic resize is let through.
_RANGE_SLACK = 0.25


@dataclass
class Explanation:
    """One image and one class."""

    class_index: int
    class_name: str
    mask: torch.Tensor  # (H, W) at the image's original resolution, in [0, 1]
    p_image: float  # f_c(X)
    p_preserved: float  # f_c(X * M)
    p_destroyed: float  # f_c(X * (1 - M))
    area: float  # mean of the mask
    box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1), pixels above 0.5, x1/y1 exclusive
    extra: dict[str, Any] = field(default_factory=dict)


class Explainer:
    """A masking model (or any registered method) ready to explain images.

    ``resize="fit"`` keeps each image's aspect ratio (short side at the black box's input size);
    ``"square"`` resizes to the black box's input size exactly. Networks and inputs are kept in
    channels-last memory layout (same numbers, about twice as fast on CPUs);
    ``precision="bfloat16"`` runs the masking model under bf16 autocast (faster still where the
    CPU has bf16 units, at the cost of small differences in the masks). The masking model's
    decoder runs with its BatchNorms folded into the convolutions (``fuse=False`` to keep them).

    ``Explainer()`` is the shipped model (EfficientNet-Lite0, ImageNet);
    :meth:`from_pretrained` loads a checkpoint directory. Calling the explainer gives masks at
    each image's own resolution; :meth:`attribute` follows Captum's conventions (docs/api.md).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        black_box: Any = None,
        device: str | torch.device = "auto",
        resize: str = "fit",
        method: str = "masker",
        method_options: dict[str, Any] | None = None,
        precision: str = "float32",
        fuse: bool = True,
        backend: str = "pytorch",
    ):
        from rtsal.device import resolve_device
        from rtsal.engine.checkpoint import load_masker
        from rtsal.inference.fusion import fold_batch_norms
        from rtsal.registry.methods import create_method

        if backend not in ("pytorch", "onnxruntime"):
            raise RtsalError(f"unknown backend {backend!r}: use pytorch or onnxruntime")
        if backend == "onnxruntime":
            if method != "masker":
                raise RtsalError(
                    "--backend onnxruntime runs the masking model only (--method masker)"
                )
            if precision != "float32":
                raise RtsalError("--backend onnxruntime runs in float32 only")
            if str(device) not in ("auto", "cpu"):
                raise RtsalError("--backend onnxruntime runs on the CPU; drop --device")
            device = "cpu"
        self.device = resolve_device(device) if isinstance(device, str) else device
        if resize not in ("fit", "square"):
            raise RtsalError("--resize must be fit or square")
        self.resize = resize
        if precision not in ("float32", "bfloat16"):
            raise RtsalError("--precision must be float32 or bfloat16")
        self.precision = precision
        self.model = None
        self.onnx = None
        if method == "masker":
            path = checkpoint if checkpoint is not None else default_checkpoint()
            self.model, self.black_box, self.meta = load_masker(path, black_box, device=self.device)
            if fuse and backend == "pytorch":  # ONNX Runtime runs its own export
                self.model = fold_batch_norms(self.model)
            self.method = None
            if backend == "onnxruntime":
                from rtsal.inference.onnx_backend import OnnxMasker

                self.onnx = OnnxMasker(Path(path))
        else:
            if black_box is None:  # the black box of the (shipped) checkpoint
                from rtsal.engine.checkpoint import checkpoint_black_box, read_meta

                meta, where = read_meta(
                    checkpoint if checkpoint is not None else default_checkpoint()
                )
                black_box = checkpoint_black_box(meta, where)
            self.black_box = black_box.to(self.device)
            self.meta = {}
            self.method = create_method(method, self.black_box, **(method_options or {}))
            self.method_name = method
        self.black_box.to(memory_format=torch.channels_last)
        if self.model is not None:
            self.model.to(memory_format=torch.channels_last)
        self.resolver = ClassResolver.for_black_box(self.black_box)
        self.interp = {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST}.get(
            self.black_box.interpolation, Image.BILINEAR
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> Explainer:
        """An explainer on the masking-model checkpoint in directory ``path``: what ``rtsal
        train --out OUT`` writes (``OUT``, and ``OUT/best`` when it validates) and
        :func:`rtsal.engine.checkpoint.save_masker` writes. ``kwargs`` are the constructor's
        (``device``, ``resize``, ``precision``, ``black_box``, ...). A missing or unreadable
        checkpoint raises :class:`~rtsal.errors.CheckpointError` naming the path."""
        if not isinstance(path, (str, os.PathLike)):
            raise RtsalError(
                "from_pretrained takes a checkpoint directory (a str or a Path); got "
                f"{type(path).__name__} (Explainer() is the shipped model)"
            )
        return cls(path, **kwargs)

    # ---------------------------------------------------------------- preprocessing
    def model_size(self, im: Image.Image) -> tuple[int, int]:
        return self._model_size(im.height, im.width)

    def _model_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = self.black_box.input_size
        if self.resize == "square":
            return h, w
        return fit_size(width, height, min(h, w))

    def prepare(self, im: Image.Image) -> torch.Tensor:
        """PIL image -> (C, h, w) in [0, 1] at the model's resolution."""
        h, w = self.model_size(im)
        if self.black_box.in_channels == 1:
            im = im.convert("L")
        return pil_to_tensor(im.resize((w, h), self.interp))

    # ---------------------------------------------------------------- masks
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=torch.channels_last)

    def _autocast(self):
        return torch.autocast(
            self.device.type,
            dtype=torch.bfloat16,
            enabled=self.precision == "bfloat16" and self.model is not None,
        )

    @property
    def shared_encoder(self) -> bool:
        return self.model is not None and self.model.shared_encoder

    @torch.inference_mode()
    def masks(
        self, x: torch.Tensor, classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks (B, 1, h, w), black-box logits (B, K) and the classes explained (B,).

        ``classes=None`` explains each image's top-1 class; with an encoder shared with the black
        box, one backbone pass gives both the prediction and the mask.
        """
        x = self._input(x)
        if self.onnx is not None:
            mask, probs = self.onnx(x, classes)
            logits = _log_probabilities(probs)
            classes = logits.argmax(1) if classes is None else classes.to(self.device)
            return mask, logits, classes
        if self.model is not None:
            wanted = x.new_full(x.shape[:1], TOP1, dtype=torch.long) if classes is None else classes
            with self._autocast():
                feats = self.model.encode_and_classify(x, self.black_box)
                mask, classes = self.model.masks_for_classes(
                    feats, wanted.to(self.device), x.shape[-2:]
                )
            return mask.float(), feats.logits.float(), classes
        logits = self.black_box(x)
        classes = logits.argmax(1) if classes is None else classes.to(self.device)
        masks = check_method_output(
            self.method.explain(x, classes), x.shape[0], x.shape[-2:], self.method_name
        )
        return masks, logits, classes

    def select_classes(
        self, logits: torch.Tensor, classes: Sequence[int] | None, topk: int | None
    ) -> list[list[int]]:
        if classes:
            return [list(classes) for _ in range(logits.shape[0])]
        k = max(1, min(topk or 1, logits.shape[1]))
        return logits.topk(k, dim=1).indices.tolist()

    @torch.inference_mode()
    def explain_batch(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[int] | None = None,
        topk: int | None = None,
        with_probabilities: bool = True,
        prepared: Sequence[torch.Tensor] | None = None,
    ) -> list[list[Explanation]]:
        """Explain same-sized (at model resolution) images; one list of explanations per image.

        One encoder pass per image serves the prediction and every class explained.
        ``prepared``: the images already passed through :meth:`prepare` (e.g. by a reader
        thread), in the same order.
        """
        if prepared is None:
            prepared = [self.prepare(im) for im in images]
        x = self._input(torch.stack(list(prepared)))  # (B, C, h, w)
        feats = None
        top1_masks = None
        if self.onnx is not None:  # one run gives each image's top-1 mask and the probabilities
            top1_masks, probs = self.onnx(x, None)
            logits = _log_probabilities(probs)
        elif self.model is not None:
            with self._autocast():
                feats = self.model.encode_and_classify(x, self.black_box)
            logits = feats.logits.float()
        else:
            logits = self.black_box(x)
        chosen = self.select_classes(logits, classes, topk)
        img_idx = torch.tensor([i for i, cs in enumerate(chosen) for _ in cs], device=x.device)
        cb = torch.tensor([c for cs in chosen for c in cs], device=x.device)
        xb = x[img_idx]  # one row per (image, class)
        if top1_masks is not None:
            top1 = logits.argmax(1)
            if bool((top1[img_idx] == cb).all()):
                m = top1_masks[img_idx]
            else:
                m, _ = self.onnx(xb, cb)
        elif feats is not None:  # the encoder's features repeated once per class
            with self._autocast():
                m, _ = self.model.masks_for_classes(feats, cb, x.shape[-2:], image_index=img_idx)
            m = m.float()
        else:
            m = check_method_output(
                self.method.explain(xb, cb), xb.shape[0], xb.shape[-2:], self.method_name
            )

        def prob(lg: torch.Tensor) -> torch.Tensor:
            return lg.softmax(1).gather(1, cb[:, None]).squeeze(1)

        p_img = prob(logits[img_idx])
        if with_probabilities:
            pk, pd = prob(self.black_box(xb * m)), prob(self.black_box(xb * (1 - m)))
        else:
            pk = pd = torch.full_like(p_img, float("nan"))
        results: list[list[Explanation]] = [[] for _ in images]
        for row, (i, c) in enumerate(zip(img_idx.tolist(), cb.tolist(), strict=True)):
            im = images[i]
            full = mask_at_size(m[row : row + 1], (im.height, im.width))[0, 0].cpu()
            results[i].append(
                Explanation(
                    class_index=c,
                    class_name=self.black_box.class_names[c],
                    mask=full,
                    p_image=float(p_img[row]),
                    p_preserved=float(pk[row]),
                    p_destroyed=float(pd[row]),
                    area=float(full.mean()),
                    box=threshold_box(full),
                )
            )
        return results

    # ---------------------------------------------------------------- the library API
    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike],
        target: Target = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Masks in [0, 1] for ``images``, each at its image's own resolution.

        ``images``: a PIL image, an image file's path, or a float tensor in [0, 1], (C, H, W)
        or (B, C, H, W): the masks come back as one tensor (B, 1, H, W), B = 1 for one image.
        A list (or tuple) of single images, which may differ in size, gives a list of (1, H, W)
        tensors, one per image. Either way ``result[i]`` is image i's mask, (1, H, W).

        ``target``: ``None`` explains each image's top-1 class; a class index, name or synset
        (``281``, ``"tabby"``, ``"n02123045"``) applies to every image; a list gives one class
        per image; an integer tensor holds one class for every image or one per image.

        Each image is resized for the model as ``resize`` says (as ``rtsal explain`` does),
        explained in one pass (``batch_size`` images at a time) and its mask resized back
        bilinearly. Masks of files and PIL images are on the CPU, those of tensors on the
        tensor's device. Bad inputs and unknown classes raise :class:`~rtsal.errors.RtsalError`.
        """
        if batch_size < 1:
            raise RtsalError(f"batch_size must be at least 1; got {batch_size}")
        if isinstance(images, (list, tuple)):
            pictures = [self._picture(im, f"images[{i}]") for i, im in enumerate(images)]
        elif isinstance(images, torch.Tensor):
            batch = self._check_images(images, "images", dims=(3, 4))
            if batch.shape[0] == 0:
                return images.new_zeros((0, 1, *batch.shape[-2:]), dtype=torch.float32)
            pictures = list(batch)
        else:
            pictures = [self._picture(images, "images")]
        classes = self.target_classes(target, len(pictures))
        masks = self._masks_at_own_size(pictures, classes, batch_size)
        return masks if isinstance(images, (list, tuple)) else torch.stack(masks)

    def attribute(
        self, inputs: torch.Tensor | tuple[torch.Tensor], target: Target = None
    ) -> torch.Tensor | tuple[torch.Tensor]:
        """Captum's conventions: ``inputs`` (B, C, H, W) are what the black box takes, float
        images in [0, 1] (the black box normalises them itself), explained as they are, without
        resizing; ``target`` is a class index for every image, a list with one per image, or an
        integer tensor (one element, or one per image); ``None`` explains each image's top-1
        class (class names work too). Returns the masks (B, 1, H, W) in [0, 1], float32, on
        the inputs' device; a one-tensor tuple ``(inputs,)``, as Captum's metrics pass, gives
        ``(masks,)``. A wrong shape raises :class:`~rtsal.errors.RtsalError`."""
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise RtsalError(
                    f"inputs: a tuple holds one tensor (B, C, H, W) here; got {len(inputs)}"
                )
            return (self.attribute(inputs[0], target),)
        x = self._check_images(inputs, "inputs", dims=(4,))
        classes = self.target_classes(target, x.shape[0])
        if x.shape[0] == 0:
            return inputs.new_zeros((0, 1, *x.shape[-2:]), dtype=torch.float32)
        mask, _, _ = self.masks(x.detach().float(), classes)
        return _ordinary(mask.to(inputs.device, torch.float32))

    def target_classes(self, target: Target, n: int) -> torch.Tensor | None:
        """``target`` (see :meth:`__call__`) as ``n`` class indices, or ``None`` for each
        image's top-1 class."""
        if target is None:
            return None
        if isinstance(target, torch.Tensor):
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise RtsalError(
                    f"target: a tensor of class indices must be integer; got {target.dtype}"
                )
            wanted = [self._class_index(t) for t in target.detach().reshape(-1).tolist()]
            if len(wanted) == 1:
                wanted *= n
        elif isinstance(target, (list, tuple)):
            wanted = [self._class_index(t) for t in target]
        else:
            wanted = [self._class_index(target)] * n
        if len(wanted) != n:
            raise RtsalError(
                f"target: {len(wanted)} classes for {n} images; give one class for all of them, "
                "or one per image"
            )
        return torch.tensor(wanted, dtype=torch.long)

    def _class_index(self, selector: Any) -> int:
        if isinstance(selector, str):
            return self.resolver.resolve(selector)
        try:
            index = None if isinstance(selector, bool) else operator.index(selector)
        except TypeError:
            index = None
        if index is None:
            raise RtsalError(f"target: a class is an index, a name or a synset; got {selector!r}")
        return self.resolver.resolve(index)

    def _picture(self, item: Any, name: str) -> Image.Image | torch.Tensor:
        """One image given to :meth:`__call__`: an RGB PIL image, or a checked (C, H, W)."""
        if isinstance(item, Image.Image):
            return _to_rgb(item)  # prepare() makes it grey for a one-channel black box
        if isinstance(item, (str, os.PathLike)):
            return load_image(item)  # a missing or broken file: DataError naming it
        if isinstance(item, torch.Tensor):
            return self._check_images(item, name, dims=(3,))[0]
        hint = (
            " (an (H, W, C) array: Image.fromarray(array), or a tensor via torch.from_numpy)"
            if type(item).__module__ == "numpy"
            else ""
        )
        raise RtsalError(
            f"{name}: an image is a PIL image, a file path or a float tensor (C, H, W); got "
            f"{type(item).__name__}{hint}"
        )

    def _check_images(self, x: Any, name: str, dims: tuple[int, ...]) -> torch.Tensor:
        """``x`` as (B, C, H, W), or an RtsalError saying what is wrong with it."""
        c = self.black_box.in_channels
        shape = " or ".join({3: "(C, H, W)", 4: "(B, C, H, W)"}[d] for d in dims)
        if not isinstance(x, torch.Tensor):
            raise RtsalError(f"{name} must be a tensor {shape}; got {type(x).__name__}")
        if x.dim() not in dims or x.shape[-3] != c or min(x.shape[-2:]) < 1:
            raise RtsalError(
                f"{name} must have shape {shape} with C = {c} for black box "
                f"{self.black_box.name!r}; got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise RtsalError(
                f"{name} must be a float tensor in [0, 1]; got {x.dtype} (divide 8-bit images "
                "by 255)"
            )
        if x.numel():
            lo, hi = float(x.min()), float(x.max())
            if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
                raise RtsalError(
                    f"{name} must hold images in [0, 1] (the black box normalises them itself); "
                    f"got values from {lo:.3g} to {hi:.3g}"
                )
        return x if x.dim() == 4 else x[None]

    def _at_model_size(self, picture: Image.Image | torch.Tensor, size: tuple[int, int]):
        """(C, h, w) in [0, 1] at the model's resolution ``size``, on the explainer's device."""
        if isinstance(picture, Image.Image):
            return self.prepare(picture).to(self.device)
        x = picture.detach().to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != size:  # as prepare() resizes a PIL image: its filter
            mode = {"bicubic": "bicubic", "nearest": "nearest"}.get(
                self.black_box.interpolation, "bilinear"
            )
            smooth = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            x = F.interpolate(x[None], size=size, mode=mode, **smooth)[0].clamp(0, 1)
        return x

    def _masks_at_own_size(
        self,
        pictures: list[Image.Image | torch.Tensor],
        classes: torch.Tensor | None,
        batch_size: int,
    ) -> list[torch.Tensor]:
        """One (1, H, W) mask per picture; pictures of one model resolution share passes."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, picture in enumerate(pictures):
            groups[self._model_size(*_height_width(picture))].append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(pictures)
        for size, members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                x = torch.stack([self._at_model_size(pictures[i], size) for i in chunk])
                mask, _, _ = self.masks(x, None if classes is None else classes[chunk])
                for row, i in enumerate(chunk):
                    where = pictures[i].device if isinstance(pictures[i], torch.Tensor) else "cpu"
                    full = mask_at_size(mask[row : row + 1], _height_width(pictures[i]))
                    out[i] = _ordinary(full[0].to(where))
        return out


def mask_at_size(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks (R, 1, h, w) -> (R, 1, H, W), bilinear and clamped to [0, 1]: how every mask is
    brought to its image's resolution."""
    return F.interpolate(mask.float(), size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _height_width(picture: Image.Image | torch.Tensor) -> tuple[int, int]:
    if isinstance(picture, Image.Image):
        return picture.height, picture.width
    return int(picture.shape[-2]), int(picture.shape[-1])


def _ordinary(t: torch.Tensor) -> torch.Tensor:
    """A tensor made under ``inference_mode`` as an ordinary one (autograd may then use it)."""
    return t.clone() if t.is_inference() else t


def _log_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (B, K) standing in for logits: same argmax, same softmax."""
    return probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()


def batched_by_size(
    items: Iterable[tuple[Any, Image.Image]], explainer: Explainer, batch_size: int
) -> Iterator[list[tuple[Any, Image.Image]]]:
    """Group consecutive images that share a model resolution into batches."""
    batch: list[tuple[Any, Image.Image]] = []
    size = None
    for key, im in items:
        s = explainer.model_size(im)
        if batch and (s != size or len(batch) >= batch_size):
            yield batch
            batch = []
        batch.append((key, im))
        size = s
    if batch:
        yield batch


def slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    return out or "class"
