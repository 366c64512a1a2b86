"""``rtsal serve`` against hostile uploads, driven by ``gradio_client`` as any client would.

A real server (``rtsal serve`` in a process of its own, uploads limited to 1 MB through
``RTSAL_MAX_UPLOAD_MB``): a text file, an empty file, a truncated JPEG, a 20,000 x 20,000 PNG and
a 144-megapixel PNG of 140 kB each give the caller the one line ``rtsal explain`` prints for that
file, without the server decoding the large ones; an unknown class or method is one line; a file
above the limit is refused at upload; none of them prints a traceback in the server's log. Every
file sent to ``/explain`` is deleted once explained (50 uploads leave none behind), 16 clients at
once are all answered, the camera stream is not offered as an API, and SIGTERM stops the server
as Ctrl-C does, removing its temporary folder.
"""

from __future__ import annotations

import io
import signal
import subprocess
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import start_server
from tests.helpers import LITE_PLUGIN, run_main

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("rtsal_efficientnet_lite")
pytest.importorskip("gradio_client")
pytestmark = pytest.mark.slow

EGYPTIAN_CAT = 285
LIMIT_MB = 1
MB = 1_000_000


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """The hostile files, by what they are; each would be read by ``rtsal explain`` as well."""
    d = tmp_path_factory.mktemp("hostile")
    (d / "notes.png").write_text("not an image, whatever the name says\n")
    (d / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(skdata.chelsea()).save(buf, "jpeg", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("1", (20_000, 20_000)).save(d / "huge.png")  # 400 megapixels in 49 kB
    Image.new("L", (12_000, 12_000)).save(d / "bomb.png", compress_level=9)  # 144 megapixels
    return {
        "text": d / "notes.png",
        "empty": d / "empty.png",
        "truncated": d / "truncated.jpg",
        "20000x20000": d / "huge.png",
        "144 megapixels": d / "bomb.png",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``rtsal serve`` with uploads limited to 1 MB, its temporary folder inside ``tmp``."""
    logs = tmp_path_factory.mktemp("serve")
    env = {
        **LITE_PLUGIN,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(logs / "tmp"),
        "RTSAL_MAX_UPLOAD_MB": str(LIMIT_MB),
    }
    proc, url = start_server(logs, env=env)
    yield Server(proc, url, logs)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, logs: Path) -> None:
        self.proc, self.url, self.logs = proc, url, logs

    @property
    def log(self) -> str:
        return (self.logs / "serve.stderr").read_text(errors="replace")

    @property
    def upload_folder(self) -> Path:
        """Gradio's folder in the server's own temporary folder (``GRADIO_TEMP_DIR`` inside)."""
        [folder] = (self.logs / "tmp").glob("rtsal-serve-*/gradio")
        return folder

    def files(self) -> set[str]:
        return {p.name for p in self.upload_folder.rglob("*") if p.is_file()}

    def peak_rss(self) -> int:
        """The server's peak resident set so far (VmHWM), in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        [line] = [ln for ln in status.splitlines() if ln.startswith("VmHWM:")]
        return int(line.split()[1]) * 1024

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)


def explain(client, path: Path, class_name: str = "", method: str = ""):
    from gradio_client import handle_file

    args = (handle_file(str(path)), class_name) + ((method,) if method else ())
    return client.predict(*args, api_name="/explain")


def photo(path: Path, seed: int) -> Path:
    """Chelsea, small, with one pixel set by ``seed``: other bytes (another upload folder) for
    each seed, the same cat to the black box."""
    pixels = np.array(Image.fromarray(skdata.chelsea()).resize((150, 100)))
    pixels[0, 0] = (seed % 256, seed // 256 % 256, 7)
    Image.fromarray(pixels).save(path)
    return path


def cli_errors(hostile: dict[str, Path], monkeypatch) -> dict[str, str]:
    """What ``rtsal explain`` prints for each file (named as given: its file name)."""
    folder = next(iter(hostile.values())).parent
    monkeypatch.chdir(folder)
    run = run_main("explain", *(p.name for p in hostile.values()), "--out", "out", env=LITE_PLUGIN)
    assert run.code == 3, run.stderr
    lines = [ln.removeprefix("error: ") for ln in run.error_lines if ln.startswith("error: ")]
    return {what: next(ln for ln in lines if ln.startswith(f"{p.name}: ")) for what, p in
            hostile.items()}  # fmt: skip


# ---------------------------------------------------------------------- one line each
def test_each_hostile_upload_is_the_cli_line_to_the_caller(server, hostile, monkeypatch):
    from gradio_client.exceptions import AppError

    expected = cli_errors(hostile, monkeypatch)
    assert "exceeds the limit of 100000000 pixels" in expected["144 megapixels"]
    assert hostile["144 megapixels"].stat().st_size < 200_000  # a bomb: small file, huge image
    client = server.client()
    explain(client, photo(server.logs / "warm.png", 0))  # the model's own memory, first
    before = server.peak_rss()
    for what, path in hostile.items():
        with pytest.raises(AppError) as caught:
            explain(client, path)
        assert str(caught.value) == expected[what], what
    # refused before decoding: the 144-megapixel image alone is 432 MB in RGB (the server
    # used to reach 3.8 GB explaining it)
    assert server.peak_rss() - before < 200 * MB
    assert {p.name for p in hostile.values()}.isdisjoint(server.files())  # deleted, too
    assert "Traceback" not in server.log


def test_an_unknown_class_or_method_is_one_line(server, tmp_path):
    from gradio_client.exceptions import AppError

    client = server.client()
    cat = photo(tmp_path / "cat.png", 1)
    with pytest.raises(AppError, match=r"^unknown class 'no such animal' \(pass an index"):
        explain(client, cat, "no such animal")
    with pytest.raises(AppError, match=r"^unknown method 'no-such-method'"):
        explain(client, cat, "", "no-such-method")
    assert "Traceback" not in server.log


def test_an_upload_above_the_limit_is_refused(server, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(np.random.default_rng(0).bytes(2 * LIMIT_MB * MB))
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + big.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        server.url + "gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 413
    assert caught.value.read().decode() == (
        f"File size exceeded maximum allowed size of {LIMIT_MB * MB} bytes."
    )
    assert "big.png" not in server.files()
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {LIMIT_MB * MB}"):
        explain(server.client(), big)  # gradio_client reads the limit and refuses to send
    assert "Traceback" not in server.log


# ---------------------------------------------------------------------- uploads are deleted
def test_fifty_uploads_leave_none_behind(server, tmp_path):
    client = server.client()
    names = [f"upload-{i}.png" for i in range(50)]
    for i, name in enumerate(names):
        _, numbers = explain(client, photo(tmp_path / name, 100 + i))
        assert numbers["class_index"] == EGYPTIAN_CAT
    left = server.files()
    assert not left & set(names)
    assert {"chelsea.jpg", "coffee.jpg"} <= left  # the right folder: the examples stay


def test_sixteen_clients_at_once_are_all_answered(server, tmp_path):
    """The same photo from 16 clients at once: Gradio stores it once (one path for the same
    bytes and name), and it is deleted only when the last of the 16 has been explained."""
    cat = photo(tmp_path / "same.png", 999)

    def one(_: int) -> int:
        return explain(server.client(), cat)[1]["class_index"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    assert answers == [EGYPTIAN_CAT] * 16
    assert "same.png" not in server.files()
    assert "Traceback" not in server.log


def test_the_camera_stream_is_not_offered_as_an_api(server):
    endpoints = server.client().view_api(print_info=False, return_format="dict")
    assert set(endpoints["named_endpoints"]) == {"/explain", "/classes"}
    assert not endpoints["unnamed_endpoints"]


# ---------------------------------------------------------------------- stopping
def test_sigterm_stops_the_server_as_ctrl_c_does(server):
    """Last: it stops the module's server."""
    folder = server.upload_folder.parent
    assert folder.is_dir()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    assert not folder.exists() and not list((server.logs / "tmp").iterdir())
    assert "Traceback" not in server.log
    assert f"serving on {server.url.rstrip('/')}" in (server.logs / "serve.stdout").read_text()
