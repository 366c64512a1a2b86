"""Evidence removal (Section 3): ``Phi(X, M) = X * M + A * (1 - M)``.

The alternative image ``A`` is drawn anew at every call: with probability ``blur_prob`` a strongly
blurred copy of X, otherwise a random constant colour plus Gaussian noise. All images are in
[0, 1]; sizes such as the blur sigma are given at 224 px and scale with the image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RemovalConfig:
    blur_prob: float = 0.5
    blur_sigma: float = 10.0  # pixels at 224 px (paper: 10; authors' code: 11)
    color_low: float = 0.0  # random colour drawn uniformly in [color_low, color_high] per channel
    color_high: float = 1.0
    noise_std: float = 0.1  # Gaussian noise added to the random colour
    preserved_noise_std: float = 0.0  # noise added to X itself (authors' code: 0.03 on (-2, 2))

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_kernel1d(sigma: float, device=None, dtype=None) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype or torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; (B, C, H, W) -> same shape."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.device, x.dtype)
    r = k.numel() // 2
    B, C, H, W = x.shape
    # reflect padding needs pad < size; clamp the radius by repeating the pad when it is not
    y = x.reshape(B * C, 1, H, W)
    ph, pw = min(r, H - 1), min(r, W - 1)
    y = F.pad(y, (pw, pw, ph, ph), mode="reflect")
    if (ph, pw) != (r, r):
        y = F.pad(y, (r - pw, r - pw, r - ph, r - ph), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))  # vertical
    y = F.conv2d(y, k.view(1, 1, 1, -1))  # horizontal
    return y.reshape(B, C, H, W)


def _draws(
    x: torch.Tensor, generator: torch.Generator | None, generators: list | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform colour (B, C, 1, 1), Gaussian noise (B, C, H, W), blur choice (B, 1, 1, 1)."""
    B, C, H, W = x.shape
    dev, dt = x.device, x.dtype
    if generators is None:

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device=dev, dtype=dt)

        return (
            rand(B, C, 1, 1),
            torch.randn(B, C, H, W, generator=generator, device=dev, dtype=dt),
            rand(B, 1, 1, 1),
        )
    # one generator per sample (CPU), so a sample's draws do not depend on its batch
    colour = torch.stack([torch.rand(C, 1, 1, generator=g) for g in generators])
    noise = torch.stack([torch.randn(C, H, W, generator=g) for g in generators])
    choice = torch.stack([torch.rand(1, 1, 1, generator=g) for g in generators])
    return colour.to(dev, dt), noise.to(dev, dt), choice.to(dev, dt)


def alternative_image(
    x: torch.Tensor,
    config: RemovalConfig,
    generator: torch.Generator | None = None,
    generators: list[torch.Generator] | None = None,
    blur_prob: float | None = None,
) -> torch.Tensor:
    """A: per sample, a blurred X (prob ``blur_prob``, default the config's) or a random colour
    with noise.

    Draws come from ``generator`` (one stream for the batch) or ``generators`` (one per sample).
    """
    u_colour, noise, u_blur = _draws(x, generator, generators)
    H = x.shape[-2]
    colour = config.color_low + (config.color_high - config.color_low) * u_colour
    solid = colour + config.noise_std * noise
    blur_prob = config.blur_prob if blur_prob is None else blur_prob
    use_blur = (u_blur < blur_prob).to(x.dtype)
    if blur_prob > 0:
        blurred = gaussian_blur(x, config.blur_sigma * H / 224.0)
        return use_blur * blurred + (1 - use_blur) * solid
    return solid


def apply_mask(x: torch.Tensor, mask: torch.Tensor, alternative: torch.Tensor) -> torch.Tensor:
    """``Phi(X, M) = X * M + A * (1 - M)``; mask (B, 1, H, W) broadcasts over channels."""
    return x * mask + alternative * (1 - mask)


class EvidenceRemoval:
    """Callable Phi with a fresh alternative image at every call."""

    def __init__(self, config: RemovalConfig | None = None, generator=None):
        self.config = config or RemovalConfig()
        self.generator = generator

    def alternative(
        self, x: torch.Tensor, generators: list | None = None, blur_prob: float | None = None
    ) -> torch.Tensor:
        return alternative_image(x, self.config, self.generator, generators, blur_prob)

    def __call__(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        generators: list | None = None,
        blur_prob: float | None = None,
    ) -> torch.Tensor:
        """Phi(X, M) with a fresh A; ``generators`` (one per sample) make the draws reproducible
        per sample; ``blur_prob`` overrides the config's share of blurred alternatives."""
        if self.config.preserved_noise_std > 0:
            if generators is None:
                noise = torch.randn(
                    x.shape, generator=self.generator, device=x.device, dtype=x.dtype
                )
            else:
                noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(
                    x.device, x.dtype
                )
            x = x + self.config.preserved_noise_std * noise
        return apply_mask(x, mask, self.alternative(x, generators, blur_prob))
