"""Explanation speed, measured side by side in one run on the same black box and images.

For each black box: the black box's forward pass alone (the floor), the masking model (one
encoder pass shared with the black box gives the prediction and the mask), gradient, Grad-CAM
(rtsal's and pytorch-grad-cam's), the iterative mask baseline and the contrast method; for
EfficientNet-Lite0 also the masking model exported to ONNX and run by ONNX Runtime.
Throughput at batch 32, latency at batch 1, peak resident memory above the resting process.
Writes a Markdown table with the machine and versions to --out.

Timing protocol: after one warm-up call each, the methods are run in interleaved rounds (every
method once per round, the order rotated from round to round), so that slow drifts of a shared
machine hit every method alike; a method's time is its median over the rounds, and its ratio to
the forward pass is the median of the per-round ratios. The two slow methods (iterative mask,
contrast) are timed once, in the middle of the run. Memory is measured apart, one fresh process
per method and configuration, with the C library's default malloc (which returns freed blocks,
so the resident set follows the memory in use; under ``keep_freed_memory`` a process keeps its
high-water mark, set-up included).

    python bench/speed.py --out docs/performance.md
    python bench/speed.py --configs lite0 --methods onnx --out /tmp/speed.md  # one row (+ floor)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from _markdown import write_section  # bench/_markdown.py, beside this script


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples the resident set size every 5 ms while a block runs."""

    def __enter__(self):
        self.base = rss_mb()
        self.peak = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_mb())
                time.sleep(0.005)

        self._t = threading.Thread(target=sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def extra(self) -> float:
        return self.peak - self.base


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- set-ups


def setup(name: str, masker_ckpt: str | None):
    """(black box, masking model, image size) for a named configuration."""
    from rtsal.engine.model import MaskerConfig, build_masking_model
    from rtsal.registry.blackbox import create_black_box
    from rtsal.registry.classifiers import build_classifier

    torch.manual_seed(0)
    if name == "lite0":
        from rtsal.registry.resolve import load_masking_model

        model, box, _ = load_masking_model(masker_ckpt)  # default: the shipped model
        return box, model.eval(), 224
    if name == "resnet50":
        box = create_black_box("resnet50", pretrained=False)
        cfg = MaskerConfig(num_classes=1000, encoder="blackbox", embedding="classifier-init")
        return box, build_masking_model(cfg, box).eval(), 224
    if name == "cifar":
        from rtsal.data.arrays import CIFAR10_CLASSES
        from rtsal.registry.blackbox import BlackBox

        net = build_classifier("resnet9", 10, 3, 32)
        box = BlackBox(
            net,
            name="resnet9",
            class_names=CIFAR10_CLASSES,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            input_size=(32, 32),
        )
        cfg = MaskerConfig(
            num_classes=10,
            encoder="blackbox",
            embedding="classifier-init",
            upsampler_channels=(128, 64),
            mask_stride=2,
        )
        return box, build_masking_model(cfg, box).eval(), 32
    raise SystemExit(f"unknown configuration {name}")


ONNX_ROW = "masking model, ONNX Runtime"


def onnx_runner(box, model, size: int):
    """The masking model with its encoder exported to ONNX (as `rtsal export` does), run by ONNX
    Runtime on the CPU with as many threads as torch. One session run gives the mask and the
    black box's probabilities: the work of the "masking model" row, with the class as an input."""
    import onnxruntime as ort

    from rtsal.inference.export import ExportableMasker, export_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:  # the session keeps the model in memory
        path = Path(tmp) / "masker.onnx"
        export_onnx(ExportableMasker(model, box), path, size)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x, c):
        return session.run(["mask"], {"images": x.contiguous().numpy(), "classes": c.numpy()})[0]

    return run


