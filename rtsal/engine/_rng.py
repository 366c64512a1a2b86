"""Randomness keyed by what it is for: ``(seed, epoch, sample)`` or ``(seed, step, sample)``.

Every random draw in training (augmentation, fake class selectors, the alternative image of the
evidence removal) comes from a generator seeded by such a key. The result does not depend on how
samples are spread over processes (one process or several under torchrun), on data-loading
workers, or on where a run was interrupted and resumed.
"""

from __future__ import annotations

import torch

_M64 = (1 << 64) - 1

# streams: one per purpose, so draws for different purposes never collide
AUGMENT, SELECTOR, REMOVAL_KEEP, REMOVAL_DROP, MOSAIC = 1, 2, 3, 4, 5


def mix(*keys: int) -> int:
    """A 63-bit seed from integer keys (SplitMix64 finaliser over the sequence)."""
    z = 0x9E3779B97F4A7C15
    for k in keys:
        z = (z ^ (int(k) & _M64)) * 0xBF58476D1CE4E5B9 & _M64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _M64
        z ^= z >> 31
    return z & ((1 << 63) - 1)


def generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix(*keys))


def sample_generators(seed: int, key: int, stream: int, indices) -> list[torch.Generator]:
    """One generator per sample, keyed by (seed, key, stream, global sample index)."""
    return [generator(seed, key, stream, int(i)) for i in indices]
