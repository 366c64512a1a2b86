"""What computes the masks behind :class:`rtsal.Explainer`: one small class per back end, one
interface.

- :class:`TorchMasker`: the masking model in PyTorch (decoder BatchNorms folded, optional bf16);
- :class:`OnnxMasker`: the same model exported once per checkpoint and run by ONNX Runtime
  (about half the CPU time a frame at batch 1, ``docs/performance.md``);
- :class:`MethodBackend`: any registered method (gradient, Grad-CAM, ...) on the black box.

Each back end answers two questions. :meth:`~MaskBackend.first_pass` runs the images once and
gives the black box's logits (B, K) and whatever the back end keeps for the masks (the encoder's
features, or the top-1 masks ONNX Runtime computed in the same run); :meth:`~MaskBackend.masks`
gives the masks (R, 1, h, w) for R (image, class) rows from that pass. ``--backend auto`` (the
default) is ONNX Runtime for the masking model when it is installed and the model exports, and
PyTorch otherwise (:func:`masker_backend`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtsal import __version__
from rtsal.engine.model import TOP1
from rtsal.errors import RtsalError
from rtsal.registry.methods import check_method_output

BACKENDS = ("auto", "pytorch", "onnxruntime")
# Bumped when what the exporter writes changes, so that cached exports are made anew.
# 2: the decoder resizes to its skip connections' sizes (any input size); 3: one graph per size
# class, padding folded into the convolutions
EXPORT_REVISION = 3


def _log_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (B, K) standing in for logits: same argmax, same softmax."""
    return probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()


class MaskBackend:
    """The interface: ``first_pass`` once per batch of images, then ``masks`` per chunk of
    (image, class) rows; ``masks_for_images`` does both for one class per image."""

    name = ""
    model: Any = None  # the PyTorch masking model, where there is one

    def first_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Logits (B, K) of images ``x`` (B, C, h, w) and what ``masks`` needs of the pass."""
        raise NotImplementedError

    def masks(
        self,
        x: torch.Tensor,
        state: Any,
        logits: torch.Tensor,
        img_idx: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        """Masks (R, 1, h, w) in [0, 1] for rows (image ``img_idx[r]``, class ``classes[r]``)."""
        raise NotImplementedError

    def masks_for_images(
        self, x: torch.Tensor, classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks (B, 1, h, w), logits (B, K) and the classes explained (B,): one class per
        image, each image's top-1 for ``classes=None``."""
        logits, state = self.first_pass(x)
        chosen = logits.argmax(1) if classes is None else classes.to(x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.masks(x, state, logits, rows, chosen), logits, chosen


class TorchMasker(MaskBackend):
    """The masking model in PyTorch: one encoder pass gives the prediction and the features
    every class's mask is decoded from."""

    name = "pytorch"

    def __init__(self, model: Any, black_box: Any, precision: str = "float32"):
        self.model = model
        self.black_box = black_box
        self.precision = precision

    def _autocast(self, device: torch.device):
        return torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"
        )

    def first_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        with self._autocast(x.device):
            feats = self.model.encode_and_classify(x, self.black_box)
        return feats.logits.float(), feats

    def masks(self, x, state, logits, img_idx, classes) -> torch.Tensor:
        with self._autocast(x.device):
            m, _ = self.model.masks_for_classes(state, classes, x.shape[-2:], image_index=img_idx)
        return m.float()

    def masks_for_images(self, x, classes):
        wanted = x.new_full(x.shape[:1], TOP1, dtype=torch.long) if classes is None else classes
        with self._autocast(x.device):
            feats = self.model.encode_and_classify(x, self.black_box)
            mask, chosen = self.model.masks_for_classes(feats, wanted.to(x.device), x.shape[-2:])
        return mask.float(), feats.logits.float(), chosen


class MethodBackend(MaskBackend):
    """Any registered explanation method: images and classes in, masks in [0, 1] out."""

    name = "pytorch"

    def __init__(self, method: Any, method_name: str, black_box: Any):
        self.method = method
        self.method_name = method_name
        self.black_box = black_box

    def first_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return self.black_box(x), None

    def masks(self, x, state, logits, img_idx, classes) -> torch.Tensor:
        xb = x[img_idx]
        return check_method_output(
            self.method.explain(xb, classes), xb.shape[0], xb.shape[-2:], self.method_name
        )


# --------------------------------------------------------------------------- ONNX Runtime


