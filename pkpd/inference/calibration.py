r"""Uniformity of simulation-based calibration ranks: the ECDF test with simultaneous bands.

Under a calibrated fit, the rank of a true value among ``L`` (thinned) posterior draws is
uniform on ``{0, ..., L}`` (Talts et al. 2018, "Validating Bayesian inference algorithms with
simulation-based calibration", arXiv:1804.06788). The test here is the graphical test of
Säilynoja, Bürkner and Vehtari (2022, "Graphical test for discrete uniformity and its
applications in goodness-of-fit evaluation and multiple sample comparison", Statistics and
Computing 32:32), the one the SBC R package draws:

* the ranks of ``N`` replicates give an empirical CDF at ``K`` evaluation points
  ``z_i = c_i / (L + 1)`` (``c_i`` whole, so that under uniformity ``N F̂(z_i)`` is exactly
  ``Binomial(N, z_i)``);
* each point's two-sided binomial tail probability is computed, and the smallest over the
  points is the statistic ``m``;
* the band's pointwise level ``γ`` is the ``α`` quantile of ``m`` under uniformity (found by
  simulating uniform ranks), so that the whole ECDF stays inside the binomial ``γ`` intervals
  with probability ``1 − α``: a simultaneous band;
* the p-value of a quantity is the fraction of uniform simulations whose ``m`` is at most the
  observed one (a Monte Carlo p-value, ``(1 + #) / (1 + M)``).

Everything is numpy/scipy; the simulations use an explicit seed, so the same ranks give the
same band and p-values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def evaluation_points(n_ranks: int, n_replicates: int) -> np.ndarray:
    """The whole rank thresholds ``c_i`` (``1 <= c_i <= L``) where the ECDF is evaluated:
    every rank when there are no more ranks than replicates, else ``n_replicates`` evenly
    spread ones (as the SBC package evaluates at ``min(L + 1, N)`` points)."""
    n_ranks = int(n_ranks)  # L + 1 possible ranks
    k = min(n_ranks, max(int(n_replicates), 2))
    c = np.unique(np.round(np.arange(1, k) * n_ranks / k).astype(int))
    return c[(c >= 1) & (c <= n_ranks - 1)]


def _min_tail(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    """Smallest two-sided binomial tail probability over the points (last axis)."""
    lower = stats.binom.cdf(counts, n, z)
    upper = stats.binom.sf(counts - 1, n, z)
    return np.min(np.minimum(1.0, 2.0 * np.minimum(lower, upper)), axis=-1)


def _counts(ranks: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``#{rank < c_i}`` for every point, over the last axis of ``ranks``."""
    return (ranks[..., None] < c).sum(axis=-2)


@dataclass(frozen=True)
class Band:
    """A simultaneous band for the ECDF of ``n`` ranks on ``{0..L}``: evaluation points
    ``z`` (fractions), the ECDF's ``lower``/``upper`` limits there, the pointwise level
    ``gamma``, and the null statistics ``null_min_tail`` behind it."""

    n: int
    n_ranks: int
    alpha: float
    points: np.ndarray
    z: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    gamma: float
    null_min_tail: np.ndarray


def simultaneous_band(
    n: int, n_ranks: int, *, alpha: float = 0.05, n_sim: int = 4000, seed: int = 0
) -> Band:
    """The ``1 - alpha`` simultaneous band of the rank ECDF for ``n`` replicates and
    ``n_ranks`` (``L + 1``) possible ranks, by simulating ``n_sim`` uniform rank samples."""
    if n < 2 or n_ranks < 2:
        raise ValueError(f"need at least 2 replicates and 2 possible ranks (got {n}, {n_ranks})")
    c = evaluation_points(n_ranks, n)
    z = c / n_ranks
    rng = np.random.default_rng(seed)
    null = np.empty(n_sim)
    for a in range(0, n_sim, 500):
        b = min(a + 500, n_sim)
        r = rng.integers(0, n_ranks, size=(b - a, n))
        null[a:b] = _min_tail(_counts(r, c), n, z)
    gamma = float(np.quantile(null, alpha, method="lower"))
    lower = stats.binom.ppf(gamma / 2, n, z) / n
    upper = stats.binom.ppf(1 - gamma / 2, n, z) / n
    return Band(n, int(n_ranks), float(alpha), c, z, lower, upper, gamma, np.sort(null))


def ecdf(ranks, band: Band) -> np.ndarray:
    """The ECDF of ``ranks`` at the band's points: the fraction of ranks below each ``c_i``."""
    ranks = np.asarray(ranks)
    return _counts(ranks, band.points) / ranks.shape[-1]


def uniformity_p_value(ranks, band: Band) -> float:
    """Monte Carlo p-value of the ECDF test: the share of uniform samples whose smallest
    pointwise tail probability is at most that of ``ranks`` (which must be ``band.n`` ranks)."""
    ranks = np.asarray(ranks)
    if ranks.shape[-1] != band.n:
        raise ValueError(f"{ranks.shape[-1]} ranks for a band of {band.n} replicates")
    m = float(_min_tail(_counts(ranks, band.points), band.n, band.z))
    k = int(np.searchsorted(band.null_min_tail, m, side="right"))
    return (1 + k) / (1 + band.null_min_tail.size)


def outside_band(ranks, band: Band) -> bool:
    """Whether the ECDF of ``ranks`` leaves the band anywhere."""
    f = ecdf(ranks, band)
    return bool(np.any((f < band.lower - 1e-12) | (f > band.upper + 1e-12)))


def chi_square_p_value(ranks, n_ranks: int, bins: int | None = None) -> float:
    """Pearson's chi-square test of the rank histogram with ``bins`` equal bins (default:
    about N/5 bins, at most 20, so expected counts stay >= 5 where N allows)."""
    ranks = np.asarray(ranks)
    n = ranks.size
    bins = bins or int(np.clip(n // 5, 2, 20))
    bins = min(bins, n_ranks)
    edges = np.round(np.linspace(0, n_ranks, bins + 1)).astype(int)
    observed = np.histogram(ranks, bins=edges)[0]
    expected = n * np.diff(edges) / n_ranks
    return float(stats.chisquare(observed, expected).pvalue)
