"""Camera round trip of `rtsal serve` in a headless browser, in frames per second.

Starts `rtsal serve --backend B` (the shipped model) for each of `--backends`, opens its Camera
tab in Debian's headless Chromium with a fake camera playing a clip of scikit-image's chelsea (a
4 x 4 corner patch changes, so that every frame differs), and counts the overlays the page
receives in `--seconds`, after `--warmup` seconds; `--repeats` runs per camera size and backend,
taking turns. The browser and the server share this
machine's cores, as they would on a laptop running both. For comparison, the same frame is then
explained in this process with the server stopped: the model alone (resize, one pass, mask
resize), the overlay, and the JPEG decoding and encoding Gradio adds around them. Writes
`--out`/serve_fps.json, a section of docs/performance.md (`--doc ''` to skip) and, with
`--screenshot`, a picture of the Photo tab.

    python bench/serve_fps.py --sizes 640x480,1280x720 --backends pytorch,onnxruntime \
        --repeats 3 --screenshot docs/img/serve.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from _markdown import write_section  # noqa: E402

from tests.browser import WATCH_OVERLAYS, make_camera_file, start_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ENV = {
    "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "",
    "RTSAL_PLUGINS": "efficientnet-lite",  # the shipped model's black box, nothing else
    "GRADIO_ANALYTICS_ENABLED": "False",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_TIMES = re.compile(r"model (\d+) ms, overlay (\d+) ms")


def start(logs: Path, backend: str) -> tuple[subprocess.Popen, str]:
    """``rtsal serve --backend B`` (the shipped model), once its page answers."""
    try:
        return start_server(logs, "--backend", backend, env=ENV, name=f"serve-{backend}")
    except RuntimeError as exc:
        raise SystemExit(f"rtsal serve --backend {backend}: {exc}") from None


def camera_frame(width: int, height: int) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()).resize((width, height), Image.BICUBIC))


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stream_run(url: str, clip: Path, server: subprocess.Popen, warmup: float, seconds: float):
    """One browser session on the Camera tab: overlays received, and who used the CPU."""
    from playwright.sync_api import sync_playwright

    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Camera").click()
        page.locator("#camera").get_by_text("Click to Access Webcam").click()
        page.locator("#camera button[aria-label='capture photo']").click()
        page.evaluate(WATCH_OVERLAYS)
        time.sleep(warmup)
        server_pids = {server.pid} | descendants(server.pid)
        browser_pids = descendants(os.getpid()) - server_pids
        cpu0 = cpu_seconds(server_pids), cpu_seconds(browser_pids)
        t0 = page.evaluate("performance.now()")
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            samples.append(page.locator("#live-info").inner_text())
        t1 = page.evaluate("performance.now()")
        cpu1 = cpu_seconds(server_pids), cpu_seconds(browser_pids)
        overlays = page.evaluate("window.overlays")
        browser.close()
    times = [t for t, _ in overlays if t0 <= t <= t1]
    fps = (len(times) - 1) / ((times[-1] - times[0]) / 1000) if len(times) > 1 else 0.0
    in_stream = [tuple(map(int, m.groups())) for s in samples if (m := SERVER_TIMES.search(s))]
    wall = (t1 - t0) / 1000
    return {
        "fps": fps,
        "load_average": os.getloadavg()[0],  # others' jobs on the same cores, for the record
        "server_cpu_ms_per_overlay": 1000 * (cpu1[0] - cpu0[0]) / max(1, len(times) - 1),
        "overlays": len(times),
        "seconds": wall,
        "server_model_ms": statistics.median(m for m, _ in in_stream) if in_stream else None,
        "server_overlay_ms": statistics.median(o for _, o in in_stream) if in_stream else None,
        "cpu_server": (cpu1[0] - cpu0[0]) / wall,  # cores busy
        "cpu_browser": (cpu1[1] - cpu0[1]) / wall,
        "last_info": samples[-1] if samples else "",
    }


def screenshot(url: str, path: Path, photo: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.wait_for_selector("#mask img", timeout=120_000)
        page.wait_for_function(
            "document.querySelector('#summary').innerText.includes('Egyptian cat')"
        )
        time.sleep(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        browser.close()
    shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # a third


def model_alone(frame: np.ndarray, backend: str, repeats: int = 40) -> dict[str, float]:
    """Median ms per frame in this process, the server stopped: the model (resize, one pass,
    mask resize), the overlay, and Gradio's JPEG decoding of the frame and encoding of the
    overlay (what the page sends and gets back)."""
    from rtsal import Explainer, keep_freed_memory
    from rtsal.serve import SaliencyDemo

    keep_freed_memory()  # as the rtsal command, and so the server, does
    demo = SaliencyDemo(Explainer(backend=backend))
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "jpeg", quality=92)
    jpeg = buf.getvalue()
    rows = {"model_ms": [], "overlay_ms": [], "jpeg_decode_ms": [], "jpeg_encode_ms": []}
    for i in range(repeats + 5):
        t0 = time.perf_counter()
        decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        t1 = time.perf_counter()
        live = demo.live(decoded)
        t2 = time.perf_counter()
        Image.fromarray(live.overlay).save(io.BytesIO(), "jpeg")
        t3 = time.perf_counter()
        if i >= 5:
            rows["jpeg_decode_ms"].append(1000 * (t1 - t0))
            rows["model_ms"].append(1000 * live.model_seconds)
            rows["overlay_ms"].append(1000 * (live.seconds - live.model_seconds))
            rows["jpeg_encode_ms"].append(1000 * (t3 - t2))
    return {k: statistics.median(v) for k, v in rows.items()}


def section(result: dict) -> str:
    lines = [
        "## Web demo: camera frames per second",
        "",
        f"`{result['command']}` (`bench/serve_fps.py`): `rtsal serve [--backend B]` with the "
        "shipped model, its Camera tab in headless Chromium with a fake camera (a clip of "
        "chelsea; the top-1 class explained), overlays counted in the page for "
        f"{result['seconds']:.0f} s after {result['warmup']:.0f} s of warm-up, "
        f"{result['repeats']} runs per row, the rows taking turns. Browser and server share this "
        "machine's 2 cores, and other jobs ran on them too (load average in the last column), "
        "so the runs spread.",
        "",
        "| camera | backend | round trip, frames/s (each run) | median | server CPU per frame, "
        "ms | in the stream: model / overlay, ms | model alone, ms (would allow, frames/s) | "
        "round trip / model alone | CPU busy: server / browser, cores | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        runs = row["runs"]
        fps = [r["fps"] for r in runs]
        alone = row["alone"]
        allow = 1000 / alone["model_ms"]

        def median(key: str, runs=runs) -> float:
            return statistics.median(r[key] or 0 for r in runs)

        lines.append(
            f"| {row['camera']} | {row['backend']} | {', '.join(f'{f:.1f}' for f in fps)} | "
            f"**{statistics.median(fps):.1f}** | {median('server_cpu_ms_per_overlay'):.0f} | "
            f"{median('server_model_ms'):.0f} / {median('server_overlay_ms'):.0f} | "
            f"{alone['model_ms']:.1f} ({allow:.1f}) | {statistics.median(fps) / allow:.2f}× | "
            f"{median('cpu_server'):.2f} / {median('cpu_browser'):.2f} | "
            + ", ".join(f"{r['load_average']:.1f}" for r in runs)
            + " |"
        )
    lines += [
        "",
        "Alone, per frame (ms, median; this process, the servers stopped): "
        + "; ".join(
            f"{r['camera']} {r['backend']}: model {r['alone']['model_ms']:.1f}, overlay "
            f"{r['alone']['overlay_ms']:.1f}, JPEG decode {r['alone']['jpeg_decode_ms']:.1f}, "
            f"encode {r['alone']['jpeg_encode_ms']:.1f}"
            for r in result["rows"]
        )
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="640x480", help="camera sizes, e.g. 640x480,1280x720")
    ap.add_argument("--backends", default="pytorch", help="e.g. pytorch,onnxruntime")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="runs/bench-serve")
    ap.add_argument("--doc", default="docs/performance.md", help="'' to leave the page alone")
    ap.add_argument("--screenshot", default="", help="PNG of the Photo tab (docs/img/serve.png)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, value in ENV.items():
        os.environ[name] = value
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    started = {b: start(out, b) for b in backends}
    servers = {b: proc for b, (proc, _) in started.items()}
    urls = {b: url for b, (_, url) in started.items()}
    result: dict = {
        "command": "python bench/serve_fps.py "
        + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k in ("sizes", "backends", "repeats")
        ),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": [
            {"camera": f"{w}×{h}", "size": [w, h], "backend": b, "runs": []}
            for w, h in sizes
            for b in backends
        ],
    }
    clips = {}
    for w, h in sizes:
        clips[w, h] = out / f"camera-{w}x{h}.y4m"
        make_camera_file(clips[w, h], camera_frame(w, h))
    try:
        for r in range(args.repeats):  # the rows take turns: drifting load spreads over all
            for row in result["rows"]:
                w, h = row["size"]
                b = row["backend"]
                run = stream_run(urls[b], clips[w, h], servers[b], args.warmup, args.seconds)
                row["runs"].append(run)
                print(f"{w}x{h} {b} run {r + 1}: {run['fps']:.1f} frames/s {run}", flush=True)
        if args.screenshot:
            photo = out / "chelsea.png"
            Image.fromarray(camera_frame(451, 300)).save(photo)
            screenshot(urls[backends[0]], Path(args.screenshot), photo)
            print(f"wrote {args.screenshot}", flush=True)
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGINT)
        for server in servers.values():
            server.wait(timeout=60)
    for row in result["rows"]:
        row["alone"] = model_alone(camera_frame(*row["size"]), row["backend"])
        print(f"{row['camera']} {row['backend']} alone: {row['alone']}", flush=True)
    (out / "serve_fps.json").write_text(json.dumps(result, indent=2) + "\n")
    text = section(result)
    print(text)
    if args.doc:
        write_section(Path(args.doc), "bench/serve_fps.py", text)


if __name__ == "__main__":
    main()
