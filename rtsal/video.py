"""Video: explain every frame and write the heat-map overlay video (PyAV)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rtsal.errors import DataError, RtsalError
from rtsal.explain import Explainer, fit_size
from rtsal.visualize import heatmap


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

    The same picture as :func:`rtsal.visualize.overlay`, through look-up tables (fast enough for
    video).
    """
    level = (mask.clamp(0, 1) * 255).round().long()  # (H, W)
    heat = _HEAT_LUT[level]  # (H, W, 3)
    a = (alpha * _LEVELS.sqrt())[level].unsqueeze(-1)  # (H, W, 1)
    out = torch.from_numpy(frame).float() * (1 - a) + heat * a
    return out.clamp_(0, 255).to(torch.uint8).numpy()


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
) -> dict[str, Any]:
    """Write ``dst`` with the overlay of each frame's mask (top-1 class unless ``classes``).

    Returns frames, wall-clock frames/s (decode + explain + encode) and model-only frames/s.
    """
    av = _open_av()
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
    out_stream = None
    task = progress.add_task("video", total=total) if progress else None
    short = short_side or min(explainer.black_box.input_size)
    frames = 0
    model_seconds = 0.0
    t0 = time.perf_counter()
    cls = torch.tensor([classes[0]]) if classes else None
    try:
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            H, W = rgb.shape[:2]
            if out_stream is None:
                out_stream = output.add_stream("libx264", rate=rate)
                out_stream.width, out_stream.height = W - W % 2, H - H % 2
                out_stream.pix_fmt = "yuv420p"
            h, w = fit_size(W, H, short)
            t1 = time.perf_counter()
            x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)[None]
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            mask, _, _ = explainer.masks(x, cls)  # top-1 class when none is given
            model_seconds += time.perf_counter() - t1
            full = F.interpolate(
                mask.float().cpu(), size=(H, W), mode="bilinear", align_corners=False
            )[0, 0].clamp(0, 1)
            blended = overlay_frame(rgb, full)[: out_stream.height, : out_stream.width]
            for packet in out_stream.encode(av.VideoFrame.from_ndarray(blended, format="rgb24")):
                output.mux(packet)
            frames += 1
            if progress:
                progress.update(task, advance=1)
            if max_frames and frames >= max_frames:
                break
        if out_stream is not None:
            for packet in out_stream.encode():
                output.mux(packet)
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
