"""`rtsal serve` under load: N gradio_client clients at once, each explaining photos through
`/explain`, with latency percentiles, errors, throughput and the server's peak memory.

Starts `rtsal serve` (the shipped model; `--backend`), then `--clients` threads, each with a
`gradio_client.Client` of its own, each sending `--requests` photos one after the other (all
clients start together). A photo is scikit-image's chelsea at `--size`, with one pixel changed
per request, so every upload is a new file for the server to store, read, explain and delete.
A request's latency is the client's whole call: upload, queue, explanation, the mask PNG's
download. The server's memory is sampled every 50 ms (resident set of the process) and its peak
(`VmHWM`) read at the end; after the run the upload folder is checked for leftover uploads.
Writes `--out`/serve_load.json and a section of docs/performance.md (`--doc ''` to skip).

    python bench/serve_load.py --clients 16 --requests 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from _markdown import write_section  # noqa: E402

from tests.browser import start_server  # noqa: E402

ENV = {
    "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "",
    "RTSAL_PLUGINS": "efficientnet-lite",  # the shipped model's black box, nothing else
    "GRADIO_ANALYTICS_ENABLED": "False",
}
EGYPTIAN_CAT = 285


def proc_status(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (VmRSS, VmHWM), in bytes; 0 once the process ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def write_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` PNG files of chelsea at ``size``, each with its own first pixel."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    base = np.array(Image.fromarray(data.chelsea()).resize(size, Image.BICUBIC))
    paths = []
    for i in range(count):
        pixels = base.copy()
        pixels[0, 0] = (i % 256, i // 256 % 256, 11)
        path = folder / f"load-{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_load(url: str, photos: list[Path], clients: int, requests: int) -> dict:
    """Every client's requests, timed; errors kept by message."""
    from gradio_client import Client, handle_file

    start = threading.Barrier(clients)
    times: list[tuple[float, float]] = []  # (sent, answered) of each answered request
    errors: list[str] = []
    wrong: list[int] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        api = Client(url, verbose=False)
        start.wait()
        for r in range(requests):
            photo = photos[c * requests + r]
            t0 = time.perf_counter()
            try:
                _, numbers = api.predict(handle_file(str(photo)), "", api_name="/explain")
            except Exception as exc:  # what a client sees is the measurement
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            t1 = time.perf_counter()
            with lock:
                times.append((t0, t1))
                if numbers["class_index"] != EGYPTIAN_CAT:
                    wrong.append(numbers["class_index"])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = max(t1 for _, t1 in times) - min(t0 for t0, _ in times) if times else float("nan")
    latencies = [t1 - t0 for t0, t1 in times]
    return {"latencies": latencies, "errors": errors, "wrong_class": wrong, "wall": wall}


def sample_memory(pid: int, stop: threading.Event, samples: list[int]) -> None:
    while not stop.is_set():
        samples.append(proc_status(pid, "VmRSS"))
        stop.wait(0.05)


def command_line(args: argparse.Namespace) -> str:
    """The command as run, with the thread count and niceness it ran under."""
    prefix = ""
    if "OMP_NUM_THREADS" in os.environ:
        prefix += f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
    if os.nice(0):
        prefix += f"nice -n {os.nice(0)} "
    options = " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k in ("clients", "requests", "backend")
    )
    return f"{prefix}python bench/serve_load.py {options}"


def section(result: dict) -> str:
    lat = result["latency_ms"]
    n = result["clients"] * result["requests"]
    return "\n".join(
        [
            "## Web demo: concurrent clients",
            "",
            f"`{result['command']}` (`bench/serve_load.py`): `rtsal serve` with the shipped "
            f"model ({result['backend']}), {result['clients']} `gradio_client` clients at once, "
            f"each sending {result['requests']} photos one after the other ({n} requests: "
            f"chelsea at {result['size'][0]}×{result['size'][1]}, a new file each time). A "
            "request's latency is the client's whole call (upload, queue, explanation, mask "
            "download); the server explains one photo at a time, so a request waits for those "
            "ahead of it. Clients and server share this machine's 2 cores "
            f"(load average {result['load_average'][0]:.1f} before the run, "
            f"{result['load_average'][1]:.1f} after; other jobs ran on them).",
            "",
            "| clients | requests | errors | p50 ms | p90 ms | p99 ms | max ms | requests/s "
            "| server RSS MB: ready / peak under load / peak of its life | uploads left |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {result['clients']} | {n} | {len(result['errors'])} | {lat['p50']:.0f} | "
            f"{lat['p90']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f} | "
            f"{result['requests_per_second']:.2f} | {result['server_start_mb']:.0f} / "
            f"{result['server_load_peak_mb']:.0f} / {result['server_hwm_mb']:.0f} | "
            f"{result['uploads_left']} |",
            "",
            "Requests per second: answered requests over the time from the first sent to the "
            "last answered. Peak under load: the largest resident set sampled every 50 ms "
            "during the run; peak of its life: the kernel's high-water mark (`VmHWM`), which "
            "includes loading the model.",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="photos each client sends")
    ap.add_argument("--size", default="451x300", help="photo size, WxH")
    ap.add_argument("--backend", default="pytorch")
    ap.add_argument("--out", default="runs/bench-serve-load")
    ap.add_argument("--doc", default="docs/performance.md", help="'' to leave the page alone")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split("x"))
    photos = write_photos(out / "photos", args.clients * args.requests, size)
    temp = out / "tmp"
    env = {**ENV, "GRADIO_TEMP_DIR": str(temp)}
    proc, url = start_server(out, "--backend", args.backend, env=env, timeout=600)
    try:
        start_rss = proc_status(proc.pid, "VmRSS")
        load_before = os.getloadavg()[0]
        stop, samples = threading.Event(), []
        sampler = threading.Thread(target=sample_memory, args=(proc.pid, stop, samples))
        sampler.start()
        load = run_load(url, photos, args.clients, args.requests)
        stop.set()
        sampler.join()
        hwm = proc_status(proc.pid, "VmHWM")
        names = {p.name for p in photos}
        left = sum(1 for p in temp.rglob("*") if p.is_file() and p.name in names)
        load_after = os.getloadavg()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    lat_ms = [1000 * s for s in load["latencies"]]
    result = {
        "command": command_line(args),
        "clients": args.clients,
        "requests": args.requests,
        "size": list(size),
        "backend": args.backend,
        "latency_ms": {
            "p50": percentile(lat_ms, 50),
            "p90": percentile(lat_ms, 90),
            "p99": percentile(lat_ms, 99),
            "max": max(lat_ms, default=float("nan")),
            "mean": statistics.fmean(lat_ms) if lat_ms else float("nan"),
        },
        "errors": load["errors"],
        "wrong_class": load["wrong_class"],
        "requests_per_second": len(lat_ms) / load["wall"],
        "wall_seconds": load["wall"],
        "server_start_mb": start_rss / 1e6,
        "server_load_peak_mb": max(samples, default=0) / 1e6,
        "server_hwm_mb": hwm / 1e6,
        "uploads_left": left,
        "load_average": [load_before, load_after],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    (out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    text = section(result)
    print(text)
    if load["errors"]:
        print(f"errors: {sorted(set(load['errors']))[:5]}")
    if args.doc:
        write_section(Path(args.doc), "bench/serve_load.py", text)


if __name__ == "__main__":
    main()
