"""Video: explain every frame and write the heat-map overlay video (PyAV)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rtsal.data.images import fit_size
from rtsal.errors import DataError, RtsalError
from rtsal.inference.explainer import Explainer
from rtsal.inference.pipeline import OrderedWrites, default_workers, read_ahead
from rtsal.inference.visualize import heatmap


def _open_av():
    try:
        import av
    except ImportError:
        raise RtsalError("video needs PyAV: pip install av") from None
    return av


_LEVELS = torch.linspace(0, 1, 256)
_HEAT_LUT = torch.from_numpy(heatmap(_LEVELS)).float()  # (256, 3) colour of each mask level


def overlay_frame(frame: np.ndarray, mask: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 frame and (H, W) mask in [0, 1] -> blended (H, W, 3) uint8.

    The same picture as :func:`rtsal.inference.visualize.overlay`, through look-up tables (fast
    enough for video).
    """
    level = (mask.clamp(0, 1) * 255).round().long()  # (H, W)
    heat = _HEAT_LUT[level]  # (H, W, 3)
    a = (alpha * _LEVELS.sqrt())[level].unsqueeze(-1)  # (H, W, 1)
    out = torch.from_numpy(frame).float() * (1 - a) + heat * a
    return out.clamp_(0, 255).to(torch.uint8).numpy()


class _OverlayWriter:
    """Blends each frame with its mask and encodes it (H.264, x264's "veryfast" preset)."""

    def __init__(self, av: Any, output: Any, rate: Any) -> None:
        self.av, self.output, self.rate = av, output, rate
        self.stream = None

    @torch.inference_mode()
    def write(self, rgb: np.ndarray, mask: torch.Tensor) -> None:  # (H, W, 3), (1, 1, h, w)
        H, W = rgb.shape[:2]
        if self.stream is None:
            self.stream = self.output.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = W - W % 2, H - H % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"preset": "veryfast"}
        full = F.interpolate(mask, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        blended = overlay_frame(rgb, full.clamp(0, 1))[: self.stream.height, : self.stream.width]
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(blended), format="rgb24")
        for packet in self.stream.encode(frame):
            self.output.mux(packet)

    def flush(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.output.mux(packet)


@torch.inference_mode()
def explain_video(
    explainer: Explainer,
    src: Path,
    dst: Path,
    *,
    classes: Sequence[int] | None = None,
    short_side: int | None = None,
    progress=None,
    max_frames: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write ``dst`` with the overlay of each frame's mask (top-1 class unless ``classes``).

    Returns frames, wall-clock frames/s (decode + explain + encode) and model-only frames/s.
    With ``workers`` > 0 decoding runs ahead in a thread and blending + encoding behind in
    another (one: frames are encoded in order); ``workers=0`` does all of it in turn, in this
    thread. By default the threads are used when the model runs on an accelerator or through
    ONNX Runtime (on a CPU they slow PyTorch down).
    """
    av = _open_av()
    if workers is None:
        workers = default_workers(explainer.device.type, explainer.backend_name)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    try:
        container = av.open(str(src))
    except Exception as exc:
        raise DataError(f"{src}: cannot open video ({type(exc).__name__})") from None
    if not container.streams.video:
        raise DataError(f"{src}: has no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or 25
    total = stream.frames or None
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        output = av.open(str(dst), mode="w")
    except Exception as exc:
        raise RtsalError(f"cannot write {dst}: {exc}") from None
    task = progress.add_task("video", total=total) if progress else None
    short = short_side or min(explainer.black_box.input_size)
    frames = 0
    model_seconds = 0.0
    t0 = time.perf_counter()
    cls = torch.tensor([classes[0]]) if classes else None
    W = H = 0

    def decoded() -> Iterator[np.ndarray]:
        for i, frame in enumerate(container.decode(stream)):
            if max_frames and i >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")  # (H, W, 3)

    writer = _OverlayWriter(av, output, rate)
    try:
        # decoding runs ahead in a thread, blending and encoding behind in another: the model's
        # work in this thread overlaps both (PyAV and torch release the GIL)
        with OrderedWrites(min(1, workers), bound=4, name="rtsal-video") as writes:
            for rgb in read_ahead(decoded(), workers, depth=4):
                H, W = rgb.shape[:2]
                h, w = fit_size(W, H, short)
                t1 = time.perf_counter()
                x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)[None]
                x = F.interpolate(
                    x, size=(h, w), mode="bilinear", align_corners=False, antialias=True
                )
                mask, _, _ = explainer.masks(x, cls)  # top-1 class when none is given
                model_seconds += time.perf_counter() - t1
                writes.submit(writer.write, rgb, mask.float().cpu())  # one thread: in order
                frames += 1
                if progress:
                    progress.update(task, advance=1)
        writer.flush()
    except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
        raise DataError(f"{src}: video decoding failed ({exc})") from None
    finally:
        output.close()
        container.close()
    seconds = time.perf_counter() - t0
    if frames == 0:
        raise DataError(f"{src}: no frames decoded")
    return {
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": frames / seconds,
        "model_fps": frames / model_seconds if model_seconds else float("nan"),
        "model_size": list(fit_size(W, H, short)),
    }
