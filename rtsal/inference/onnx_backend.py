"""Running the masking model under ONNX Runtime: the model (with its encoder and the black box's
probabilities from the same backbone pass) is exported once per checkpoint, checked against
PyTorch, kept in the cache folder and loaded from there afterwards.

On a CPU this halves the latency of a single image (``docs/performance.md``), which is what a
video needs: ``rtsal explain clip.mp4 --backend onnxruntime``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from rtsal import __version__
from rtsal.engine.model import TOP1
from rtsal.errors import RtsalError


def cached_export_path(checkpoint: Path, cache: Path | None = None) -> Path:
    """Where the ONNX file of ``checkpoint`` is kept: keyed by the checkpoint's bytes and the
    versions of rtsal and torch, so a changed checkpoint or exporter gets a new file."""
    from rtsal.data.cache import cache_dir
    from rtsal.engine.checkpoint import META_NAME

    meta = checkpoint / META_NAME
    if not meta.is_file():
        raise RtsalError(f"{checkpoint}: not a masking-model checkpoint (no {META_NAME})")
    digest = hashlib.sha256(f"{__version__} {torch.__version__}".encode())
    for f in sorted(p for p in checkpoint.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return (cache or cache_dir() / "onnx") / f"masker-{digest.hexdigest()[:20]}.onnx"


class OnnxMasker:
    """``(images, classes) -> (mask, probabilities)`` under ONNX Runtime; class -1 = top-1."""

    def __init__(self, checkpoint: Path, *, threads: int | None = None, cache: Path | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RtsalError(
                "--backend onnxruntime needs ONNX Runtime: pip install 'rtsal[export]'"
            ) from None
        from rtsal.inference.export import export_onnx

        self.path = cached_export_path(Path(checkpoint), cache)
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(checkpoint, self.path, check=True)  # refused if it disagrees with torch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # no busy-waiting between runs: decoding, drawing and encoding need the cores meanwhile
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a damaged cache file: export again once
            self.path.unlink(missing_ok=True)
            raise RtsalError(
                f"{self.path}: ONNX Runtime cannot load the cached export "
                f"({type(exc).__name__}); it was removed, run again to export anew"
            ) from None

    def __call__(
        self, images: torch.Tensor, classes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) in [0, 1] (H, W multiples of the encoder's stride); classes (B,)
        or None for each image's top-1 -> mask (B, 1, H, W), probabilities (B, K)."""
        x = images.detach().float().cpu().contiguous().numpy()
        if classes is None:
            c = np.full((x.shape[0],), TOP1, dtype=np.int64)
        else:
            c = classes.detach().cpu().long().reshape(-1).numpy()
        mask, probs = self.session.run(["mask", "probabilities"], {"images": x, "classes": c})
        return torch.from_numpy(mask), torch.from_numpy(probs)


__all__ = ["OnnxMasker", "cached_export_path"]
