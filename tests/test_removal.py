"""Evidence removal Phi(X, M) and the Gaussian blur it uses."""

import pytest
import torch

from rtsal.engine.removal import (
    EvidenceRemoval,
    RemovalConfig,
    alternative_image,
    apply_mask,
    gaussian_blur,
    gaussian_kernel1d,
)


def test_apply_mask_one_keeps_image_zero_gives_alternative():
    torch.manual_seed(0)
    x, a = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.equal(apply_mask(x, torch.ones(2, 1, 8, 8), a), x)
    assert torch.equal(apply_mask(x, torch.zeros(2, 1, 8, 8), a), a)


def test_apply_mask_interpolates_per_pixel():
    x, a = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    m = torch.tensor([[0.0, 0.25], [0.5, 1.0]]).view(1, 1, 2, 2)
    out = apply_mask(x, m, a)
    assert torch.allclose(out, m.expand(1, 3, 2, 2))


def test_removal_at_one_is_identity():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(EvidenceRemoval()(x, torch.ones(4, 1, 16, 16)), x)


def classify_alternatives(x, out, cfg):
    """Per sample: 'blur' if it equals the blurred X, 'solid' if it is colour + noise."""
    H = x.shape[-2]
    blurred = gaussian_blur(x, cfg.blur_sigma * H / 224.0)
    kinds = []
    for b in range(x.shape[0]):
        if torch.allclose(out[b], blurred[b], atol=1e-6):
            kinds.append("blur")
            continue
        means = out[b].mean(dim=(1, 2))
        stds = out[b].std(dim=(1, 2))
        # noise std 0.1 over 1024 pixels: the mean is off by ~0.003
        assert (means >= cfg.color_low - 0.02).all() and (means <= cfg.color_high + 0.02).all()
        assert torch.allclose(stds, torch.full_like(stds, cfg.noise_std), rtol=0.15)
        kinds.append("solid")
    return kinds


def test_removal_at_zero_is_blur_or_colour_plus_noise():
    torch.manual_seed(0)
    # the blurred image has channel means near 0.5, outside the colour range [0.1, 0.3]
    cfg = RemovalConfig(color_low=0.1, color_high=0.3, noise_std=0.1)
    x = torch.rand(24, 3, 32, 32)
    out = EvidenceRemoval(cfg)(x, torch.zeros(24, 1, 32, 32))
    kinds = classify_alternatives(x, out, cfg)
    assert set(kinds) == {"blur", "solid"}  # 50 % each; 24 samples make both certain enough


def test_removal_default_config_at_zero():
    torch.manual_seed(3)
    cfg = RemovalConfig()
    x = torch.rand(16, 3, 32, 32) * 0.1 + 0.9  # bright image: blur stays near 0.95
    out = EvidenceRemoval(cfg)(x, torch.zeros(16, 1, 32, 32))
    assert set(classify_alternatives(x, out, cfg)) == {"blur", "solid"}


def test_blur_prob_one_and_zero():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 32, 32)
    zero = torch.zeros(6, 1, 32, 32)
    blur_cfg = RemovalConfig(blur_prob=1.0)
    assert set(classify_alternatives(x, EvidenceRemoval(blur_cfg)(x, zero), blur_cfg)) == {"blur"}
    solid_cfg = RemovalConfig(blur_prob=0.0, color_low=0.7, color_high=0.9)
    kinds = classify_alternatives(x, EvidenceRemoval(solid_cfg)(x, zero), solid_cfg)
    assert set(kinds) == {"solid"}


def test_blur_sigma_scales_with_image_size():
    # at 112 px the blur sigma is half the 224 px value
    torch.manual_seed(0)
    x = torch.rand(2, 3, 112, 112)
    alt = alternative_image(x, RemovalConfig(blur_prob=1.0, blur_sigma=10.0))
    assert torch.allclose(alt, gaussian_blur(x, 5.0), atol=1e-6)
    assert not torch.allclose(alt, gaussian_blur(x, 10.0), atol=1e-3)


