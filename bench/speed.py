"""Explanation speed, measured side by side in one run on the same black box and images.

For each black box: the black box's forward pass alone (the floor), the masking model (one
encoder pass shared with the black box gives the prediction and the mask), gradient, Grad-CAM
(rtsal's and pytorch-grad-cam's), the iterative mask baseline and the contrast method; for
EfficientNet-Lite0 also the masking model exported to ONNX and run by ONNX Runtime.
Throughput at batch 32, latency at batch 1, peak resident memory above the resting process.
Writes a Markdown table with the machine and versions to --out.

    python bench/speed.py --out docs/performance.md
    python bench/speed.py --configs lite0 --methods onnx --out /tmp/speed.md  # one row (+ floor)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import torch


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
    from rtsal.blackbox import create_black_box
    from rtsal.checkpoint import load_masker
    from rtsal.classifier import build_classifier
    from rtsal.model import MaskerConfig, build_masking_model

    torch.manual_seed(0)
    if name == "lite0":
        if masker_ckpt:
            model, box, _ = load_masker(masker_ckpt)
        else:
            from rtsal.explain import default_checkpoint

            model, box, _ = load_masker(default_checkpoint())
        return box, model.eval(), 224
    if name == "resnet50":
        box = create_black_box("resnet50", pretrained=False)
        cfg = MaskerConfig(num_classes=1000, encoder="blackbox", embedding="classifier-init")
        return box, build_masking_model(cfg, box).eval(), 224
    if name == "cifar":
        from rtsal.blackbox import BlackBox
        from rtsal.data import CIFAR10_CLASSES

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

    from rtsal.export import ExportableMasker, export_onnx

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

    Everything runs in channels-last layout, as `rtsal explain` does; one row keeps the masking
    model in the default (NCHW) layout to show what the layout is worth, one runs it under bf16
    autocast, one is the masking model exported to ONNX (``with_onnx``).
    """
    import copy

    from rtsal.methods import create_method

    onnx_run = onnx_runner(box, model, size) if with_onnx else None  # before channels-last
    nchw_model = copy.deepcopy(model)  # its encoder is a copy of the black box's network
    box.to(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)

    def forward(x, c):
        with torch.inference_mode():
            return box(x)

    def masker(x, c):  # what `rtsal explain` does: one encoder pass, top-1 class, mask
        with torch.inference_mode():
            feats = model.encode(x, with_logits=True)
            return model.decode(feats, feats.logits.argmax(1), x.shape[-2:]).mask

    def masker_nchw(x, c):
        x = x.contiguous()
        with torch.inference_mode():
            feats = nchw_model.encode(x, with_logits=True)
            return nchw_model.decode(feats, feats.logits.argmax(1), x.shape[-2:]).mask

    def masker_bf16(x, c):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return masker(x, c)

    def masker_separate(x, c):  # the same without sharing: black box pass + masking model pass
        with torch.inference_mode():
            top = box(x).argmax(1)
            return model(x, top).mask

    methods = {
        "forward (floor)": forward,
        "masking model": masker,
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

        from rtsal.explainers.gradcam import default_target_layer

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
    methods[f"iterative mask ({iterative_steps} steps)"] = it.explain
    methods["contrast"] = create_method("contrast", box).explain
    return methods


def measure(fn, x, c, repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` timed calls after a warm-up (the least disturbed by other load)."""
    fn(x, c)  # warm-up
    times = []
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x, c)
            times.append(time.perf_counter() - t0)
    return min(times), mem.extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="lite0,resnet50,cifar")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
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
    ap.add_argument("--out", default="docs/performance.md")
    ap.add_argument("--json", default="runs/bench-speed.json")
    args = ap.parse_args()
    torch.manual_seed(0)
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
            for name, fn in methods.items():
                slow = name.startswith("iterative") or name == "contrast"
                reps = 1 if slow else args.repeats
                sec, extra = measure(fn, x, c, reps)
                if name.startswith("iterative"):  # scale the measured steps to 300
                    sec *= 300 / args.iterative_steps
                    name_out = "iterative mask (300 steps)"
                else:
                    name_out = name
                results.append(
                    {
                        "config": cfg_name,
                        "size": size,
                        "batch": bs,
                        "method": name_out,
                        "seconds": sec,
                        "images_per_s": bs / sec,
                        "peak_extra_mb": extra,
                    }
                )
                print(
                    f"{cfg_name:9s} b{bs:<3d} {name_out:42s} {bs / sec:9.2f} img/s "
                    f"{1000 * sec / bs:9.1f} ms/img  +{extra:7.0f} MB",
                    flush=True,
                )
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    command = "python bench/speed.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None
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
        f"{machine['python']}. One process, all methods in the same run on the same images; "
        "times are the best of the repeats after a warm-up. The iterative mask is timed for a "
        "few Adam steps and scaled to 300. Peak memory is the resident set above the resting "
        "process while the method runs.",
        "",
    ]
    for cfg_name in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == cfg_name]
        size = rows[0]["size"]
        fwd = next(r for r in rows if r["batch"] == batch and r["method"].startswith("forward"))
        lines += [
            f"### {cfg_name} at {size} px",
            "",
            f"| method | img/s at batch {batch} | × forward | ms per image at batch 1 | "
            f"peak extra MB (batch {batch}) |",
            "|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["batch"] == batch):
            lat = next(q for q in rows if q["batch"] == 1 and q["method"] == r["method"])
            lines.append(
                f"| {r['method']} | {r['images_per_s']:.2f} | "
                f"{r['images_per_s'] / fwd['images_per_s']:.3f} | "
                f"{1000 * lat['seconds']:.1f} | {r['peak_extra_mb']:.0f} |"
            )
        lines.append("")
    begin, end = "<!-- bench/speed.py: begin -->", "<!-- bench/speed.py: end -->"
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else "# Performance\n\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
