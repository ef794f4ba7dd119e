"""The leaderboard's statistics against values computed by hand on tiny inputs, and against scipy."""

import numpy as np
import pytest

from lqv_d4rl.leaderboard import stats

# three datasets ("tasks") of four seeds ("runs"); one score above 1 exercises the optimality gap
TASKS = [np.array([0.1, 0.4, 0.2, 1.3]), np.array([0.5, 0.3, 0.7, 0.6]),
         np.array([0.0, 0.0, 0.3, 0.1])]


def test_aggregates_equal_hand_computed_values():
    # task means 0.5, 0.525, 0.1
    assert stats.aggregate_mean(TASKS) == pytest.approx((0.5 + 0.525 + 0.1) / 3)
    assert stats.aggregate_median(TASKS) == pytest.approx(0.5)
    # pooled and sorted: 0 0 .1 .1 | .2 .3 .3 .4 .5 .6 | .7 1.3 -> int(0.25 * 12) = 3 cut each end
    assert stats.aggregate_iqm(TASKS) == pytest.approx((0.1 + 0.2 + 0.3 + 0.3 + 0.4 + 0.5) / 6)
    # 1.3 counts as 1: 1 - (sum 4.5 - 0.3) / 12
    assert stats.aggregate_optimality_gap(TASKS) == pytest.approx(1 - 4.2 / 12)
    np.testing.assert_allclose(stats.aggregates(TASKS), [0.5, 0.3, 0.375, 0.65])


def test_trimmed_mean_matches_scipy_on_odd_sizes():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 5, 7, 13, 60):
        values = rng.normal(size=size)
        assert stats.trimmed_mean(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))


def test_probability_of_improvement_by_hand_and_by_mann_whitney():
    # task 1: x=1 loses twice, x=2 ties twice (1/2 each), x=3 wins twice -> 3/6; task 2: 2/2
    x, y = [np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.6])], [np.array([2.0, 2.0]), np.array([0.1])]
    assert stats.improvement_probability(x[0], y[0]) == pytest.approx(0.5)
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.75)
    assert stats.probability_of_improvement(y, x) == pytest.approx(0.25)
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, 6).astype(float), rng.integers(0, 4, 5).astype(float)  # with ties
    u = scipy_stats.mannwhitneyu(a, b, alternative="greater").statistic
    assert stats.improvement_probability(a, b) == pytest.approx(u / (a.size * b.size))


def test_score_distribution_counts_runs_strictly_above_each_threshold():
    profile = stats.score_distribution([np.array([0.1, 0.5]), np.array([0.9])], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(profile, [1.0, 1 / 3, 0.0])


def test_bootstrap_resamples_within_each_task():
    # task A always 0, task B always 1: every stratified replicate keeps 3 runs of each, so the
    # mean never moves (an unstratified bootstrap over the pooled 6 runs would)
    point, low, high = stats.interval_estimate([np.zeros(3), np.ones(3)], stats.aggregate_mean,
                                               reps=500, seed=0)
    assert (float(point), float(low), float(high)) == (0.5, 0.5, 0.5)
    replicates = stats.stratified_resample([np.array([0.0, 1.0]), np.array([5.0, 6.0, 7.0])], 400,
                                           np.random.default_rng(0))
    assert replicates[0].shape == (400, 2) and replicates[1].shape == (400, 3)
    assert set(np.unique(replicates[0])) == {0.0, 1.0} and set(np.unique(replicates[1])) == {5, 6, 7}


def test_percentile_interval_of_a_two_run_mean():
    # the bootstrap mean of runs {0, 1} is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4:
    # its 2.5th and 97.5th percentiles are 0 and 1
    point, low, high = stats.interval_estimate([np.array([0.0, 1.0])], stats.aggregate_mean,
                                               reps=4000, seed=3)
    assert (float(point), float(low), float(high)) == (0.5, 0.0, 1.0)


def test_intervals_are_reproducible_from_the_seed_and_independent_of_other_methods():
    rng = np.random.default_rng(2)
    a = [rng.normal(0.5, 0.2, 4) for _ in range(5)]
    b = [rng.normal(0.4, 0.2, 4) for _ in range(5)]
    reps = {"aggregate": 300, "improvement": 200, "profile": 100}
    alone = stats.summarize({"a": a}, seed=7, reps=reps, taus=[0.0, 0.5])
    both = stats.summarize({"a": a, "b": b}, seed=7, reps=reps, taus=[0.0, 0.5])
    again = stats.summarize({"a": a, "b": b}, seed=7, reps=reps, taus=[0.0, 0.5])
    other = stats.summarize({"a": a, "b": b}, seed=8, reps=reps, taus=[0.0, 0.5])
    assert alone["aggregates"]["a"] == both["aggregates"]["a"]
    assert both == again
    assert other["aggregates"]["a"]["iqm"]["low"] != both["aggregates"]["a"]["iqm"]["low"]
    entry = both["improvement"]["a>b"]
    assert entry["low"] <= entry["value"] <= entry["high"]
    assert both["improvement"]["b>a"]["value"] == pytest.approx(1 - entry["value"])
    for metric in stats.AGGREGATES:
        bounds = both["aggregates"]["b"][metric]
        assert bounds["low"] <= bounds["value"] <= bounds["high"]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no tasks"):
        stats.interval_estimate([], stats.aggregate_mean, reps=10, seed=0)
    with pytest.raises(ValueError, match="finite"):
        stats.interval_estimate([np.array([np.nan])], stats.aggregate_mean, reps=10, seed=0)
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement([np.zeros(2)], [np.zeros(2), np.zeros(2)])


def test_profile_thresholds_cover_scores_outside_zero_one():
    taus = stats.profile_thresholds({"a": [np.array([-0.62, 1.71])]})
    assert taus[0] < -0.62 and taus[-1] > 1.71 and len(taus) == 81
    taus = stats.profile_thresholds({"a": [np.array([0.2, 0.4])]})
    assert (taus[0], taus[-1]) == (-0.3, 1.3)
