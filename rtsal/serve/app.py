"""The web demo behind ``rtsal serve``: drop a photo (or point the camera) and see what the black
box looks at, computed by the same :class:`~rtsal.inference.explainer.Explainer` that ``rtsal
explain`` and the Python API use.

:class:`SaliencyDemo` is everything the page shows, as plain Python (PIL images, numbers):
top-5 classes, a class picked by name, synonym, synset or index, the mask, the overlay with the
box above a threshold, the paper's pair (image x mask, image x (1 - mask)) with the black box's
probability on each, live camera frames and the methods side by side.
:func:`rtsal.serve.page.build_app` lays it out with Gradio, which is imported only there;
:func:`rtsal.serve.server.serve` checks the address, loads the model and serves the page until
interrupted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from rtsal.boxes import mask_box
from rtsal.data.images import pil_to_tensor, tensor_to_pil
from rtsal.errors import RtsalError
from rtsal.inference.explainer import Explainer, Explanation, mask_at_size
from rtsal.inference.video import overlay_frame
from rtsal.inference.visualize import overlay
from rtsal.registry.classes import normalise_class_name

TOPK = 5
PAPER_THRESHOLD = 0.5  # the paper's box: the tightest one around every pixel above 0.5
COMPARED = ("masker", "gradcam", "gradient")  # the methods shown side by side
METHOD_LABELS = {"masker": "masking model", "gradcam": "Grad-CAM", "gradient": "gradient"}
TOP1 = "top-1"  # the class picker's value for "the black box's own prediction"
# The quickstart's photographs (scripts/quickstart.sh): scikit-image's, written as JPEG files.
EXAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")
LIVE_MAX_SIDE = 640  # camera frames above this are shrunk first (a 1280 x 720 one to 640 x 360)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


class FrameRate:
    """Frames per second over the last ``window`` seconds, one :meth:`tick` per frame."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.times: deque[float] = deque()
        self.frames = 0

    def tick(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        self.times.append(now)
        self.frames += 1
        while now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


@dataclass
class LiveFrame:
    """One camera frame explained: the overlay at the frame's size and what it shows."""

    overlay: np.ndarray  # (H, W, 3) uint8
    class_index: int
    class_name: str
    probability: float  # the black box's probability of the class on the frame
    model_seconds: float  # resizing for the model, the one pass and the mask's resize
    seconds: float  # all of it, the overlay included


@dataclass
class PhotoExplanation:
    """A photo explained for one class by one method, with the photo's top-5 classes."""

    image: Image.Image  # RGB, as given
    explanation: Explanation  # mask at the photo's resolution, probabilities, box at 0.5
    method: str
    top: list[tuple[int, float]]  # (class, probability), most probable first
    seconds: float

    @property
    def mask(self) -> torch.Tensor:  # (H, W) in [0, 1]
        return self.explanation.mask

    def numbers(self, threshold: float = PAPER_THRESHOLD) -> dict[str, Any]:
        """What the page prints and ``/explain`` returns beside the mask."""
        e = self.explanation
        box = mask_box(e.mask, threshold)
        return {
            "class_index": e.class_index,
            "class_name": e.class_name,
            "method": self.method,
            "p_image": e.p_image,
            "p_preserved": e.p_preserved,
            "p_destroyed": e.p_destroyed,
            "area": e.area,
            "box": None if e.box is None else list(e.box),
            "threshold": threshold,
            "box_at_threshold": None if box is None else list(box),
            "size": [self.image.width, self.image.height],
            "seconds": self.seconds,
        }


class SaliencyDemo:
    """What ``rtsal serve`` shows, without the page: one :class:`Explainer` (the masking model,
    or ``method``) and, built on first use, one explainer per other method on the same black
    box. Model calls take turns (one lock): the page's events and the camera share two cores."""

    def __init__(
        self,
        explainer: Explainer,
        *,
        checkpoint: str | Path | None = None,
        method: str = "masker",
        compared: Sequence[str] = COMPARED,
    ) -> None:
        self.explainer = explainer
        self.resolver = explainer.resolver
        self.checkpoint = checkpoint
        self.method = method
        self.compared = tuple(dict.fromkeys((method, *compared)))
        self._explainers: dict[str, Explainer] = {method: explainer}
        self.lock = threading.RLock()
        names = self.resolver.class_names
        shared = Counter(names)  # ImageNet has two cranes and two maillots
        self.labels = [n if shared[n] == 1 else f"{n} ({i})" for i, n in enumerate(names)]
        synonyms = getattr(explainer.black_box, "class_synonyms", None) or [(n,) for n in names]
        pairs = zip(names, synonyms, strict=True)
        self.synonyms = [tuple(dict.fromkeys((n, *s))) for n, s in pairs]
        self._terms = [{normalise_class_name(s) for s in syns} for syns in self.synonyms]
        self._by_choice = {self.choice_label(i): i for i in range(len(names))}

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        black_box: str | None = None,
        method: str = "masker",
        device: str = "auto",
        backend: str = "auto",
        *,
        weights: str | Path | None = None,
        pretrained: bool = True,
        trust_code: bool = False,
        allow_other_black_box: bool = False,
    ) -> SaliencyDemo:
        """The demo for a checkpoint (default: the shipped model) or, with ``method``, another
        method on a black box named as on the command line (default: the checkpoint's).
        ``backend`` is the masking model's (``"onnxruntime"``: about half the CPU time a frame);
        the other methods run in PyTorch. ``weights`` / ``pretrained=False``: the black box's
        weights from a file, or random (offline), as on every command."""
        explainer = Explainer(
            checkpoint,
            black_box=black_box,
            weights=weights,
            pretrained=pretrained,
            trust_code=trust_code,
            allow_other_black_box=allow_other_black_box,
            method=method,
            device=device,
            backend=backend,
        )
        return cls(explainer, checkpoint=checkpoint, method=method)

    def explainer_for(self, method: str) -> Explainer:
        """The explainer of ``method``, on this demo's black box (built once, on first use)."""
        with self.lock:
            if method not in self._explainers:
                self._explainers[method] = Explainer(
                    self.checkpoint,
                    black_box=self.explainer.black_box,
                    method=method,
                    device=self.explainer.device,
                )
            return self._explainers[method]

    # ------------------------------------------------------------------ classes
    def choice_label(self, index: int) -> str:
        """How the class picker lists class ``index``: its name, then its other names and
        synset, so that typing any of them finds it."""
        others = [s for s in self.synonyms[index] if s != self.resolver.class_names[index]]
        label = self.labels[index]
        return f"{label} · {', '.join(others)}" if others else label

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) of every class for the picker, the top-1 class first."""
        first = ("top-1: the black box's prediction", TOP1)
        return [first, *((self.choice_label(i), str(i)) for i in range(len(self.labels)))]

    def class_index(self, selector: str | int | None) -> int | None:
        """``None`` (the top-1 class) for an empty selector or ``top-1``; otherwise the class
        the resolver finds for a name, synonym, synset or index (a picker label works too).
        Unknown or ambiguous names raise :class:`~rtsal.errors.RtsalError`."""
        if selector is None:
            return None
        if isinstance(selector, str):
            text = selector.strip()
            if not text or text.lower() in (TOP1, "top1"):
                return None
            if text in self._by_choice:
                return self._by_choice[text]
            return self.resolver.resolve(text)
        return self.resolver.resolve(selector)

    def search(self, query: str, limit: int = 10) -> list[int]:
        """Classes whose name, synonyms or synset match ``query`` (an index gives that class):
        whole names first, then names holding it as whole words, then names starting with it,
        then names containing it; each group in class order."""
        q = normalise_class_name(query)
        if not q:
            return []
        if q.isdigit():
            return [int(q)] if int(q) < len(self.labels) else []
        words = f" {q} "
        ranked = []
        for i, terms in enumerate(self._terms):
            if q in terms:
                ranked.append((0, i))
            elif any(words in f" {t} " for t in terms):
                ranked.append((1, i))
            elif any(t.startswith(q) for t in terms):
                ranked.append((2, i))
            elif any(q in t for t in terms):
                ranked.append((3, i))
        return [i for _, i in sorted(ranked)[:limit]]

    # ------------------------------------------------------------------ photos
    @torch.inference_mode()
    def top_classes(self, image: Image.Image, k: int = TOPK) -> list[tuple[int, float]]:
        """The black box's ``k`` most probable classes for ``image``, as it sees the image."""
        x = self.explainer.prepare(image.convert("RGB"))[None].to(self.explainer.device)
        with self.lock:
            p = self.explainer.black_box(x).float().softmax(1)[0]
        values, indices = p.topk(min(k, p.numel()))
        return [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]

    def explain(
        self, image: Image.Image, target: int | None = None, method: str | None = None
    ) -> PhotoExplanation:
        """``image`` explained for class ``target`` (``None``: the top-1) by ``method``: the
        explanation ``rtsal explain`` writes for it, and the top-5 classes."""
        method = method or self.method
        t0 = time.perf_counter()
        image = image.convert("RGB")
        explainer = self.explainer_for(method)
        with self.lock:
            [[explanation]] = explainer.explain_batch(
                [image], classes=None if target is None else [target]
            )
            explanation.mask  # noqa: B018 -- brought to the photo's resolution here, timed
        seconds = time.perf_counter() - t0
        return PhotoExplanation(image, explanation, method, self.top_classes(image), seconds)

    def compare(
        self, image: Image.Image, target: int | None = None
    ) -> list[tuple[str, PhotoExplanation | str]]:
        """Each method of :attr:`compared` on ``image`` and class ``target`` (for ``None``, the
        top-1 class of the black box, the same for every method): an explanation, or why there
        is none (a method that cannot run on this black box)."""
        if target is None:
            target = self.top_classes(image, 1)[0][0]
        out: list[tuple[str, PhotoExplanation | str]] = []
        for method in self.compared:
            try:
                out.append((method, self.explain(image, target, method)))
            except RtsalError as exc:
                out.append((method, str(exc)))
        return out

    # ------------------------------------------------------------------ camera
    def live(
        self, frame: np.ndarray, target: int | None = None, max_side: int = LIVE_MAX_SIDE
    ) -> LiveFrame:
        """One camera frame (H, W, 3) uint8 explained for ``target`` (``None``: the top-1), as
        ``rtsal explain clip.mp4`` explains a video frame: one pass at the model's resolution,
        the mask resized to the frame and blended over it. A frame with a side above
        ``max_side`` is first shrunk by a whole factor (box filter) to fit: the model sees 224
        pixels of it anyway, and the overlay is drawn, encoded and sent at that size."""
        t0 = time.perf_counter()
        picture = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
        factor = -(-max(picture.size) // max_side)  # ceiling
        if factor > 1:
            picture = picture.reduce(factor)
        frame = np.array(picture)  # a writable copy, blended in place below
        x = self.explainer.prepare(picture)[None]
        wanted = None if target is None else torch.tensor([target])
        with self.lock:
            mask, logits, classes = self.explainer.masks(x, wanted)
        c = int(classes[0])
        p = float(logits.float().softmax(1)[0, c])
        full = mask_at_size(mask.cpu(), frame.shape[:2])[0, 0]
        t1 = time.perf_counter()
        blended = overlay_frame(frame, full)
        return LiveFrame(blended, c, self.labels[c], p, t1 - t0, time.perf_counter() - t0)


# ---------------------------------------------------------------------- pictures
def mask_picture(mask: torch.Tensor) -> Image.Image:
    """The mask (H, W) in [0, 1] as an 8-bit greyscale image: what ``rtsal explain`` writes as
    ``*.mask.png``."""
    return tensor_to_pil(mask)


def overlay_picture(
    image: Image.Image, mask: torch.Tensor, threshold: float = PAPER_THRESHOLD
) -> Image.Image:
    """The heat-map overlay of ``rtsal explain`` with the box around the pixels above
    ``threshold`` (none if no pixel is above it)."""
    picture = overlay(pil_to_tensor(image.convert("RGB")), mask[None])
    box = mask_box(mask, threshold)
    if box is not None:
        x0, y0, x1, y1 = box
        width = max(2, min(picture.size) // 150)
        draw = ImageDraw.Draw(picture)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(0, 0, 0), width=width + 2)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 255, 255), width=width)
    return picture