def runners(box, model, size: int, iterative_steps: int, with_onnx: bool = False):
    """name -> callable(images, classes) for every method measured.

    Everything runs in channels-last layout, as `rtsal explain` does, and the masking model with
    its decoder's BatchNorms folded (as `rtsal explain` runs it); further rows show it without
    the folding, in the default (NCHW) layout, under bf16 autocast, without sharing the
    backbone pass, and exported to ONNX (``with_onnx``).
    """
    import copy

    from rtsal.engine.fusion import fold_batch_norms
    from rtsal.registry.methods import create_method

    onnx_run = onnx_runner(box, model, size) if with_onnx else None  # before channels-last
    nchw_model = fold_batch_norms(copy.deepcopy(model))  # its own copy of the black box's network
    box.to(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    fused = fold_batch_norms(model)  # shares the encoder (the black box's network) with `model`

    def forward(x, c):
        with torch.inference_mode():
            return box(x)

    def explain(net, x):  # what `rtsal explain` does: one encoder pass, top-1 class, mask
        with torch.inference_mode():
            feats = net.encode(x, with_logits=True)
            return net.decode(feats, feats.logits.argmax(1), x.shape[-2:]).mask

    def masker(x, c):
        return explain(fused, x)

    def masker_unfused(x, c):
        return explain(model, x)

    def masker_nchw(x, c):
        return explain(nchw_model, x.contiguous())

    def masker_bf16(x, c):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return explain(fused, x)

    def masker_separate(x, c):  # the same without sharing: black box pass + masking model pass
        with torch.inference_mode():
            top = box(x).argmax(1)
            return fused(x, top).mask

    methods = {
        "forward (floor)": forward,
        "masking model": masker,
        "masking model, BatchNorm not folded": masker_unfused,
        "masking model, NCHW layout": masker_nchw,
        "masking model, bf16 autocast": masker_bf16,
        "masking model, separate black-box pass": masker_separate,
    }
    if onnx_run is not None:
        methods[ONNX_ROW] = onnx_run
    for name in ("gradient", "gradcam"):
        m = create_method(name, box)
        methods[f"{name} (rtsal)"] = m.explain
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from rtsal.methods.gradcam import default_target_layer

        layer_name = default_target_layer(box.network, torch.rand(1, 3, size, size))
        layer = dict(box.network.named_modules())[layer_name]
        cam = GradCAM(model=box, target_layers=[layer])

        def gradcam_ref(x, c):  # its hooks need a graph: frozen weights, so grad on the input
            return cam(
                input_tensor=x.clone().requires_grad_(True),
                targets=[ClassifierOutputTarget(int(k)) for k in c],
            )

        methods["gradcam (pytorch-grad-cam)"] = gradcam_ref
    except ImportError:
        pass
    it = create_method("iterative-mask", box, steps=iterative_steps)
    methods["iterative mask"] = it.explain  # timed for iterative_steps, reported for 300
    methods["contrast"] = create_method("contrast", box).explain
    return methods


def is_slow(name: str) -> bool:
    return name.startswith("iterative") or name == "contrast"


def timed(fn, x, c) -> float:
    t0 = time.perf_counter()
    fn(x, c)
    return time.perf_counter() - t0


def interleaved(methods: dict, x, c, rounds: int) -> dict[str, dict]:
    """Median seconds per call, and median ratio to the forward pass, over interleaved rounds.

    Fast methods run once per round, in an order rotated every round; slow methods run once,
    after the middle round, and are compared with that round's forward pass.
    """
    fast = [k for k in methods if not is_slow(k)]
    slow = [k for k in methods if is_slow(k)]
    floor = fast[0]
    for k in fast:
        methods[k](x, c)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in methods}
    ratios: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(rounds):
        order = fast[r % len(fast) :] + fast[: r % len(fast)]
        round_times = {k: timed(methods[k], x, c) for k in order}
        for k in fast:
            times[k].append(round_times[k])
            ratios[k].append(round_times[floor] / round_times[k])
        if r == rounds // 2:
            for k in slow:
                times[k].append(timed(methods[k], x, c))
                ratios[k].append(round_times[floor] / times[k][-1])
    return {
        k: {"seconds": statistics.median(times[k]), "x_forward": statistics.median(ratios[k])}
        for k in methods
    }


def memory_child(config: str, method: str, batch: int, masker_ckpt: str | None) -> None:
    """One method, one configuration, in this fresh process: print the peak extra MB of the
    first two calls (the first one builds every buffer) above the process after set-up."""
    box, model, size = setup(config, masker_ckpt)
    methods = runners(box, model, size, 1, with_onnx=method == ONNX_ROW)
    fn = methods[method]
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    c = torch.randint(0, box.num_classes, (batch,))
    with PeakRSS() as mem:
        for _ in range(2):
            fn(x, c)
    print(json.dumps({"peak_extra_mb": mem.extra}))


