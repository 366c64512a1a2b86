"""How far a score measured on a few hundred images can be trusted.

- :func:`wilson_interval`: the 95 % interval of a rate (localisation error, pointing accuracy)
  from its count, in closed form (Wilson's score interval).
- :func:`bootstrap_interval`: the 95 % interval of a mean (the saliency metric, whose mean over
  images is pulled by a few photos the black box itself misreads) by resampling the images.
- :func:`paired_comparison`: two methods scored on the same images. For a rate, the images
  only one of them gets right decide (exact McNemar test); for a mean, the per-image differences
  are resampled (paired bootstrap), which is far tighter than comparing two separate intervals.

Every function is deterministic: the bootstrap draws from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb, sqrt

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
RESAMPLES = 2000


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a rate of ``successes`` in ``n`` trials (95 % by default)."""
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], not {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (images resampled with
    replacement ``resamples`` times)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("bootstrap_interval needs a non-empty 1-D sequence of values")
    if not np.isfinite(v).all():
        raise ValueError("bootstrap_interval: the values must be finite")
    means = _resampled_means(v, resamples, seed)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def _resampled_means(v: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for s in range(0, resamples, 256):  # bounded memory: (256, n) indices at a time
        k = min(256, resamples - s)
        out[s : s + k] = v[rng.integers(0, v.size, size=(k, v.size))].mean(1)
    return out


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: of the images exactly one method gets right,
    ``only_a`` go to A and ``only_b`` to B; under "equally good" each is a fair coin."""
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must not be negative")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(comb(n, j) for j in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class RateComparison:
    """A rate (e.g. localisation error) of A and B on the same images."""

    a: float
    b: float
    only_a: int  # images where the event (e.g. a localisation miss) happens for A only
    only_b: int
    p_value: float  # exact McNemar

    @property
    def difference(self) -> float:
        return self.a - self.b


@dataclass(frozen=True)
class MeanComparison:
    """A per-image score (e.g. the saliency metric) of A and B on the same images."""

    a: float
    b: float
    difference: float  # mean of A - B
    interval: tuple[float, float]  # 95 % paired-bootstrap interval of the difference


def compare_rates(a: Sequence[bool], b: Sequence[bool]) -> RateComparison:
    """The rate of True in ``a`` and ``b`` (paired, same images) and the McNemar test."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _check_paired(x, y)
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    return RateComparison(
        float(x.mean()), float(y.mean()), only_a, only_b, mcnemar_exact(only_a, only_b)
    )


def compare_means(
    a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0
) -> MeanComparison:
    """The means of ``a`` and ``b`` (paired, same images) and the interval of A - B."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    _check_paired(x, y)
    d = x - y
    return MeanComparison(
        float(x.mean()),
        float(y.mean()),
        float(d.mean()),
        bootstrap_interval(d, resamples=resamples, seed=seed),
    )


def _check_paired(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError("a paired comparison needs two non-empty sequences of the same length")
