"""Returns, normalized returns and confidence intervals: one place, one kind of CI.

The CI is a stratified percentile bootstrap (``scipy.stats.bootstrap``) of the mean over seeds of
each seed's mean episode return: episodes are resampled with replacement *within* each seed (the
strata), as rliable's stratified bootstrap does with runs within tasks (Agarwal et al. 2021). With
one seed it is the ordinary bootstrap of the mean return. The quickstart and the benchmark both
report it.

Normalized return: ``(R - R_random) / (R_demonstrator - R_random)`` (random → 0, demonstrator → 1),
both references measured on the same levels.

Dimension keys: S seeds, E episodes of a seed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000


def mean_over_seeds(returns_per_seed: Sequence[np.ndarray]) -> float:
    """Mean over seeds of each seed's mean return."""
    return float(np.mean([np.mean(r) for r in returns_per_seed]))


def bootstrap_ci(returns_per_seed: Sequence[np.ndarray], confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Stratified percentile-bootstrap CI of :func:`mean_over_seeds`.

    Args:
        returns_per_seed: S arrays of per-episode returns (E_s each, E_s >= 1).
        confidence: two-sided level.
        n_resamples: bootstrap resamples.
        seed: the resampling RNG's seed (fixed: the same data give the same CI).

    Returns:
        ``(low, high)``. A seed with one episode, or identical returns everywhere, gives a zero-width
        interval at the mean.

    Raises:
        ValueError: no seeds, or a seed without episodes.
    """
    from scipy.stats import bootstrap

    samples = [np.asarray(r, float).reshape(-1) for r in returns_per_seed]
    if not samples or any(len(s) == 0 for s in samples):
        raise ValueError("bootstrap_ci needs at least one seed and one episode per seed")
    mean = mean_over_seeds(samples)
    varying = [s for s in samples if len(s) >= 2 and np.ptp(s) > 0]  # the others resample to themselves
    if not varying:
        return mean, mean
    constant = sum(float(np.mean(s)) for s in samples if not (len(s) >= 2 and np.ptp(s) > 0))

    def statistic(*resampled, axis=-1):
        return (np.sum([s.mean(axis=axis) for s in resampled], axis=0) + constant) / len(samples)

    res = bootstrap(varying, statistic, n_resamples=n_resamples, confidence_level=confidence,
                    method="percentile", vectorized=True, paired=False, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def normalized_return(mean: float, random_mean: float, demonstrator_mean: float) -> float:
    """``(R - R_random) / (R_demonstrator - R_random)``; NaN when the two references coincide."""
    gap = demonstrator_mean - random_mean
    return float((mean - random_mean) / gap) if gap != 0 else float("nan")
