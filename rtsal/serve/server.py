"""Serving the demo: check the address and Gradio's presence (before torch, Gradio or the model
is imported, so a mistyped port is answered at once), load the model, serve the page.

Each server keeps its files in a temporary folder of its own (inside ``GRADIO_TEMP_DIR`` when
that is set, else the system's): the example photos, the masks offered for download, and
Gradio's uploads and outputs, for which ``GRADIO_TEMP_DIR`` points there while it runs. The
folder is removed when the server stops, by Ctrl-C or SIGTERM alike."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rtsal.errors import RtsalError
from rtsal.serve._gradio import check_gradio

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Megabytes a file: larger uploads are refused by Gradio's upload route (HTTP 413) before any of
# rtsal's code runs. What a file may decode to is bounded apart, by RTSAL_MAX_PIXELS.
DEFAULT_MAX_UPLOAD_MB = 20


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
    backend: str = "auto",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    weights: str | Path | None = None,
    pretrained: bool = True,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    trust_code: bool = False,
    allow_other_black_box: bool = False,
) -> None:
    """Serve the demo at http://HOST:PORT until interrupted (Ctrl-C or SIGTERM). The address,
    the upload limit (``max_upload_mb`` megabytes a file; 0: none) and Gradio's presence are
    checked first, then the model is loaded, then the page built and served; each failure is
    one :class:`~rtsal.errors.RtsalError`."""
    check_port(host, port)
    max_upload = upload_limit(max_upload_mb)
    check_gradio()
    from starlette.middleware import Middleware

    from rtsal.serve.app import SaliencyDemo, write_example_photos
    from rtsal.serve.page import build_app
    from rtsal.serve.uploads import UploadCounter, Uploads

    with stop_on_sigterm():
        demo = SaliencyDemo.load(
            checkpoint,
            black_box,
            method,
            device,
            backend,
            weights=weights,
            pretrained=pretrained,
            trust_code=trust_code,
            allow_other_black_box=allow_other_black_box,
        )
        with server_folder() as workdir:
            uploads = Uploads()
            examples = write_example_photos(workdir / "examples")
            app = build_app(demo, workdir=workdir, examples=examples, uploads=uploads)
            uploads.keep(workdir / "gradio")  # the examples' copies, made with the page
            try:
                app.queue(default_concurrency_limit=1).launch(
                    server_name=host,
                    server_port=port,
                    prevent_thread_lock=True,
                    quiet=True,
                    ssr_mode=False,
                    allowed_paths=[str(workdir)],
                    footer_links=["api"],
                    max_file_size=max_upload,
                    app_kwargs={"middleware": [Middleware(UploadCounter, uploads=uploads)]},
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


def upload_limit(megabytes: float) -> int | None:
    """Bytes a file for Gradio's ``max_file_size`` (None: no limit, for 0)."""
    if isinstance(megabytes, bool) or not 0 <= megabytes < float("inf"):
        raise RtsalError(f"--max-upload-mb must be 0 (no limit) or more; got {megabytes}")
    return int(megabytes * 1e6) if megabytes else None


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (``kill``, a service manager) stops the server as Ctrl-C does, so the same
    clean-up runs: the page closed and the temporary folder removed. Further SIGTERMs are
    ignored while that runs. In a thread other than the main one this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def server_folder() -> Iterator[Path]:
    """This server's temporary folder (in ``GRADIO_TEMP_DIR`` if set, else the system's), with
    ``GRADIO_TEMP_DIR`` pointing at its ``gradio`` sub-folder while it lasts: Gradio reads it
    when it makes the page and the server, and keeps its uploads and outputs there. The folder
    and all in it are removed at the end."""
    parent = os.environ.get("GRADIO_TEMP_DIR") or None
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtsal-serve-", dir=parent) as tmp:
        workdir = Path(tmp).resolve()
        (workdir / "gradio").mkdir()
        os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
        try:
            yield workdir
        finally:
            if parent is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = parent
