"""Explaining images: class-specific masks at each image's own resolution, with the numbers a
user wants beside them (probabilities on the image, on image x mask and on image x (1 - mask)).

The library's front door is :class:`Explainer` (``from rtsal import Explainer``; docs/api.md):
``Explainer()(images, target)`` gives masks at each image's resolution, and
``Explainer.attribute(inputs, target)`` follows Captum's conventions for a batch of inputs."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from rtsal.boxes import mask_box
from rtsal.data.images import fit_size, pil_interpolation, pil_to_tensor
from rtsal.engine.checkpoint import Checkpoint
from rtsal.errors import RtsalError
from rtsal.inference import DEFAULT_BATCH_SIZE
from rtsal.inference.inputs import (
    ImageLike,
    InputChecks,
    Target,
    height_width,
    resize_mode,
)
from rtsal.inference.memory import DEFAULT_CHUNK_SIZE, MemoryGuard
from rtsal.inference.memory import memory_limit as read_memory_limit
from rtsal.registry.classes import ClassResolver


@dataclass
class Explanation:
    """One image and one class.

    ``mask`` is the (H, W) mask at the image's original resolution. The explanations
    :meth:`Explainer.explain_batch` returns hold it at the model's resolution (h, w) until
    ``mask`` is first read, which brings it to the image's resolution (the same bilinear resize,
    the same numbers) and keeps it: results for many classes (``topk``) do not hold a
    full-resolution mask each unless asked for them.
    """

    class_index: int
    class_name: str
    mask: torch.Tensor  # (H, W) at the image's original resolution, in [0, 1]
    p_image: float  # f_c(X)
    p_preserved: float  # f_c(X * M)
    p_destroyed: float  # f_c(X * (1 - M))
    area: float  # mean of the mask
    box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1), pixels above 0.5, x1/y1 exclusive
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _AtModelSize:
    """A mask kept at the model's resolution, (1, 1, h, w), to be resized to ``size``."""

    mask: torch.Tensor
    size: tuple[int, int]

    def full(self) -> torch.Tensor:
        return mask_at_size(self.mask, self.size)[0, 0]


def _get_mask(self: Explanation) -> torch.Tensor:
    if isinstance(self._mask, _AtModelSize):
        self._mask = self._mask.full()  # kept: later reads cost nothing
    return self._mask


def _set_mask(self: Explanation, value: torch.Tensor | _AtModelSize) -> None:
    self._mask = value


# After the dataclass is made, so that ``mask`` stays an ordinary field of __init__, __eq__,
# __repr__ and dataclasses.replace, while a mask at model resolution is resized on first read.
Explanation.mask = property(_get_mask, _set_mask)  # type: ignore[assignment]


