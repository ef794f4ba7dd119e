"""lqv_d4rl.fidelity: a dataset's return statistics against Table 3, with hand-computed intervals."""

import numpy as np
import pytest

from lqv_d4rl.fidelity import (
    allowed_interval, all_passed, fidelity_verdicts, format_verdicts, share_in_band,
)


def test_allowed_intervals_are_relative_with_an_absolute_floor():
    # walker_walk-random mean 86.6 +- 30 % (the floor, 2 % of 598 - 5 = 11.86, is smaller)
    assert allowed_interval("walker_walk", 86.6, 0.30) == pytest.approx((60.62, 112.58))
    # hopper_hop-random p75 0.1: 30 % would be 0.03; the floor is 2 % of 84.9 = 1.698
    assert allowed_interval("hopper_hop", 0.1, 0.30) == pytest.approx((0.1 - 1.698, 0.1 + 1.698))


def test_share_in_band_counts_the_closed_interval():
    assert share_in_band([401.5, 598.0, 400.0, 600.0], (401.5, 598.0)) == 0.5
    assert share_in_band([], (0, 1)) == 0.0


def test_a_medium_level_above_the_band_fails_and_one_inside_passes():
    above = [650.0] * 150 + [500.0] * 50  # 25 % in band, mean 612.5
    verdicts = {v.statistic: v for v in fidelity_verdicts("walker_walk", "medium", above)}
    assert verdicts["episodes"].passed
    assert not verdicts["in_band"].passed and verdicts["in_band"].value == 0.25
    assert not verdicts["mean"].passed  # 513.1 +- 51.31
    assert verdicts["mean"].describe() == "FAIL: 48.1 above the allowed 461.8..564.4"
    inside = np.linspace(420, 600, 200)  # 199 of 200 inside [401.5, 598.0], mean 510
    assert all_passed(fidelity_verdicts("walker_walk", "medium", inside))


def test_medrep_needs_the_papers_episode_count():
    verdicts = fidelity_verdicts("cheetah_run", "medrep", [125.0] * 155)
    by_name = {v.statistic: v for v in verdicts}
    assert not by_name["episodes"].passed
    assert by_name["episodes"].describe() == "FAIL: 155 episodes, the paper has 400"
    assert by_name["mean"].passed and by_name["median"].passed  # 145.4 +- 43.6, 125.1 +- 37.5


def test_the_random_checks_and_their_table():
    returns = np.concatenate([np.full(100, 50.0), np.full(50, 110.0), np.full(49, 140.0), [220.0]])
    verdicts = fidelity_verdicts("walker_walk", "random", returns)  # mean 87.9, p75 117.5
    assert [v.statistic for v in verdicts] == ["episodes", "mean", "p75", "max"]
    assert all_passed(verdicts)
    untrained = fidelity_verdicts("walker_walk", "random", np.linspace(29.0, 79.1, 200))
    assert [v.passed for v in untrained] == [True, False, False, False]
    table = format_verdicts([("walker_walk-random", untrained)])
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "statistic", "ours", "paper", "allowed", "verdict"]
    assert lines[2].split()[:5] == ["walker_walk-random", "mean", "54.0", "86.6", "60.6..112.6"]
    assert "FAIL: 6.6 below the allowed 60.6..112.6" in lines[2]