def measure_memory(config: str, method: str, batch: int, args) -> float:
    cmd = [sys.executable, __file__, "--memory-child", config, method, "--batch", str(batch)]
    if args.masker:
        cmd += ["--masker", args.masker]
    cmd.append("--system-malloc")  # freed blocks go back: the resident set follows live memory
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"memory measurement of {method} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="lite0,resnet50,cifar")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument(
        "--iterative-steps",
        type=int,
        default=10,
        help="measured steps; the table scales the time to 300 steps",
    )
    ap.add_argument("--masker", default=None, help="Lite0 masking-model checkpoint")
    ap.add_argument(
        "--methods",
        default=None,
        help="measure only the methods whose name contains one of these comma-separated words "
        "(the forward row is always kept: the table is relative to it)",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method memory runs")
    ap.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep the C library's malloc defaults (rtsal's command line changes them)",
    )
    ap.add_argument("--memory-child", nargs=2, metavar=("CONFIG", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default="docs/performance.md")
    ap.add_argument("--json", default="runs/bench-speed.json")
    args = ap.parse_args()
    if not args.system_malloc:
        from rtsal.allocator import keep_freed_memory

        keep_freed_memory()  # as the rtsal command does
    torch.manual_seed(0)
    if args.memory_child:
        memory_child(*args.memory_child, args.batch, args.masker)
        return
    words = [w.strip().lower() for w in (args.methods or "").split(",") if w.strip()]

    def wanted(name: str) -> bool:
        return not words or name.startswith("forward") or any(w in name.lower() for w in words)

    results = []
    for cfg_name in args.configs.split(","):
        box, model, size = setup(cfg_name, args.masker)
        with_onnx = cfg_name == "lite0" and wanted(ONNX_ROW)
        methods = runners(box, model, size, args.iterative_steps, with_onnx)
        methods = {k: v for k, v in methods.items() if wanted(k)}
        for bs in (args.batch, 1):
            x = torch.rand(bs, 3, size, size).contiguous(memory_format=torch.channels_last)
            c = torch.randint(0, box.num_classes, (bs,))
            timing = interleaved(methods, x, c, args.rounds)
            for name in methods:
                sec, ratio = timing[name]["seconds"], timing[name]["x_forward"]
                if name == "iterative mask":  # scale the measured steps to 300
                    sec *= 300 / args.iterative_steps
                    ratio *= args.iterative_steps / 300
                    name_out = "iterative mask (300 steps)"
                else:
                    name_out = name
                extra = None
                if bs == args.batch and not args.no_memory:
                    extra = measure_memory(cfg_name, name, bs, args)
                results.append(
                    {
                        "config": cfg_name,
                        "size": size,
                        "batch": bs,
                        "method": name_out,
                        "seconds": sec,
                        "images_per_s": bs / sec,
                        "x_forward": ratio,
                        "peak_extra_mb": extra,
                    }
                )
                mem = "" if extra is None else f"  +{extra:7.0f} MB"
                print(
                    f"{cfg_name:9s} b{bs:<3d} {name_out:42s} {bs / sec:9.2f} img/s "
                    f"{1000 * sec / bs:9.1f} ms/img  x{ratio:.3f} fwd{mem}",
                    flush=True,
                )
    from rtsal.allocator import allocator_description

    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "allocator": allocator_description(),
    }
    command = "python bench/speed.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in vars(args).items()
        if v not in (None, False)
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps({"command": command, "machine": machine, "results": results}, indent=2) + "\n"
    )
    write_markdown(Path(args.out), command, machine, results, args.batch)


def write_markdown(path: Path, command: str, machine: dict, results: list[dict], batch: int):
    lines = [
        "## Explanation speed",
        "",
        f"Measured with `{command}` on {machine['cpu']} ({machine['cores']} cores, "
        f"{machine['threads']} torch threads), torch {machine['torch']}, Python "
        f"{machine['python']}, {machine['allocator']}. One process, all methods in the same run "
        "on the same images, timed in interleaved rounds after a warm-up: each time is the "
        "median over the rounds and each ratio the median of the per-round ratios to the "
        "forward pass (the iterative mask and the contrast method are timed once, mid-run). "
        "The iterative mask is timed for a few Adam steps and scaled to 300. Peak memory is the "
        "resident set above the process after set-up while the method explains its first two "
        "batches, each method in a fresh process with the C library's default malloc (so the "
        "resident set follows the memory in use).",
        "",
    ]
    for cfg_name in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == cfg_name]
        size = rows[0]["size"]
        lines += [
            f"### {cfg_name} at {size} px",
            "",
            f"| method | img/s at batch {batch} | × forward | ms per image at batch 1 | "
            f"peak extra MB (batch {batch}) |",
            "|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["batch"] == batch):
            lat = next(q for q in rows if q["batch"] == 1 and q["method"] == r["method"])
            mem = "–" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.0f}"
            lines.append(
                f"| {r['method']} | {r['images_per_s']:.2f} | {r['x_forward']:.3f} | "
                f"{1000 * lat['seconds']:.1f} | {mem} |"
            )
        lines.append("")
    write_section(path, "bench/speed.py", "\n".join(lines))


if __name__ == "__main__":
    main()
