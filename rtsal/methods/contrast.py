"""Saliency by gradient descent on the input, refined with superpixels and colour contrast
(Pan, Wang & Jiang, "Deep Learning for Object Saliency Detection and Image Segmentation", 2015).

For class l with logits ``o_k`` of the original image X0, a few steps of
``X <- X - eps * max(dF/dX, 0)`` lower ``F(X) = a_l + (gamma / 2) sum_{k != l} (a_k - o_k)^2``:
the class score ``a_l`` falls while the other scores are held near their original values. The
pixels that had to change are the class's evidence: ``S = mean_rgb(X0 - XT)``. The raw map is
scaled to [0, 1] and thresholded, averaged inside SLIC superpixels, multiplied by a low-level map
(global LAB colour contrast between superpixels, scaled to [alpha, 1 + alpha]), pruned and
scaled to [0, 1] again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rtsal.errors import RtsalError
from rtsal.methods._gradients import check_inputs, gradients_enabled


def descend_on_input(
    black_box: Any,
    images: torch.Tensor,  # (B, C, H, W) in [0, 1]
    classes: torch.Tensor,  # (B,)
    *,
    gamma: float,
    epsilon: float,
    steps: int,
) -> torch.Tensor:
    """``X^(T)`` after ``steps`` updates ``X <- X - epsilon * max(dF/dX, 0)``; (B, C, H, W).

    ``F(X) = a_l + (gamma / 2) sum_{k != l} (a_k - o_k)^2``, ``a`` the logits of X, ``o`` those
    of the original image. Pixels only ever decrease, and X is not clipped to [0, 1].
    """
    with gradients_enabled():
        x0 = images.detach().clone()  # (B, C, H, W)
        with torch.no_grad():
            original = black_box(x0)  # o: (B, K)
        others = torch.ones_like(original).scatter_(1, classes[:, None], 0.0)  # (B, K): k != l
        x = x0
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            logits = black_box(x)  # a: (B, K)
            own = logits.gather(1, classes[:, None]).squeeze(1)  # a_l: (B,)
            drift = ((logits - original).pow(2) * others).sum(1)  # (B,)
            objective = own + 0.5 * gamma * drift  # F: (B,)
            (grad,) = torch.autograd.grad(objective.sum(), x)  # (B, C, H, W)
            x = x.detach() - epsilon * grad.clamp(min=0)
    return x.detach()


def scale_to_unit(values: torch.Tensor) -> torch.Tensor:
    """Non-negative values divided by their maximum (all zeros stay zeros); any shape."""
    peak = values.max()
    return values / peak if peak > 0 else torch.zeros_like(values)


def _consecutive(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Labels renumbered 0..n-1 (skipping unused ids) and n."""
    ids, inverse = torch.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape), ids.numel()


