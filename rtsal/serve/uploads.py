"""What ``rtsal serve`` does with uploaded files: read them through rtsal's own guarded loader,
and delete those sent to ``/explain`` once they are explained.

Gradio stores each upload in its temporary folder, one folder per content hash, so two uploads of
the same bytes under the same name share one path, and it offers only a sweep by age
(``delete_cache``). So a file cannot simply be deleted after its first use: another client's
upload of the same photo may be waiting in the queue for that path. :class:`Uploads` counts the
uploads of each path as Gradio's upload route answers them (:class:`UploadCounter`, an ASGI
middleware that reads the route's answer) and deletes a file when the last of them has been
explained (:meth:`Uploads.release`). Files that were never uploaded (the example photos, files
the server wrote) are never deleted here.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from PIL import Image

from rtsal.data.images import load_image
from rtsal.errors import DataError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
UPLOAD_ROUTE = "/gradio_api/upload"  # Gradio's upload route (its API prefix, then /upload)


def upload_path(payload: Any) -> str | None:
    """The server-side path of a file input as Gradio passes it unprocessed (a ``FileData``
    as a dict), or None for no file."""
    if isinstance(payload, dict):
        path = payload.get("path")
        return path if isinstance(path, str) and path else None
    return None


def read_upload(payload: dict[str, Any]) -> Image.Image:
    """The uploaded image as RGB, read as ``rtsal explain`` reads a file (the pixel limit
    before decoding, one :class:`~rtsal.errors.DataError` line for anything wrong), named in
    messages by the name its sender gave it."""
    path = upload_path(payload)
    name = Path(str(payload.get("orig_name") or path or "upload")).name
    if path is None:
        raise DataError(f"{name}: no file was uploaded")
    return load_image(path, name=name)


class Uploads:
    """The uploads not yet explained, by path; :meth:`release` deletes a file when the last
    upload of it has been used. Files :meth:`keep` names (the example photos, which Gradio
    holds at the path an upload of the same bytes and name gets) are never deleted."""

    PRUNE_ABOVE = 1024  # paths counted; above, those whose file is gone are forgotten

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: Counter[str] = Counter()
        self.kept: set[str] = set()

    def keep(self, folder: Path) -> None:
        """Every file now in ``folder`` stays, whoever uploads the same bytes."""
        self.kept.update(os.path.realpath(p) for p in Path(folder).rglob("*") if p.is_file())

    def uploaded(self, paths: list[str]) -> None:
        with self.lock:
            self.waiting.update(os.path.realpath(p) for p in paths)
            if len(self.waiting) > self.PRUNE_ABOVE:  # uploads never explained, swept by age
                for gone in [p for p in self.waiting if not os.path.exists(p)]:
                    del self.waiting[gone]

    def release(self, path: str | None) -> bool:
        """One upload of ``path`` used; whether the file was deleted (with its folder, once
        empty). A path that was not uploaded, or whose uploads are all used, is left alone."""
        if path is None:
            return False
        key = os.path.realpath(path)
        with self.lock:
            if key in self.kept:
                self.waiting.pop(key, None)
                return False
            if self.waiting[key] > 1:
                self.waiting[key] -= 1
                return False
            if self.waiting.pop(key, 0) < 1:
                return False
            Path(key).unlink(missing_ok=True)
            with suppress(OSError):  # the same bytes uploaded under another name
                Path(key).parent.rmdir()
        return True


class UploadCounter:
    """ASGI middleware counting the files Gradio's upload route stores: the route answers with
    their paths (a JSON list), and they are counted before the answer's last byte leaves, so
    before the client can name them in a call."""

    def __init__(self, app: ASGIApp, uploads: Uploads) -> None:
        self.app = app
        self.uploads = uploads

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if not (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path", "").endswith(UPLOAD_ROUTE)
        ):
            await self.app(scope, receive, send)
            return
        status = 0
        body: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._count(b"".join(body))
            await send(message)

        await self.app(scope, receive, watch)

    def _count(self, answer: bytes) -> None:
        try:
            paths = json.loads(answer)
        except ValueError:
            return
        if isinstance(paths, list):
            self.uploads.uploaded([p for p in paths if isinstance(p, str)])
