"""What a user gets by default: the shipped masking model through ``rtsal.Explainer()`` with its
default back end, against the black box's own PyTorch forward pass, in one interleaved run.

    python bench/default_path.py --rounds 7 --out docs/performance.md

Rows (Lite0 at 224 px, real ImageNet photos from ``../shared/data/imagenet-sample``, or
scikit-image's photographs where that folder is absent):

- ``forward``: ``box(x)`` under ``torch.inference_mode()`` — the black box's own PyTorch pass,
  the floor every explanation is measured against;
- ``Explainer(), default back end``: ``Explainer()(x)``, top-1 class, masks at the input's size
  (what ``rtsal explain`` and the Python API give without options);
- ``Explainer(backend="pytorch")``: the same through the PyTorch masking model.

Batches of 32 and of 1; then the PyTorch masking model's encoder and decoder timed apart at
batch 1 (where its cost above the forward pass goes). ``--also CKPT`` adds the rows and the
decoder time of another checkpoint for the same black box (a cheaper decoder, say). Each round
times every row once, in turn, so that the machine's drift touches all rows alike; the table
gives the median over rounds and its ratio to the forward pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-sample"


def photos(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: real photos squashed to the model's size."""
    files = sorted(SAMPLE.glob("*.JPEG"))[::7][:n] if SAMPLE.is_dir() else []
    if files:
        ims = [Image.open(f).convert("RGB") for f in files]
    else:
        from skimage import data

        ims = [Image.fromarray(getattr(data, k)()) for k in ("chelsea", "coffee", "astronaut")]
    ims = [im.resize((size, size), Image.BILINEAR) for im in ims]
    while len(ims) < n:
        ims = ims + ims
    arr = np.stack([np.asarray(im) for im in ims[:n]]).astype(np.float32) / 255
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def timed(fn, x: torch.Tensor, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    return (time.perf_counter() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--out", type=Path, help="Markdown page to write the section into")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="another checkpoint for the same black box (a cheaper decoder, say): its rows too",
    )
    args = ap.parse_args()

    import rtsal
    from rtsal import Explainer

    rtsal.keep_freed_memory()  # as the rtsal command does
    auto = Explainer()
    pytorch = Explainer(backend="pytorch")
    box = pytorch.black_box
    size = box.input_size[0]

    def forward(x):
        with torch.inference_mode():
            return box(x)

    rows = {
        "forward (the black box in PyTorch)": forward,
        f"Explainer(), default back end ({auto.backend_name})": auto,
        'Explainer(backend="pytorch")': pytorch,
    }
    decoders = {"shipped": pytorch}
    for ckpt in args.also:
        other = Explainer(ckpt, backend="pytorch")
        rows[f"Explainer({ckpt.name}), default back end"] = Explainer(ckpt)
        rows[f'Explainer({ckpt.name}, backend="pytorch")'] = other
        decoders[ckpt.name] = other
    batches = [int(b) for b in args.batches.split(",")]
    results: dict[int, dict[str, list[float]]] = {b: {k: [] for k in rows} for b in batches}
    for b in batches:
        x = photos(b, size)
        repeat = 2 if b >= 16 else 20
        for fn in rows.values():  # warm-up: first-call export, caches, allocator
            timed(fn, x, 2)
        for r in range(args.rounds):
            for name, fn in rows.items():
                results[b][name].append(b / timed(fn, x, repeat))
            print(f"batch {b}: round {r + 1}/{args.rounds}", file=sys.stderr)

    # where the PyTorch masker's time goes at batch 1: the encoder (the black box's own backbone
    # and head, one pass) against the decoder that turns its features into the mask
    net = pytorch.model
    with torch.inference_mode():
        x = pytorch._input(photos(1, size))
        feats = net.encode(x, with_logits=True)
        top = feats.logits.argmax(1)
        parts = {"encoder": lambda _: net.encode(x, with_logits=True)}
        for name, e in decoders.items():
            parts["decoder" if name == "shipped" else f"decoder of {name}"] = lambda _, m=e.model: (
                m.decode(feats, top, x.shape[-2:])
            )
        for fn in parts.values():
            timed(fn, x, 3)
        split = {
            k: statistics.median(timed(fn, x, 20) for _ in range(args.rounds))
            for k, fn in parts.items()
        }

    cmd = "python bench/" + Path(__file__).name + " " + " ".join(sys.argv[1:])
    threads = torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    lines = [
        "## The default path against the forward pass",
        "",
        f"`{cmd}` (`bench/default_path.py`): Lite0 at {size} px, the shipped masking model, "
        f"real photos; {args.rounds} interleaved rounds, median images per second; "
        f"{threads} threads, torch {torch.__version__}, {cpu}.",
        "",
        "| batch | row | images/s | × forward |",
        "|---|---|---|---|",
    ]
    summary = {}
    for b in batches:
        floor = statistics.median(results[b][next(iter(rows))])
        for name in rows:
            med = statistics.median(results[b][name])
            lines.append(f"| {b} | {name} | {med:.1f} | {med / floor:.2f} |")
            summary[f"{b}/{name}"] = {"images_per_s": med, "ratio": med / floor}
    enc, dec = split["encoder"] * 1e3, split["decoder"] * 1e3
    lines += [
        "",
        f"The PyTorch masking model at batch 1, its parts timed apart: encoder {enc:.1f} ms, "
        f"decoder {dec:.1f} ms ({dec / enc:.2f} of the encoder's time)"
        + "".join(
            f"; the decoder of {k[len('decoder of ') :]} {split[k] * 1e3:.1f} ms "
            f"({split[k] * 1e3 / enc:.2f})"
            for k in split
            if k.startswith("decoder of ")
        )
        + ".",
    ]
    summary["batch 1 encoder/decoder ms"] = {k: v * 1e3 for k, v in split.items()}
    text = "\n".join(lines)
    print(text)
    if args.out:
        sys.path.insert(0, str(Path(__file__).parent))
        from _markdown import write_section

        write_section(args.out, "bench/default_path.py", text)
    if args.json:
        args.json.write_text(json.dumps({"command": cmd, "rows": summary}, indent=1))


if __name__ == "__main__":
    main()