def cached_export_path(checkpoint: Path, cache: Path | None = None, size: str = "") -> Path:
    """Where the ONNX file of ``checkpoint`` is kept: keyed by the checkpoint's bytes and the
    versions of rtsal and torch, so a changed checkpoint or exporter gets a new file; ``size``
    names the size class of a graph made for one (``rtsal.inference.size_classes``)."""
    from rtsal.data.cache import cache_dir
    from rtsal.engine.checkpoint import META_NAME

    meta = checkpoint / META_NAME
    if not meta.is_file():
        raise RtsalError(f"{checkpoint}: not a masking-model checkpoint (no {META_NAME})")
    digest = hashlib.sha256(f"{__version__} {torch.__version__} {EXPORT_REVISION}".encode())
    for f in sorted(p for p in checkpoint.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    name = f"masker-{digest.hexdigest()[:20]}{'-' + size if size else ''}.onnx"
    return (cache or cache_dir() / "onnx") / name


SPLIT_MIN_IMAGES = 4  # a batch is split across one-thread sessions from 2 × this many images


class _Graph:
    """One exported graph (one size class) and its sessions: the main one, and one-thread
    sessions for slices of large batches, made when first needed."""

    def __init__(self, path: Path, session: Any):
        self.path = path
        self.session = session
        self.split: tuple[Any, list[Any]] | None = None  # (thread pool, one-thread sessions)


class OnnxMasker(MaskBackend):
    """The masking model (with its encoder, and the black box's probabilities from the same
    backbone pass) under ONNX Runtime, exported once per checkpoint and size class into the
    cache folder and checked against PyTorch before it is kept; a cached file ONNX Runtime
    cannot load is made anew once, never trusted. ``(images, classes) -> (mask,
    probabilities)``; class -1 = top-1.

    Each graph serves one size class (the sizes that halve alike at every stride-2 layer: all
    multiples of 32 are one), so "same" padding and the decoder's resizes are constants in it
    (``rtsal.inference.size_classes``). The black box's input size is exported when the
    back end is made; another class the first time an image of it comes."""

    name = "onnxruntime"

    def __init__(
        self,
        checkpoint: Path,
        black_box: Any,
        *,
        exportable: Any = None,
        threads: int | None = None,
        cache: Path | None = None,
        announce: bool = False,
    ):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise RtsalError(
                "--backend onnxruntime needs ONNX Runtime: pip install onnxruntime"
            ) from None
        self.black_box = black_box
        self.checkpoint = Path(checkpoint)
        self.threads = threads or torch.get_num_threads()
        self._exportable = exportable
        self._cache = cache
        self._announce = announce
        self._graphs: dict[str, _Graph] = {}
        self._levels: int | None = None  # halvings that tell size classes apart
        main = self._graph(*black_box.input_size)
        self.path, self.session = main.path, main.session

    def _graph(self, height: int, width: int) -> _Graph:
        """The graph for images of this size (exported and checked the first time)."""
        from rtsal.inference.size_classes import size_class, size_class_levels

        if self._levels is None:
            self._levels = size_class_levels(self._exportable_model())
        key = size_class(height, width, self._levels)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = self._load(key, (height, width))
        return graph

    def _load(self, key: str, size: tuple[int, int]) -> _Graph:
        import onnxruntime as ort

        path = cached_export_path(self.checkpoint, self._cache, key)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # no busy-waiting between runs: decoding, drawing and encoding need the cores meanwhile
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for attempt in (1, 2):
            if not path.is_file():
                self._export(path, size)
            try:
                session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
                return _Graph(path, session)
            except Exception as exc:  # a damaged cache file: made anew once
                path.unlink(missing_ok=True)
                if attempt == 2:
                    raise RtsalError(
                        f"{path}: ONNX Runtime cannot load the exported model "
                        f"({type(exc).__name__}: {str(exc)[:160]})"
                    ) from None
        raise AssertionError("unreachable")

    def _export(self, path: Path, size: tuple[int, int]) -> None:
        from rtsal.inference.export import export_onnx

        if self._announce:
            print(
                f"note: exporting the masking model to ONNX Runtime once for "
                f"{size[0]}x{size[1]} images (cached in {path.parent})",
                file=sys.stderr,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # refused if it disagrees with PyTorch; written to a temporary file, then renamed
        export_onnx(self._exportable_model(), path, size=size, check=True, static=True)

    def _exportable_model(self) -> Any:
        """The model to export (loaded from the checkpoint once if none was given)."""
        if self._exportable is None:
            from rtsal.inference.export import ExportableMasker

            self._exportable = ExportableMasker.from_checkpoint(self.checkpoint)
        return self._exportable

    def __call__(
        self, images: torch.Tensor, classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) in [0, 1]; classes (B,) or None for each image's top-1 ->
        mask (B, 1, H, W), probabilities (B, K)."""
        x = images.detach().float().cpu().contiguous().numpy()
        if classes is None:
            c = np.full((x.shape[0],), TOP1, dtype=np.int64)
        else:
            c = classes.detach().cpu().long().reshape(-1).numpy()
        parts = min(self.threads, x.shape[0] // SPLIT_MIN_IMAGES)
        if parts < 2:
            graph = self._graph(*x.shape[-2:])
            mask, probs = graph.session.run(["mask", "probabilities"], {"images": x, "classes": c})
        else:
            mask, probs = self._run_split(x, c, parts)
        return torch.from_numpy(mask), torch.from_numpy(probs)

    def _run_split(self, x: np.ndarray, c: np.ndarray, parts: int) -> tuple[Any, Any]:
        """A large batch in ``parts`` slices, each on a one-thread session of its own, at once:
        ONNX Runtime's threads share one operator at a time, and EfficientNet's many small
        operators leave them waiting; slices keep every core busy (Lite0, batch 32, 2 cores:
        about 1.25× one two-thread session, ``docs/performance.md``)."""
        import onnxruntime as ort

        graph = self._graph(*x.shape[-2:])
        if graph.split is None or len(graph.split[1]) < parts:
            from concurrent.futures import ThreadPoolExecutor

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            sessions = [
                ort.InferenceSession(str(graph.path), options, providers=["CPUExecutionProvider"])
                for _ in range(parts)
            ]
            if graph.split is not None:
                graph.split[0].shutdown(wait=False)
            graph.split = (ThreadPoolExecutor(parts, "rtsal-onnx"), sessions)
        pool, sessions = graph.split
        bounds = np.linspace(0, x.shape[0], parts + 1).astype(int)
        futures = [
            pool.submit(
                sessions[i].run,
                ["mask", "probabilities"],
                {"images": x[lo:hi], "classes": c[lo:hi]},
            )
            for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
        results = [f.result() for f in futures]
        return (np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]))

    def first_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        top1_masks, probs = self(x, None)  # one run: each image's top-1 mask and probabilities
        return _log_probabilities(probs), top1_masks

    def masks(self, x, state, logits, img_idx, classes) -> torch.Tensor:
        if bool((logits.argmax(1)[img_idx] == classes).all()):
            return state[img_idx]
        m, _ = self(x[img_idx], classes)
        return m

    def masks_for_images(self, x, classes):
        mask, probs = self(x, classes)
        logits = _log_probabilities(probs)
        chosen = logits.argmax(1) if classes is None else classes.to(x.device)
        return mask, logits, chosen


def onnx_runtime_usable() -> str | None:
    """Why ONNX Runtime cannot run here (one line), or None when it can."""
    try:
        import onnxruntime  # noqa: F401
    except Exception as exc:  # missing, or broken (a failing native library)
        return f"ONNX Runtime is not usable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def masker_backend(
    kind: str,
    checkpoint: Path,
    model: Any,
    black_box: Any,
    *,
    device: torch.device,
    precision: str = "float32",
) -> MaskBackend:
    """The back end for a masking model: ``pytorch``, ``onnxruntime``, or ``auto`` — ONNX
    Runtime on the CPU in float32 when it is installed and the model exports (one line says
    why not, and PyTorch runs instead), PyTorch elsewhere (CUDA, MPS, bf16).
    ``RTSAL_BACKEND`` sets what ``auto`` means (``pytorch`` or ``onnxruntime``)."""
    if kind == "pytorch":
        return TorchMasker(model, black_box, precision)
    if kind == "onnxruntime":
        return OnnxMasker(checkpoint, black_box, exportable=_exportable(model, black_box))
    preferred = os.environ.get("RTSAL_BACKEND", "").strip().lower()
    if preferred in ("pytorch", "onnxruntime"):
        return masker_backend(
            preferred, checkpoint, model, black_box, device=device, precision=precision
        )
    if device.type != "cpu" or precision != "float32":
        return TorchMasker(model, black_box, precision)
    why = onnx_runtime_usable()
    if why is None:
        try:
            return OnnxMasker(
                checkpoint, black_box, exportable=_exportable(model, black_box), announce=True
            )
        except RtsalError as exc:
            why = str(exc)
        except Exception as exc:  # a network the exporter cannot trace: PyTorch runs it
            why = f"the masking model does not export ({type(exc).__name__}: {str(exc)[:160]})"
    print(f"note: --backend auto runs PyTorch: {why}", file=sys.stderr)
    return TorchMasker(model, black_box, precision)


def _exportable(model: Any, black_box: Any) -> Any:
    """The loaded masking model wrapped for export (no second load of the checkpoint)."""
    from rtsal.inference.export import ExportableMasker

    return ExportableMasker(model, black_box)


__all__ = [
    "BACKENDS",
    "MaskBackend",
    "MethodBackend",
    "OnnxMasker",
    "TorchMasker",
    "cached_export_path",
    "masker_backend",
    "onnx_runtime_usable",
]