class Explainer:
    """A masking model (or any registered method) ready to explain images.

    ``resize="fit"`` keeps each image's aspect ratio (short side at the black box's input size);
    ``"square"`` resizes to the black box's input size exactly; ``"auto"`` (the default) is
    ``"square"`` for a black box that takes one input size only (a ViT), else ``"fit"``.
    Networks and inputs are kept in channels-last memory layout (same numbers, about twice as
    fast on CPUs); ``precision="bfloat16"`` runs the masking model under bf16 autocast (faster
    still where the CPU has bf16 units, at the cost of small differences in the masks). The
    masking model's decoder runs with its BatchNorms folded into the convolutions
    (``fuse=False`` to keep them).

    :meth:`explain_batch` and :meth:`iter_explanations` work through the (image, class) pairs
    ``chunk_size`` at a time (default ``DEFAULT_CHUNK_SIZE``: masks, the black box on image x mask
    and on image x (1 - mask), boxes), so their working memory does not grow with ``topk``. The
    results do not depend on the chunk size beyond float rounding (the kernels round differently
    at different batch sizes: about 1e-6). A call whose estimated memory is above
    ``memory_limit`` (bytes, or a size such as ``"12G"``; default ``RTSAL_MEMORY_LIMIT``, else
    8 GB; 0 turns the check off) is refused before any work, saying what to lower.

    ``Explainer()`` is the shipped model (EfficientNet-Lite0, ImageNet);
    ``Explainer(black_box="efficientnet_lite2")`` the model rtsal ships for that black box;
    :meth:`from_pretrained` loads a checkpoint directory. Calling the explainer gives masks at
    each image's own resolution; :meth:`attribute` follows Captum's conventions (docs/api.md).

    Which models (:func:`rtsal.registry.resolve.resolve_models`, what every command uses):
    ``black_box`` is a black box or a name (built as named, with ``weights``, a file, or
    ``pretrained=False``), or None for the checkpoint's own, which is built from registered
    providers only: a checkpoint that names code (``file.py:factory``) or files outside itself
    is refused unless ``trust_code=True``. A checkpoint is refused for a black box other than
    the one it was trained for (classes, preprocessing, network fingerprint) unless
    ``allow_other_black_box=True``. ``backend="auto"`` (the default) runs the masking model
    under ONNX Runtime when it is installed and the model exports (exported once per
    checkpoint, cached), else PyTorch; ``"pytorch"`` and ``"onnxruntime"`` choose one.
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | None = None,
        *,
        black_box: Any = None,
        device: str | torch.device = "auto",
        resize: str = "auto",
        method: str = "masker",
        method_options: dict[str, Any] | None = None,
        precision: str = "float32",
        fuse: bool = True,
        backend: str = "auto",
        chunk_size: int | None = None,
        memory_limit: int | str | None = None,
        weights: str | Path | None = None,
        pretrained: bool = True,
        trust_code: bool = False,
        allow_other_black_box: bool = False,
    ):
        from rtsal.device import resolve_device
        from rtsal.engine.checkpoint import load_masker
        from rtsal.engine.fusion import fold_batch_norms
        from rtsal.inference.backends import BACKENDS, MethodBackend, masker_backend
        from rtsal.registry.methods import create_method
        from rtsal.registry.resolve import resolve_models

        if backend not in BACKENDS:
            raise RtsalError(f"unknown backend {backend!r}: use auto, pytorch or onnxruntime")
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
        if resize not in ("auto", "fit", "square"):
            raise RtsalError("--resize must be auto, fit or square")
        if precision not in ("float32", "bfloat16"):
            raise RtsalError("--precision must be float32 or bfloat16")
        self.precision = precision
        if chunk_size is None:
            chunk_size = DEFAULT_CHUNK_SIZE
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise RtsalError(f"--chunk-size must be a whole number of at least 1; got {chunk_size}")
        self.chunk_size = chunk_size
        self.memory_limit = read_memory_limit(memory_limit)
        ckpt, box = resolve_models(
            checkpoint,
            black_box=black_box,
            method=method,
            weights=weights,
            pretrained=pretrained,
            trust_code=trust_code,
            allow_other_black_box=allow_other_black_box,
        )
        self.checkpoint: Path | None = None  # the masking model's checkpoint directory
        self.meta: dict[str, Any] = {}
        self.method_name = method
        if ckpt is not None:
            self.checkpoint, self.meta = ckpt.folder, ckpt.meta
            model, box, _ = load_masker(
                ckpt, box, device=self.device, allow_other_black_box=allow_other_black_box
            )
            model.to(memory_format=torch.channels_last)
            if backend != "pytorch":  # ONNX Runtime runs its own export of the unfolded model
                self.backend = masker_backend(
                    backend, ckpt.folder, model, box, device=self.device, precision=precision
                )
            if backend == "pytorch" or self.backend.name == "pytorch":
                from rtsal.inference.backends import TorchMasker

                self.backend = TorchMasker(
                    fold_batch_norms(model) if fuse else model, box, precision
                )
            self.black_box = box
        else:
            self.black_box = box.to(self.device)
            method_impl = create_method(method, self.black_box, **(method_options or {}))
            self.backend = MethodBackend(method_impl, method, self.black_box)
        self.black_box.to(memory_format=torch.channels_last)
        self.resize = resize_mode(resize, self.black_box)
        self.resolver = ClassResolver.for_black_box(self.black_box)
        self.checks = InputChecks(self.black_box, self.resolver)
        self.interp = pil_interpolation(self.black_box.interpolation)

    @property
    def model(self) -> Any:
        """The PyTorch masking model, when the masks come from one (else None)."""
        return self.backend.model

    @property
    def backend_name(self) -> str:
        """What computes the masks: ``pytorch`` or ``onnxruntime``."""
        return self.backend.name

    @classmethod
    def from_pretrained(cls, location: str | Path, **kwargs: Any) -> Explainer:
        """An explainer on a masking-model checkpoint: a directory (what ``rtsal train --out
        OUT`` writes: ``OUT``, and ``OUT/best`` when it validates; what :meth:`save_pretrained`
        writes), or a Hugging Face Hub repository, ``"ORG/NAME"`` or ``"hf:ORG/NAME[@REV]"``
        (downloaded once, then read from the local Hugging Face cache, also offline).
        ``kwargs`` are the constructor's (``device``, ``resize``, ``precision``, ``black_box``,
        ...). A missing or unreadable checkpoint raises :class:`~rtsal.errors.CheckpointError`
        naming it."""
        if not isinstance(location, (str, os.PathLike)):
            raise RtsalError(
                "from_pretrained takes a checkpoint directory or a Hub id (a str or a Path); got "
                f"{type(location).__name__} (Explainer() is the shipped model)"
            )
        if isinstance(location, str) and _looks_like_hub_repo(location):
            location = "hf:" + location
        return cls(location, **kwargs)

    def save_pretrained(self, out: str | Path, *, repo_id: str | None = None) -> Path:
        """Write this explainer's masking model to directory ``out``: the checkpoint's weights
        as stored (safetensors), ``rtsal.json`` (the model, its black box's id, classes and
        preprocessing) and a ``README.md`` model card for the Hugging Face Hub.
        :meth:`from_pretrained` reads it back, giving identical masks."""
        from rtsal.engine.hub import save_pretrained

        return save_pretrained(self._checkpoint_dir("save_pretrained"), out, repo_id=repo_id)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload rtsal masking model",
    ) -> str:
        """Upload this explainer's masking model (as :meth:`save_pretrained` writes it) to
        Hugging Face Hub repository ``repo_id`` ("ORG/NAME"), creating it if needed; returns the
        commit URL. Needs a connection and a token (``token``, or ``huggingface-cli login``)."""
        from rtsal.engine.hub import push_to_hub

        return push_to_hub(
            self._checkpoint_dir("push_to_hub"),
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
        )

    def _checkpoint_dir(self, what: str) -> Path:
        if self.checkpoint is None:
            raise RtsalError(
                f"{what} saves masking models; this explainer runs method {self.method_name!r}"
            )
        return self.checkpoint

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
        return self.backend.masks_for_images(self._input(x), classes)

    def select_classes(
        self, logits: torch.Tensor, classes: Sequence[int] | None, topk: int | None
    ) -> list[list[int]]:
        if classes:
            return [list(classes) for _ in range(logits.shape[0])]
        k = max(1, min(topk or 1, logits.shape[1]))
        return logits.topk(k, dim=1).indices.tolist()

    def classes_per_image(self, classes: Sequence[int] | None, topk: int | None) -> int:
        """How many classes each image is explained for; a ``topk`` above the black box's number
        of classes is refused (one line saying how many there are)."""
        if classes:
            return len(classes)
        n = self.black_box.num_classes
        if topk is not None and topk > n:
            raise RtsalError(
                f"--topk {topk} is more than the {n} classes of black box "
                f"{self.black_box.name!r}; ask for {n} at most"
            )
        return max(1, topk or 1)

    def memory_estimate(
        self,
        images: int,
        per_image: int,
        size: tuple[int, int],
        *,
        hold_masks: bool = False,
        records: int = 0,
    ) -> dict[str, int]:
        """Bytes a call needs, by what they are for (:meth:`MemoryGuard.estimate`)."""
        guard = MemoryGuard(self.chunk_size, self.memory_limit)
        return guard.estimate(images, per_image, size, hold_masks=hold_masks, records=records)

    def check_memory(
        self,
        estimate: dict[str, int],
        *,
        images: int,
        per_image: int,
        batch: int | None = None,
    ) -> None:
        """Refuse, in one line saying what to lower, a call whose estimate is above the limit
        (:meth:`MemoryGuard.check`)."""
        guard = MemoryGuard(self.chunk_size, self.memory_limit)
        guard.check(estimate, images=images, per_image=per_image, batch=batch)

    def target_classes(self, target: Target, n: int) -> torch.Tensor | None:
        """``target`` (see :meth:`__call__`) as ``n`` class indices, or ``None`` for each
        image's top-1 class."""
        return self.checks.target_classes(target, n)

    def largest_model_size(self) -> tuple[int, int]:
        """The largest model resolution an image can get (``fit`` caps the aspect ratio)."""
        if self.resize == "square":
            return self.black_box.input_size
        return self._model_size(1, 10**6)

    def explain_batch(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[int] | None = None,
        topk: int | None = None,
        with_probabilities: bool = True,
        prepared: Sequence[torch.Tensor] | None = None,
    ) -> list[list[Explanation]]:
        """Explain same-sized (at model resolution) images; one list of explanations per image.

        One encoder pass per image serves the prediction and every class explained; the
        (image, class) pairs are then explained ``chunk_size`` at a time. The masks are kept at
        model resolution and brought to each image's on first read of ``Explanation.mask``.
        ``prepared``: the images already passed through :meth:`prepare` (e.g. by a reader
        thread), in the same order.
        """
        results: list[list[Explanation]] = [[] for _ in images]
        for i, e in self._explanations(
            images, classes, topk, with_probabilities, prepared, hold_masks=True
        ):
            results[i].append(e)
        return results

    def iter_explanations(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[int] | None = None,
        topk: int | None = None,
        with_probabilities: bool = True,
        prepared: Sequence[torch.Tensor] | None = None,
    ) -> Iterator[tuple[int, Explanation]]:
        """:meth:`explain_batch` one explanation at a time: ``(image index, explanation)`` in
        the same order, each with its mask at the image's resolution. Nothing is kept once the
        caller moves on, so memory stays at one chunk of pairs however large ``topk`` is (what
        ``rtsal explain`` uses). Classes and memory are checked before this returns."""
        return self._explanations(
            images, classes, topk, with_probabilities, prepared, hold_masks=False
        )

    def _explanations(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[int] | None,
        topk: int | None,
        with_probabilities: bool,
        prepared: Sequence[torch.Tensor] | None,
        hold_masks: bool,
    ) -> Iterator[tuple[int, Explanation]]:
        per_image = self.classes_per_image(classes, topk)
        if prepared is None:
            prepared = [self.prepare(im) for im in images]
        if not len(prepared):
            return iter(())
        size = tuple(prepared[0].shape[-2:])
        estimate = self.memory_estimate(len(prepared), per_image, size, hold_masks=hold_masks)
        self.check_memory(estimate, images=len(prepared), per_image=per_image)
        return self._explain_in_chunks(
            images, prepared, classes, topk, with_probabilities, hold_masks
        )

    def _explain_in_chunks(
        self,
        images: Sequence[Image.Image],
        prepared: Sequence[torch.Tensor],
        classes: Sequence[int] | None,
        topk: int | None,
        with_probabilities: bool,
        hold_masks: bool,
    ) -> Iterator[tuple[int, Explanation]]:
        with torch.inference_mode():
            x = self._input(torch.stack(list(prepared)))  # (B, C, h, w)
            logits, state = self.backend.first_pass(x)
            chosen = self.select_classes(logits, classes, topk)
            img_idx = torch.tensor([i for i, cs in enumerate(chosen) for _ in cs], device=x.device)
            cb = torch.tensor([c for cs in chosen for c in cs], device=x.device)
        for start in range(0, len(cb), self.chunk_size):
            rows = slice(start, start + self.chunk_size)
            with torch.inference_mode():
                m, p_img, pk, pd = self._explain_chunk(
                    x, state, logits, img_idx[rows], cb[rows], with_probabilities
                )
            for r, (i, c) in enumerate(zip(img_idx[rows].tolist(), cb[rows].tolist(), strict=True)):
                scores = (float(p_img[r]), float(pk[r]), float(pd[r]))
                yield i, self._explanation(images[i], c, m[r : r + 1], scores, hold_masks)

    @torch.inference_mode()
    def _explanation(
        self,
        im: Image.Image,
        c: int,
        low: torch.Tensor,
        scores: tuple[float, float, float],
        hold_mask: bool,
    ) -> Explanation:
        """Image ``im`` and class ``c`` from its mask at model resolution (1, 1, h, w); the area
        and box come from the mask at the image's resolution, which is kept only if not
        ``hold_mask`` (then the one at model resolution is kept instead)."""
        size = (im.height, im.width)
        full = mask_at_size(low, size)[0, 0].cpu()
        return Explanation(
            class_index=c,
            class_name=self.black_box.class_names[c],
            mask=_AtModelSize(low.cpu().clone(), size) if hold_mask else full,
            p_image=scores[0],
            p_preserved=scores[1],
            p_destroyed=scores[2],
            area=float(full.mean()),
            box=mask_box(full),
        )

    def _explain_chunk(
        self,
        x: torch.Tensor,
        state: Any,
        logits: torch.Tensor,
        img_idx: torch.Tensor,
        cb: torch.Tensor,
        with_probabilities: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks (R, 1, h, w) at model resolution, f_c(X), f_c(X * M) and f_c(X * (1 - M)) (R,)
        for R (image, class) rows: row r is class ``cb[r]`` of image ``img_idx[r]``."""
        m = self.backend.masks(x, state, logits, img_idx, cb)
        xb = x[img_idx]  # one row per (image, class)

        def prob(lg: torch.Tensor) -> torch.Tensor:
            return lg.softmax(1).gather(1, cb[:, None]).squeeze(1)

        p_img = prob(logits[img_idx])
        if with_probabilities:
            pk, pd = prob(self.black_box(xb * m)), prob(self.black_box(xb * (1 - m)))
        else:
            pk = pd = torch.full_like(p_img, float("nan"))
        return m, p_img, pk, pd

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
            pictures = [self.checks.picture(im, f"images[{i}]") for i, im in enumerate(images)]
        elif isinstance(images, torch.Tensor):
            batch = self.checks.check_images(images, "images", dims=(3, 4))
            if batch.shape[0] == 0:
                return images.new_zeros((0, 1, *batch.shape[-2:]), dtype=torch.float32)
            pictures = list(batch)
        else:
            pictures = [self.checks.picture(images, "images")]
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
        x = self.checks.check_images(inputs, "inputs", dims=(4,))
        classes = self.target_classes(target, x.shape[0])
        if x.shape[0] == 0:
            return inputs.new_zeros((0, 1, *x.shape[-2:]), dtype=torch.float32)
        mask, _, _ = self.masks(x.detach().float(), classes)
        return _ordinary(mask.to(inputs.device, torch.float32))

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
            groups[self._model_size(*height_width(picture))].append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(pictures)
        for size, members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                x = torch.stack([self._at_model_size(pictures[i], size) for i in chunk])
                mask, _, _ = self.masks(x, None if classes is None else classes[chunk])
                for row, i in enumerate(chunk):
                    where = pictures[i].device if isinstance(pictures[i], torch.Tensor) else "cpu"
                    full = mask_at_size(mask[row : row + 1], height_width(pictures[i]))
                    out[i] = _ordinary(full[0].to(where))
        return out


def mask_at_size(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks (R, 1, h, w) -> (R, 1, H, W), bilinear and clamped to [0, 1]: how every mask is
    brought to its image's resolution."""
    return F.interpolate(mask.float(), size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _looks_like_hub_repo(location: str) -> bool:
    """``ORG/NAME`` that is not a path on this machine: a Hugging Face Hub repository."""
    import re

    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", location)) and not Path(location).exists()


def _ordinary(t: torch.Tensor) -> torch.Tensor:
    """A tensor made under ``inference_mode`` as an ordinary one (autograd may then use it)."""
    return t.clone() if t.is_inference() else t


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
