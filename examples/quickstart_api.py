"""rtsal's public API, cell by cell (``# %%`` cells run in VS Code, Jupyter or as a script).

    python examples/quickstart_api.py                 # writes to runs/quickstart-api/
    python examples/quickstart_api.py --out somewhere/

Only ``import rtsal`` is used: the shipped masking model, Grad-CAM on the same classifier, a
Captum-style batch call, a save / load round trip (the Hugging Face Hub layout) and, when Quantus
is installed, two Quantus metrics through ``rtsal.explain_func``. The photos are scikit-image's
(a cat, a cup of coffee, an astronaut), so nothing is downloaded.
"""

# %% imports and photos
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import rtsal


def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {
        "cat": Image.fromarray(data.chelsea()),
        "coffee": Image.fromarray(data.coffee()),
        "astronaut": Image.fromarray(data.astronaut()),
    }


def save_mask(mask: torch.Tensor, path: Path) -> None:
    """A (1, H, W) or (1, 1, H, W) mask in [0, 1] as an 8-bit grey PNG."""
    a = (mask.reshape(mask.shape[-2:]).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).save(path)


def as_batch(images: list[Image.Image], size: int = 224) -> torch.Tensor:
    """PIL images -> (B, 3, size, size) floats in [0, 1], what ``attribute`` takes."""
    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        for im in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart-api"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ims = photos()
    results: dict[str, object] = {}

    # %% 1. the shipped masking model: one forward pass per image
    explainer = rtsal.Explainer()
    [[top]] = explainer.explain_batch([ims["cat"]], topk=1)
    print(
        f"cat photo: top-1 {top.class_name!r} p={top.p_image:.2f}; "
        f"p(x*M)={top.p_preserved:.2f}, p(x*(1-M))={top.p_destroyed:.2f}, area {top.area:.2f}"
    )
    mask = explainer(ims["cat"], target=top.class_index)  # (1, 1, H, W) at the photo's size
    save_mask(mask, args.out / "cat.masker.png")
    results["masker"] = mask

    # %% 2. Grad-CAM on the same classifier, same call
    gradcam = rtsal.Explainer(method="gradcam")
    cam = gradcam(ims["cat"], target=top.class_index)
    save_mask(cam, args.out / "cat.gradcam.png")
    agree = ((mask > 0.5) == (cam > 0.5)).float().mean().item()
    print(f"Grad-CAM: the two masks agree on {agree:.0%} of pixels (0.5 threshold)")
    results["gradcam"] = cam

    # %% 3. Captum's conventions: a batch already at the model's size, one int target for all
    x = as_batch([ims["cat"], ims["coffee"], ims["astronaut"]])
    attributions = explainer.attribute(x, target=top.class_index)  # (3, 1, 224, 224)
    means = [round(v, 2) for v in attributions.mean(dim=(1, 2, 3)).tolist()]
    print(
        f"attribute: {tuple(attributions.shape)}; mean of the {top.class_name!r} mask per photo "
        f"(cat, coffee, astronaut): {means}"
    )
    results["attribute"] = attributions

    # %% 4. save / load: the directory the Hugging Face Hub holds (push_to_hub uploads it)
    folder = explainer.save_pretrained(args.out / "masker", repo_id="your-name/lite0-masker")
    again = rtsal.Explainer.from_pretrained(folder)  # or "your-name/lite0-masker" from the Hub
    same = torch.equal(again(ims["cat"], target=top.class_index), mask)
    print(f"save_pretrained -> from_pretrained: identical masks: {same}")
    results["round_trip_identical"] = same

    # %% 5. Quantus metrics through rtsal.explain_func (pip install 'rtsal[quantus]')
    try:
        import quantus
    except ImportError:
        print("Quantus is not installed: pip install 'rtsal[quantus]' for this cell")
        return results
    model = explainer.black_box  # takes [0, 1] images, as explain_func does
    y = model(x).argmax(1).numpy()
    metric = quantus.Sparseness(disable_warnings=True, display_progressbar=False)
    scores = {}
    for method in ("masker", "gradcam"):
        scores[method] = metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y,
            a_batch=None,
            explain_func=rtsal.explain_func,
            explain_func_kwargs={"method": method},
            device="cpu",
        )
        print(f"Quantus Sparseness, {method}: {np.round(scores[method], 3).tolist()}")
    results["quantus"] = scores
    return results


if __name__ == "__main__":
    try:
        main()
    except rtsal.RtsalError as exc:
        sys.exit(f"error: {exc}")
