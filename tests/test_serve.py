"""``rtsal serve``: the web demo, driven as a user drives it.

A real server (``rtsal serve`` in a process of its own) and a real headless browser (Debian's
Chromium through Playwright): a photo uploaded and a class typed give the library's mask for
that photo and class, pixel for pixel up to PNG's 8 bits; a fake camera playing a photo gives
overlay frames, which are the library's overlay of that photo; ``gradio_client`` gets the same
mask from ``/explain``. Bad addresses, a missing checkpoint and a missing Gradio are one line.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import WATCH_OVERLAYS, free_port, make_camera_file, start_server
from tests.helpers import (
    LITE_PLUGIN,
    REPO,
    assert_one_line_error,
    lite_plugin_only,
    run_main,
    run_rtsal,
)

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("rtsal_efficientnet_lite")

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not at /usr/bin/chromium (scripts/setup.sh installs it)",
)
EGYPTIAN_CAT, TABBY = 285, 281  # chelsea is an Egyptian cat to the black box
CAMERA_SIZE = (640, 480)
SERVER_ENV = {**LITE_PLUGIN, "GRADIO_ANALYTICS_ENABLED": "False"}
PNG_STEP = 1 / 255  # a mask read back from an 8-bit PNG is within half a step of the float one


@pytest.fixture(scope="module", autouse=True)
def only_the_lite_plugin():
    """The shipped model's black box comes from the EfficientNet-Lite plugin; no other plugin
    installed here is loaded into this process."""
    with lite_plugin_only():
        yield


@pytest.fixture(scope="module")
def explainer():
    from rtsal import Explainer

    return Explainer()  # the shipped model, as the server runs it


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skdata.chelsea())  # 451 x 300


@pytest.fixture(scope="module")
def chelsea_png(tmp_path_factory, chelsea) -> Path:
    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    chelsea.save(path)
    return path


# ---------------------------------------------------------------------- one-line errors
def test_a_port_out_of_range_is_one_line():
    run = run_rtsal("serve", "--port", "99999", timeout=120)
    assert run.code == 1
    assert_one_line_error(run, "--port must be between 1 and 65535", "99999")


def test_an_occupied_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_main("serve", "--port", port, env=LITE_PLUGIN)
    assert run.code == 1
    assert_one_line_error(run, f"cannot listen on 127.0.0.1:{port}", "--port")


def test_a_negative_upload_limit_is_one_line():
    run = run_main("serve", "--max-upload-mb", "-1", "--port", free_port())
    assert run.code == 1
    assert_one_line_error(run, "--max-upload-mb must be 0 (no limit) or more; got -1.0")


def test_a_missing_checkpoint_is_one_line(tmp_path):
    run = run_main("serve", "--checkpoint", tmp_path / "nowhere", "--port", free_port())
    assert run.code == 1
    assert_one_line_error(run, "checkpoint not found", "nowhere")


def test_onnxruntime_for_another_method_is_one_line():
    args = ("serve", "--backend", "onnxruntime", "--method", "gradcam", "--port", free_port())
    run = run_main(*args, env=LITE_PLUGIN)
    assert run.code == 1
    assert_one_line_error(run, "onnxruntime runs the masking model only")


def test_without_gradio_one_line_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails
    run = run_main("serve", "--port", free_port())
    assert run.code == 1
    assert_one_line_error(run, "pip install 'rtsal[serve]'")


def test_help_imports_neither_gradio_nor_torch():
    code = (
        "import sys\nfrom rtsal.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('gradio' in sys.modules, 'torch' in sys.modules)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "--checkpoint" in p.stdout and "--port" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "False False"


# ---------------------------------------------------------------------- the demo, in-process
@pytest.fixture(scope="module")
def demo(explainer):
    from rtsal.serve import SaliencyDemo

    return SaliencyDemo(explainer)


def test_classes_are_found_by_name_synonym_synset_and_index(demo):
    from rtsal.errors import UnknownClassError

    assert demo.search("tabby cat")[0] == TABBY  # a synonym
    assert demo.search("n02124075") == [EGYPTIAN_CAT]  # a synset
    assert demo.search("Egyptian_Cat")[0] == EGYPTIAN_CAT  # separators and case do not matter
    assert demo.search("281") == [TABBY]
    assert {134, 517} <= set(demo.search("crane"))  # ImageNet's bird and machine
    assert demo.labels[134] == "crane (134)" and demo.labels[517] == "crane (517)"
    assert demo.class_index("tabby cat") == TABBY
    assert demo.class_index(demo.choice_label(TABBY)) == TABBY  # what the picker shows
    assert demo.class_index("top-1") is None and demo.class_index("") is None
    with pytest.raises(UnknownClassError):
        demo.class_index("no such animal")


def test_methods_side_by_side_are_the_library_methods(demo, explainer, chelsea):
    from rtsal import Explainer

    results = dict(demo.compare(chelsea, TABBY))
    assert list(results) == ["masker", "gradcam", "gradient"]
    for method, result in results.items():
        reference = Explainer(method=method, black_box=explainer.black_box)
        expected = reference(chelsea, TABBY)[0, 0]
        assert result.explanation.class_index == TABBY
        assert result.mask.shape == expected.shape == (300, 451)
        assert float((result.mask - expected).abs().max()) < 1e-5, method


def test_a_camera_frame_is_the_overlay_of_the_library_mask(demo, explainer, chelsea):
    from rtsal.inference.video import overlay_frame

    frame = np.asarray(chelsea.resize(CAMERA_SIZE, Image.BICUBIC))
    live = demo.live(frame)
    expected = overlay_frame(frame.copy(), explainer(Image.fromarray(frame))[0, 0])
    assert live.class_index == EGYPTIAN_CAT
    assert live.overlay.shape == frame.shape
    assert np.abs(live.overlay.astype(int) - expected).max() <= 1
    assert np.abs(live.overlay.astype(int) - frame).mean() > 8  # an overlay, not the frame
    # an HD camera's frame is halved first (box filter): the overlay of the halved frame
    hd = Image.fromarray(frame).resize((1280, 720), Image.BICUBIC)
    halved = hd.reduce(2)
    live = demo.live(np.asarray(hd))
    expected = overlay_frame(np.array(halved), explainer(halved)[0, 0])
    assert live.overlay.shape == (360, 640, 3)
    assert np.abs(live.overlay.astype(int) - expected).max() <= 1


# ---------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``rtsal serve`` on a free port, until the module's tests are done; then Ctrl-C, which
    must stop it cleanly (exit code 0)."""
    logs = tmp_path_factory.mktemp("serve")
    env = {**SERVER_ENV, "GRADIO_TEMP_DIR": str(logs / "gradio")}
    proc, url = start_server(logs, env=env)
    yield url
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 0, _read(logs / "serve.stderr")
    assert "Traceback" not in _read(logs / "serve.stderr")
    assert f"serving on {url.rstrip('/')}" in _read(logs / "serve.stdout")


