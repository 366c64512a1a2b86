"""Serving the demo: check the address and Gradio's presence (before torch, Gradio or the model
is imported, so a mistyped port is answered at once), load the model, serve the page."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

from rtsal.errors import RtsalError
from rtsal.serve._gradio import check_gradio

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port out of range or one that something already listens on."""
    if isinstance(port, bool) or not 1 <= port <= 65535:
        raise RtsalError(f"--port must be between 1 and 65535; got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise RtsalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself will
        try:
            s.bind(address)
        except OSError as exc:
            raise RtsalError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(another server there? pick a free port with --port)"
            ) from None


def serve(
    *,
    checkpoint: str | Path | None = None,
    black_box: str | None = None,
    method: str = "masker",
    device: str = "auto",
    backend: str = "pytorch",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    weights: str | Path | None = None,
    pretrained: bool = True,
) -> None:
    """Serve the demo at http://HOST:PORT until interrupted (Ctrl-C). The address and Gradio's
    presence are checked first, then the model is loaded, then the page built and served; each
    failure is one :class:`~rtsal.errors.RtsalError`."""
    check_port(host, port)
    check_gradio()
    from rtsal.serve.app import SaliencyDemo, write_example_photos
    from rtsal.serve.page import build_app

    demo = SaliencyDemo.load(
        checkpoint, black_box, method, device, backend, weights=weights, pretrained=pretrained
    )
    with tempfile.TemporaryDirectory(prefix="rtsal-serve-") as tmp:
        workdir = Path(tmp)
        examples = write_example_photos(workdir / "examples")
        app = build_app(demo, workdir=workdir, examples=examples)
        try:
            app.queue(default_concurrency_limit=1).launch(
                server_name=host,
                server_port=port,
                prevent_thread_lock=True,
                quiet=True,
                ssr_mode=False,
                allowed_paths=[tmp],
                footer_links=["api"],
            )
        except OSError as exc:
            raise RtsalError(f"cannot listen on {host}:{port}: {exc}") from None
        print(f"serving on http://{host}:{port} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            app.close()
