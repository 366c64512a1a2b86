"""What the web demo's browser tests and ``bench/serve_fps.py`` share: a free port, a fake
camera clip for Chromium, and the page script that records the overlays the camera tab shows."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

# Run in the page: every new overlay image of the Camera tab (#live) is kept in
# window.overlays as [time in ms, its URL].
WATCH_OVERLAYS = """() => {
  window.overlays = [];
  const root = document.querySelector('#live');
  new MutationObserver(() => {
    const img = root.querySelector('img');
    if (img && img.src && (!window.overlays.length || img.src !== window.overlays.at(-1)[1]))
      window.overlays.push([performance.now(), img.src]);
  }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_camera_file(path: Path, frame: np.ndarray, frames: int = 30) -> None:
    """A Y4M clip for Chromium's fake camera: ``frame``, with a 4 x 4 patch in its bottom-right
    corner one shade brighter at each frame, so that no two frames (nor their overlays) are the
    same file, while the model sees the same photo."""
    import av

    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        for i in range(frames):
            shown = frame.copy()
            shown[-4:, -4:] = 8 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(shown, "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
