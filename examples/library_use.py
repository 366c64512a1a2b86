"""rtsal as a library: a black box by name, a masking model, and a saliency mask for one image.

    python examples/library_use.py                                  # untrained model, says so
    python examples/library_use.py --checkpoint runs/masker         # a trained checkpoint
    python examples/library_use.py --image photo.jpg --class tabby --out mask.png

Without ``--image`` it uses scikit-image's ``chelsea`` photo (a cat) when scikit-image is there.
Without ``--blackbox`` it explains ``efficientnet_lite0`` (from the rtsal-efficientnet-lite plugin)
when that is installed, and the small CIFAR-10 network in ``my_model.py`` otherwise.

This shows the parts underneath; to explain images with a trained model, ``rtsal.Explainer``
does it in two lines (``Explainer.from_pretrained(checkpoint)(image, "tabby")``, docs/api.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

import rtsal
from rtsal.data.images import load_image, pil_to_tensor, tensor_to_pil
from rtsal.engine.model import MaskerConfig, MaskingModel, build_masking_model
from rtsal.registry.classes import ClassResolver
from rtsal.registry.resolve import load_masking_model


def untrained_masker(box: rtsal.BlackBox) -> MaskingModel:
    """A masking model for ``box`` as training would start it: shared encoder when possible."""
    shared = box.shares_features
    config = MaskerConfig(
        num_classes=box.num_classes,
        in_channels=box.in_channels,
        encoder="blackbox" if shared else "small",  # reuse a timm black box's own network
        embedding="classifier-init" if shared else "learned",  # C_s from the classifier rows
        mask_stride=4 if shared else 2,
    )
    return build_masking_model(config, box).eval()


def default_black_box() -> str:
    """The plugin's pretrained Lite0 if installed, else this folder's ``my_model.py:build``."""
    if rtsal.list_black_boxes("efficientnet_lite0", include_providers=False):
        return "efficientnet_lite0"
    return f"{Path(__file__).with_name('my_model.py')}:build"


def read_image(path: str | None) -> Image.Image:
    if path:
        return load_image(path)
    try:
        from skimage import data
    except ImportError:
        sys.exit("no --image given and scikit-image (for its sample photo) is not installed")
    return Image.fromarray(data.chelsea())


def to_input(image: Image.Image, box: rtsal.BlackBox) -> torch.Tensor:
    """PIL image -> (1, C, H, W) in [0, 1] at the black box's input size; it normalises itself."""
    resample = getattr(Image.Resampling, box.interpolation.upper(), Image.Resampling.BILINEAR)
    image = image.convert("RGB" if box.in_channels == 3 else "L")
    return pil_to_tensor(image.resize(box.input_size[::-1], resample))[None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--blackbox",
        help="black box name (default: efficientnet_lite0 or "
        "my_model.py:build; with --checkpoint, the one it names)",
    )
    parser.add_argument("--checkpoint", help="masking-model checkpoint directory (rtsal train)")
    parser.add_argument("--image", help="image file (default: scikit-image's chelsea)")
    parser.add_argument(
        "--class",
        dest="selector",
        help="class to explain: index, synset or name (default: top prediction)",
    )
    parser.add_argument("--out", default="mask.png", help="where to write the mask overlay")
    args = parser.parse_args(argv)
    rtsal.keep_freed_memory()  # as the rtsal command does: big tensors reuse freed pages

    if args.checkpoint:
        # the checkpoint's own black box (built from registered providers only), or the one named
        model, box, _meta = load_masking_model(args.checkpoint, black_box=args.blackbox)
        print(f"loaded masking model from {args.checkpoint} for black box {box.name!r}")
    else:
        box = rtsal.create_black_box(args.blackbox or default_black_box())
        model = untrained_masker(box)
        print(
            f"no --checkpoint: using an UNTRAINED masking model for {box.name!r}; "
            "its mask shows the plumbing, not saliency (train one with `rtsal train`)"
        )

    x = to_input(read_image(args.image), box)  # (1, C, H, W)
    with torch.no_grad():
        probs = box.probabilities(x)[0]  # (K,)
        if args.selector is None:
            cls = int(probs.argmax())
        else:
            cls = ClassResolver.for_black_box(box).resolve(args.selector)
        mask = model(x, torch.tensor([cls])).mask  # (1, 1, H, W) in [0, 1]

    print(
        f"class {cls} ({box.class_names[cls]}): p = {float(probs[cls]):.3f}; "
        f"mask covers {float(mask.mean()):.1%} of the image (mean), "
        f"{float((mask > 0.5).float().mean()):.1%} above 0.5"
    )
    overlay = x[0] * (0.25 + 0.75 * mask[0])  # dim what the mask leaves out
    side_by_side = torch.cat([x[0], overlay, mask[0].expand_as(x[0])], dim=2)
    tensor_to_pil(side_by_side).save(args.out)
    print(f"wrote {args.out} (image | image dimmed outside the mask | mask)")


if __name__ == "__main__":
    try:
        main()
    except rtsal.RtsalError as exc:  # a bad name, file or class: one line, not a traceback
        sys.exit(f"error: {exc}")
