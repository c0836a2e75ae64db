"""The one statistics module: stratified bootstrap CI and normalized return."""

from __future__ import annotations

import numpy as np
import pytest

from lapo.stats import bootstrap_ci, mean_over_seeds, normalized_return


def test_normalized_return_maps_random_to_0_and_demonstrator_to_1():
    assert normalized_return(3.0, 3.0, 8.0) == 0.0 and normalized_return(8.0, 3.0, 8.0) == 1.0
    assert normalized_return(5.5, 3.0, 8.0) == pytest.approx(0.5)
    assert np.isnan(normalized_return(5.0, 4.0, 4.0))


def test_ci_covers_the_mean_and_narrows_with_more_episodes():
    rng = np.random.default_rng(0)
    few, many = rng.normal(5, 2, 20), rng.normal(5, 2, 2000)
    lo_f, hi_f = bootstrap_ci([few])
    lo_m, hi_m = bootstrap_ci([many])
    assert lo_f < few.mean() < hi_f and lo_m < many.mean() < hi_m
    assert 5 * (hi_m - lo_m) < hi_f - lo_f  # ~ 1/sqrt(n): 10x narrower for 100x episodes
    assert 0.7 < (hi_m - lo_m) / (2 * 1.96 * 2 / np.sqrt(2000)) < 1.3  # close to the normal approximation


def test_stratified_over_seeds_and_degenerate_strata():
    same = [np.full(50, 3.0)] * 3
    assert bootstrap_ci(same) == (3.0, 3.0)
    seeds = [np.array([0.0, 10.0] * 25), np.array([7.0]), np.full(30, 4.0)]  # 1-episode and constant seeds
    lo, hi = bootstrap_ci(seeds)
    assert mean_over_seeds(seeds) == pytest.approx((5 + 7 + 4) / 3) and lo < mean_over_seeds(seeds) < hi
    assert hi - lo < bootstrap_ci([seeds[0]])[1] - bootstrap_ci([seeds[0]])[0]  # one varying stratum of three
    assert bootstrap_ci(seeds) == (lo, hi)  # seeded: the same data give the same CI
    with pytest.raises(ValueError, match="one episode per seed"):
        bootstrap_ci([np.array([1.0]), np.array([])])
