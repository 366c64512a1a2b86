"""What the web demo's tests and benchmarks (``bench/serve_fps.py``, ``bench/serve_load.py``)
share: a server started on a free port, a fake camera clip for Chromium, and the page script that
records the overlays the camera tab shows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

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


def start_server(
    logs: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    name: str = "serve",
    timeout: float = 300,
) -> tuple[subprocess.Popen, str]:
    """``rtsal serve --port PORT ARGS`` in a process of its own, once its page answers: the
    process and its URL. Its output goes to ``logs/NAME.stdout`` and ``logs/NAME.stderr``;
    Ctrl-C (SIGINT) stops it even where this process ignores SIGINT."""
    from tests.helpers import ctrl_c_stops

    port = free_port()
    out, err = logs / f"{name}.stdout", logs / f"{name}.stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtsal", "serve", "--port", str(port), *args],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            cwd=REPO,
            preexec_fn=ctrl_c_stops,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = err.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"rtsal serve exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"rtsal serve did not answer in {timeout:.0f} s")
        time.sleep(0.5)


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