def test_fresh_alternative_on_each_call():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    m = torch.full((4, 1, 16, 16), 0.5)
    phi = EvidenceRemoval(RemovalConfig(blur_prob=0.0))
    assert not torch.allclose(phi(x, m), phi(x, m))


def test_generator_makes_removal_reproducible():
    x = torch.rand(4, 3, 16, 16)
    m = torch.zeros(4, 1, 16, 16)
    a = EvidenceRemoval(None, torch.Generator().manual_seed(5))(x, m)
    b = EvidenceRemoval(None, torch.Generator().manual_seed(5))(x, m)
    assert torch.equal(a, b)


def test_preserved_noise_is_added_to_kept_pixels():
    torch.manual_seed(0)
    x = torch.full((2, 3, 32, 32), 0.5)
    out = EvidenceRemoval(RemovalConfig(preserved_noise_std=0.05))(x, torch.ones(2, 1, 32, 32))
    assert (out - x).std().item() == pytest.approx(0.05, rel=0.1)


# --------------------------------------------------------------------------- blur


def test_kernel_is_normalised_and_symmetric():
    k = gaussian_kernel1d(2.0)
    assert k.numel() == 2 * 6 + 1  # radius ceil(3 sigma)
    assert k.sum().item() == pytest.approx(1.0)
    assert torch.allclose(k, k.flip(0))


@pytest.mark.parametrize("size", [(32, 32), (4, 6)])  # 4x6: radius larger than the image
def test_blur_keeps_constant_image(size):
    x = torch.full((2, 3, *size), 0.37)
    y = gaussian_blur(x, 3.0)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1e-6)


def test_blur_with_zero_sigma_is_identity():
    x = torch.rand(1, 1, 5, 5)
    assert gaussian_blur(x, 0.0) is x


def test_blur_keeps_impulse_sum_and_spread_matches_sigma():
    sigma, n, c = 3.0, 64, 32
    x = torch.zeros(1, 1, n, n)
    x[0, 0, c, c] = 1.0  # radius 9: far from the borders
    y = gaussian_blur(x, sigma)[0, 0].double()
    assert y.sum().item() == pytest.approx(1.0, rel=1e-5)
    t = torch.arange(n, dtype=torch.float64)
    rows, cols = y.sum(1), y.sum(0)
    assert (rows * t).sum().item() == pytest.approx(c, abs=1e-5)
    assert (cols * t).sum().item() == pytest.approx(c, abs=1e-5)
    # truncation at 3 sigma lowers the variance by ~3 %
    assert (rows * (t - c) ** 2).sum().item() == pytest.approx(sigma**2, rel=0.05)
    assert (cols * (t - c) ** 2).sum().item() == pytest.approx(sigma**2, rel=0.05)
    # separable: the 2-D response is the outer product of its marginals
    assert torch.allclose(y, rows[:, None] * cols[None, :], atol=1e-7)


def test_blur_is_per_channel():
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0] = 1.0
    y = gaussian_blur(x, 2.0)
    assert torch.allclose(y[0, 0], torch.ones(16, 16), atol=1e-6)
    assert torch.equal(y[0, 1], torch.zeros(16, 16))


def test_blur_prob_override_chooses_the_alternative():
    """``blur_prob`` given per call (the preserve term's ``--keep-blur-prob``): 0 never blurs,
    1 always does; the draws are the same, so only the choice changes."""
    from rtsal.engine.removal import EvidenceRemoval, RemovalConfig, gaussian_blur

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    empty = torch.zeros(4, 1, 32, 32)  # everything removed: Phi(X, 0) = A
    phi = EvidenceRemoval(RemovalConfig(noise_std=0.0))
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    solid = phi(x, empty, gens, blur_prob=0.0)
    assert torch.all(solid.flatten(2).std(2) == 0)  # one colour per image and channel
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    blurred = phi(x, empty, gens, blur_prob=1.0)
    assert torch.allclose(blurred, gaussian_blur(x, 10.0 * 32 / 224))
