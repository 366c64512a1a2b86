"""Explaining images: class-specific masks at each image's own resolution, with the numbers a
user wants beside them (probabilities on the image, on image x mask and on image x (1 - mask))."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from rtsal.data.images import fit_size, pil_to_tensor
from rtsal.engine.checkpoint import default_checkpoint
from rtsal.engine.model import TOP1
from rtsal.errors import RtsalError
from rtsal.metrics.boxes import threshold_box
from rtsal.registry.classes import ClassResolver
from rtsal.registry.methods import check_method_output


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

    # ---------------------------------------------------------------- preprocessing
    def model_size(self, im: Image.Image) -> tuple[int, int]:
        h, w = self.black_box.input_size
        if self.resize == "square":
            return h, w
        return fit_size(im.width, im.height, min(h, w))

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
            full = (
                F.interpolate(
                    m[row : row + 1].float(),
                    size=(im.height, im.width),
                    mode="bilinear",
                    align_corners=False,
                )[0, 0]
                .clamp(0, 1)
                .cpu()
            )
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