def superpixel_mean(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each pixel gets the mean of ``values`` over its superpixel: (H, W), (H, W) int -> (H, W)."""
    segments, n = _consecutive(labels)
    flat = segments.flatten()  # (H*W,)
    sums = values.new_zeros(n).index_add_(0, flat, values.flatten())  # (n,)
    counts = torch.bincount(flat, minlength=n).to(values.dtype)  # (n,)
    return (sums / counts)[segments]


def colour_contrast(lab: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """Global colour contrast of each superpixel, scaled to [alpha, 1 + alpha]; (H, W).

    ``lab`` (3, H, W) is the image in CIE-LAB, ``labels`` (H, W) its superpixels. Superpixel i
    with mean colour ``c_i`` scores ``sum_j (n_j / N) ||c_i - c_j||``, ``n_j`` the pixels in
    superpixel j and N the pixels in the image (Cheng et al.'s region contrast without spatial
    weighting); scores are mapped linearly so the least contrasting superpixel gets ``alpha`` and
    the most contrasting ``1 + alpha`` (all ``alpha`` when every superpixel scores the same).
    """
    segments, n = _consecutive(labels)
    flat = segments.flatten()  # (H*W,)
    counts = torch.bincount(flat, minlength=n).to(lab.dtype)  # n_j: (n,)
    colours = lab.new_zeros(n, 3).index_add_(0, flat, lab.flatten(1).T) / counts[:, None]  # (n, 3)
    contrast = torch.cdist(colours, colours) @ (counts / counts.sum())  # (n,)
    spread = contrast.max() - contrast.min()
    unit = (contrast - contrast.min()) / spread if spread > 0 else torch.zeros_like(contrast)
    return (alpha + unit)[segments]


def slic_superpixels(image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC superpixels (Achanta et al., 2012) of an RGB image (H, W, 3) in [0, 1]; (H, W) int."""
    from skimage.segmentation import slic

    return slic(
        image, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1
    )


class ContrastMethod:
    """Pan, Wang & Jiang (2015): gradient descent on the input, refined by superpixels and LAB
    colour contrast.

    Pipeline per image, for class l:

    1. ``T = steps`` updates ``X <- X - epsilon * max(dF/dX, 0)`` with
       ``F(X) = a_l + (gamma / 2) sum_{k != l} (a_k - o_k)^2`` (see :func:`descend_on_input`).
    2. ``S = mean_rgb(X0 - XT)`` (>= 0), divided by its maximum; values below ``threshold`` are
       set to 0.
    3. S is averaged inside SLIC superpixels (``n_segments``, ``compactness``).
    4. S is multiplied by the global LAB colour contrast of each superpixel, scaled to
       ``[alpha, 1 + alpha]`` (see :func:`colour_contrast`).
    5. Pruned: S is divided by its maximum and values below ``prune`` set to 0; finally divided
       by its maximum again, so the mask lies in [0, 1] with its peak at 1.

    Options (defaults):
        gamma: weight of the term holding the other logits at their original values (0.01).
            The sum runs over every other class (999 for ImageNet), so it soon outweighs
            ``a_l``; with 0.01 the class score of an ImageNet EfficientNet-Lite0 keeps falling
            over the T steps while the other logits move by less than one unit (root mean square).
        epsilon: step size on the [0, 1] image per unit of gradient (0.05). The seed paper
            worked on mean-subtracted 0-255 pixels; on [0, 1] images the largest input
            gradients of an ImageNet classifier's logits are of order 1, so the first step moves
            the most sensitive pixels by about 0.05.
        steps: T, the number of descent steps (5; the seed paper uses 5-10).
        threshold: fraction of the raw map's maximum below which it is set to 0 (0.05).
        n_segments: approximate number of SLIC superpixels (100).
        compactness: SLIC compactness (10).
        alpha: lower end of the contrast map's range [alpha, 1 + alpha] (0.5), i.e. the least
            contrasting superpixel keeps alpha / (1 + alpha) of the weight of the most
            contrasting one.
        prune: fraction of the refined map's maximum below which it is set to 0 (0.1).

    Superpixels and LAB colours come from scikit-image on the CPU (images are clipped to [0, 1]
    for them; one-channel images are repeated to RGB).
    """

    def __init__(
        self,
        black_box: Any,
        *,
        gamma: float = 0.01,
        epsilon: float = 0.05,
        steps: int = 5,
        threshold: float = 0.05,
        n_segments: int = 100,
        compactness: float = 10.0,
        alpha: float = 0.5,
        prune: float = 0.1,
    ) -> None:
        if steps < 1:
            raise RtsalError(f"steps must be >= 1, got {steps}")
        if n_segments < 1:
            raise RtsalError(f"n_segments must be >= 1, got {n_segments}")
        if alpha < 0:
            raise RtsalError(f"alpha must be >= 0, got {alpha}")
        for name, value in (("threshold", threshold), ("prune", prune)):
            if not 0.0 <= value < 1.0:
                raise RtsalError(f"{name} must lie in [0, 1), got {value}")
        self.black_box = black_box
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.steps = int(steps)
        self.threshold = float(threshold)
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.alpha = float(alpha)
        self.prune = float(prune)

    def raw_maps(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Steps 1-2 before thresholding: ``mean_rgb(X0 - XT)``; (B, H, W), >= 0."""
        xt = descend_on_input(
            self.black_box,
            images,
            classes,
            gamma=self.gamma,
            epsilon=self.epsilon,
            steps=self.steps,
        )
        return (images.detach() - xt).mean(dim=1).clamp(min=0)  # (B, H, W)

    def refine(self, raw: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Steps 2-5 for one image: raw map (H, W), image (C, H, W) in [0, 1] -> (H, W)."""
        from skimage.color import rgb2lab

        if image.shape[0] not in (1, 3):
            raise RtsalError(f"the contrast method needs 1 or 3 channels, got {image.shape[0]}")
        rgb = image.detach().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0)  # (H, W, 3)
        rgb_np = rgb.double().cpu().numpy()
        labels = torch.from_numpy(
            slic_superpixels(rgb_np, self.n_segments, self.compactness).astype(np.int64)
        ).to(raw.device)  # (H, W)
        lab = torch.from_numpy(rgb2lab(rgb_np)).permute(2, 0, 1).to(raw)  # (3, H, W)

        saliency = scale_to_unit(raw)  # (H, W)
        saliency = torch.where(saliency < self.threshold, 0.0, saliency)
        saliency = superpixel_mean(saliency, labels)
        saliency = saliency * colour_contrast(lab, labels, self.alpha)
        saliency = scale_to_unit(saliency)
        saliency = torch.where(saliency < self.prune, 0.0, saliency)
        return scale_to_unit(saliency)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        classes = check_inputs(images, classes)  # (B,)
        raw = self.raw_maps(images, classes)  # (B, H, W)
        with gradients_enabled():  # plain tensors even under the caller's inference mode
            masks = [self.refine(r, im) for r, im in zip(raw, images, strict=True)]
        return torch.stack(masks)[:, None].to(images.dtype)  # (B, 1, H, W)