def _read(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read()


def _png_mask(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64) / 255


def _assert_same_mask(png: np.ndarray, mask) -> None:
    mask = mask.numpy().astype(np.float64)
    assert png.shape == mask.shape
    assert np.abs(png - mask).max() <= PNG_STEP / 2 + 1e-4
    assert mask.std() > 0.1  # a mask with something in it, not a blank that matches anything


def _browser(playwright, *args: str):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(args))


def _wait_for(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
@needs_chromium
def test_a_photo_and_a_typed_class_give_the_library_mask(server, explainer, chelsea, chelsea_png):
    from playwright.sync_api import sync_playwright

    from rtsal.boxes import mask_box

    [[tabby]] = explainer.explain_batch([chelsea], classes=[TABBY])
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        page.locator("#photo input[type=file]").set_input_files(str(chelsea_png))
        page.wait_for_selector("#mask img", timeout=60_000)
        top5 = page.locator("#top5").inner_text()
        assert top5.index("Egyptian cat") < top5.index("tiger cat") < top5.index("tabby")

        picker = page.locator("#class input")
        picker.click()
        picker.fill("tabby cat")
        picker.press("Enter")
        summary = page.locator("#summary")
        _wait_for(lambda: "tabby (class 281)" in summary.inner_text(), what="the tabby mask")
        shown = _png_mask(_fetch(page.locator("#mask img").get_attribute("src")))
        _assert_same_mask(shown, explainer(chelsea_png, "tabby")[0, 0])

        text = summary.inner_text()  # the black box on the photo and on the paper's pair
        for p_value in (tabby.p_image, tabby.p_preserved, tabby.p_destroyed):
            assert f"{p_value:.3f}" in text
        kept = page.locator("#preserved").inner_text()
        assert f"image × mask: p = {tabby.p_preserved:.3f}" in kept

        with page.expect_download() as download:
            page.locator("#download").click()
        saved = Path(download.value.path()).read_bytes()
        _assert_same_mask(_png_mask(saved), explainer(chelsea_png, "tabby")[0, 0])

        box = mask_box(tabby.mask, 0.9)
        page.locator("#threshold input[type=number]").fill("0.9")
        page.locator("#threshold input[type=number]").press("Enter")
        expected = f"box at 0.90: ({box[0]}, {box[1]}) to ({box[2]}, {box[3]})"
        _wait_for(lambda: expected in summary.inner_text(), what=expected)
        browser.close()


@pytest.mark.slow
@needs_chromium
def test_the_camera_streams_overlays_of_the_library_mask(server, explainer, chelsea, tmp_path):
    from playwright.sync_api import sync_playwright

    from rtsal.inference.video import overlay_frame

    frame = np.asarray(chelsea.resize(CAMERA_SIZE, Image.BICUBIC))
    clip = tmp_path / "camera.y4m"
    make_camera_file(clip, frame)
    with sync_playwright() as p:
        browser = _browser(
            p,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}",
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        page.get_by_role("tab", name="Camera").click()
        page.locator("#camera").get_by_text("Click to Access Webcam").click()
        page.locator("#camera button[aria-label='capture photo']").click()  # start streaming
        page.evaluate(WATCH_OVERLAYS)
        time.sleep(10)
        overlays = [url for _, url in page.evaluate("window.overlays")]
        info = page.locator("#live-info").inner_text()
        browser.close()
    assert len(overlays) > 0, info
    assert "Egyptian cat" in info and "frames/s" in info
    # The browser mirrors its camera (a selfie view) and sends the mirrored frame as a JPEG.
    mirrored = np.ascontiguousarray(frame[:, ::-1])
    expected = overlay_frame(mirrored.copy(), explainer(Image.fromarray(mirrored))[0, 0])
    for url in (overlays[0], overlays[-1]):
        got = np.asarray(Image.open(io.BytesIO(_fetch(url))).convert("RGB"), dtype=np.int64)
        assert got.shape == frame.shape
        rows = slice(None, -16)  # above the changing patch
        off_overlay = np.abs(got - expected)[rows].mean()
        off_frame = np.abs(got - mirrored)[rows].mean()
        # an overlay (far from the camera's frame), and the library's (near its overlay, up to
        # the camera's YUV 4:2:0 and the JPEG both ways)
        assert off_frame > 8 and off_overlay < off_frame / 3, (off_overlay, off_frame)


@pytest.mark.slow
def test_gradio_client_explain_gives_the_library_mask(server, explainer, chelsea, chelsea_png):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    mask_file, numbers = client.predict(handle_file(str(chelsea_png)), "tabby", api_name="/explain")
    shown = _png_mask(Path(mask_file).read_bytes())
    _assert_same_mask(shown, explainer(chelsea_png, "tabby")[0, 0])
    [[tabby]] = explainer.explain_batch([chelsea], classes=[TABBY])
    assert numbers["class_index"] == TABBY and numbers["class_name"] == "tabby"
    for key in ("p_image", "p_preserved", "p_destroyed", "area"):
        assert numbers[key] == pytest.approx(getattr(tabby, key), abs=1e-5)
    assert numbers["box"] == list(tabby.box)
    assert [c["class_index"] for c in numbers["top5"]][:3] == [EGYPTIAN_CAT, 282, TABBY]
    assert client.predict("n02123045", api_name="/classes")[0]["class_index"] == TABBY
