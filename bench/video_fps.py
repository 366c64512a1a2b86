"""Frames per second that `rtsal explain clip.mp4` sustains, by model resolution.

Makes a 640x480, 25 fps test clip that pans and zooms across scikit-image's photographs, explains
every frame with the shipped masking model (top-1 class per frame) and writes the overlay video.
Reports wall-clock fps (decode + explain + encode) and model-only fps for each short side.

    python bench/video_fps.py --frames 100 --sizes 224,160,128,96 --out runs/bench-video
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_clip(path: Path, frames: int, size=(640, 480), fps: int = 25) -> None:
    import av
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    per = max(1, frames // len(photos))
    for i in range(frames):
        photo = Image.fromarray(photos[min(i // per, len(photos) - 1)])
        t = (i % per) / per
        zoom = 1.0 + 0.3 * t  # slow zoom and pan
        w, h = photo.width / zoom, photo.height / zoom
        x0 = (photo.width - w) * t
        crop = photo.crop((int(x0), 0, int(x0 + w), int(h))).resize(size, Image.BILINEAR)
        frame = np.ascontiguousarray(np.asarray(crop.convert("RGB")))
        for packet in stream.encode(__import__("av").VideoFrame.from_ndarray(frame, "rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--sizes", default="224,160,128,96")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--precision", default="float32", help="float32 or bfloat16")
    ap.add_argument("--backends", default="pytorch", help="comma-separated: pytorch,onnxruntime")
    ap.add_argument(
        "--workers", default="1", help="comma-separated: 1 = decode/encode in threads, 0 = in turn"
    )
    ap.add_argument("--out", default="runs/bench-video")
    args = ap.parse_args()
    from rtsal.allocator import keep_freed_memory

    keep_freed_memory()  # as the rtsal command does

    from rtsal.inference.explainer import Explainer
    from rtsal.inference.video import explain_video

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "clip.mp4"
    make_clip(clip, args.frames)
    explainers = {
        b: Explainer(args.checkpoint, precision=args.precision, backend=b)
        for b in args.backends.split(",")
    }
    rows = []
    for s in (int(v) for v in args.sizes.split(",")):
        for b, explainer in explainers.items():  # back to back at each size
            explain_video(explainer, clip, out / "warmup.mp4", short_side=s, max_frames=5)
            for w in (int(v) for v in args.workers.split(",")):
                t0 = time.perf_counter()
                stats = explain_video(
                    explainer, clip, out / f"overlay-{s}-{b}-w{w}.mp4", short_side=s, workers=w
                )
                stats["wall"] = time.perf_counter() - t0
                rows.append({"short_side": s, "backend": b, "workers": w, **stats})
                print(
                    f"{s:4d} px ({stats['model_size'][1]}x{stats['model_size'][0]}), {b}, "
                    f"workers {w}: {stats['fps']:.1f} fps end to end, "
                    f"{stats['model_fps']:.1f} fps model only",
                    flush=True,
                )
    result = {
        "command": "python bench/video_fps.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "machine": {
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "clip": {"frames": args.frames, "size": [640, 480]},
        "rows": rows,
    }
    (out / "video_fps.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