def pair_pictures(image: Image.Image, mask: torch.Tensor) -> tuple[Image.Image, Image.Image]:
    """The paper's pair: image x mask (what is kept) and image x (1 - mask) (what is removed)."""
    x = pil_to_tensor(image.convert("RGB"))
    return tensor_to_pil(x * mask), tensor_to_pil(x * (1 - mask))


def summary_markdown(result: PhotoExplanation, threshold: float) -> str:
    n = result.numbers(threshold)
    box = n["box_at_threshold"]
    where = "no pixel above it" if box is None else f"({box[0]}, {box[1]}) to ({box[2]}, {box[3]})"
    return (
        f"**{n['class_name']}** (class {n['class_index']}) by the {method_label(n['method'])}, "
        f"{1000 * n['seconds']:.0f} ms\n\n"
        f"| black box on | p |\n|---|---|\n"
        f"| the photo, f_c(X) | {n['p_image']:.3f} |\n"
        f"| image × mask, f_c(X·M) | {n['p_preserved']:.3f} |\n"
        f"| image × (1 − mask), f_c(X·(1−M)) | {n['p_destroyed']:.3f} |\n\n"
        f"Mask area {n['area']:.3f}; box at {threshold:.2f}: {where}."
    )


def write_example_photos(folder: Path, names: Sequence[str] = EXAMPLE_PHOTOS) -> list[Path]:
    """The quickstart's photographs (scikit-image's) as JPEG files in ``folder``."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path, quality=95)
        paths.append(path)
    return paths
