"""Aggregate statistics over runs and datasets, as rliable defines them, in plain numpy.

Agarwal et al., "Deep RL at the Edge of the Statistical Precipice" (NeurIPS 2021) and their
library google-research/rliable (v1.2.0, ``metrics.py`` and ``library.py``) define:

* **mean**: the mean over tasks of each task's mean over runs;
* **median**: the median over tasks of each task's mean over runs;
* **IQM** (interquartile mean): the 25 % trimmed mean of all runs of all tasks pooled
  (``scipy.stats.trim_mean(scores, 0.25, axis=None)``: sort, drop ``int(0.25 n)`` from each end);
* **optimality gap**: ``gamma - mean(min(score, gamma))`` over all runs, ``gamma = 1``;
* **probability of improvement** P(X > Y): per task the Mann-Whitney U statistic over
  ``n_x * n_y`` (every pair of runs: 1 if x > y, 1/2 on a tie), averaged over tasks;
* **performance profile** (score distribution): the fraction of all runs (of all tasks) whose
  score is strictly above each threshold tau;
* **stratified bootstrap** confidence intervals: each replicate resamples, within every task
  separately, as many runs as the task has, with replacement (probability of improvement
  resamples X and Y independently); the interval is the percentile interval of the replicates.

Here a "task" is a dataset and a "run" is a training seed (episodes are averaged within a seed
first: the seed is the unit of replication). Scores are given per task as a list of 1-D arrays, so
a task may hold fewer runs than another (a failed run); with equal counts every statistic equals
rliable's on the ``(runs, tasks)`` matrix. Unlike rliable, whose bootstrap draws from numpy's global
RNG (its ``random_state`` argument is not used for the resampling), every interval here comes from
a ``numpy.random.Generator`` seeded from ``(seed, method name, statistic name)``: the same seed gives
the same intervals, whatever other methods are in the table.

Every statistic accepts arrays with leading batch axes (``(..., runs)`` per task) so that all
bootstrap replicates are computed in one vectorized call.
"""

import zlib

import numpy as np

AGGREGATES = ("median", "iqm", "mean", "optimality_gap")
"""The aggregate metrics of the leaderboard, in rliable's plotting order."""

AGGREGATE_NAMES = {"median": "Median", "iqm": "IQM", "mean": "Mean",
                   "optimality_gap": "Optimality gap"}
"""How tables and figures title each aggregate."""

DEFAULT_REPS = {"aggregate": 50_000, "improvement": 2_000, "profile": 2_000}
"""Bootstrap replicates: rliable's defaults (``get_interval_estimates`` 50,000; its README uses 2,000
for probability of improvement; ``create_performance_profile`` 2,000)."""

CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------- statistics


def _task_means(tasks):
    """``(..., num_tasks)``: each task's mean over its runs."""
    return np.stack([np.mean(runs, axis=-1) for runs in tasks], axis=-1)


def _pooled(tasks):
    """``(..., total runs)``: every run of every task side by side."""
    return np.concatenate(list(tasks), axis=-1)


def aggregate_mean(tasks):
    """Mean over tasks of the per-task mean score."""
    return np.mean(_task_means(tasks), axis=-1)


def aggregate_median(tasks):
    """Median over tasks of the per-task mean score."""
    return np.median(_task_means(tasks), axis=-1)


def trimmed_mean(values, proportion=0.25):
    """Mean of ``values`` (last axis) after dropping ``int(proportion * n)`` values from each end of
    their sorted order, as ``scipy.stats.trim_mean`` does."""
    values = np.sort(np.asarray(values, dtype=np.float64), axis=-1)
    count = values.shape[-1]
    cut = int(proportion * count)
    if 2 * cut >= count:
        raise ValueError(f"trimming {proportion} from each end of {count} values leaves none")
    return np.mean(values[..., cut:count - cut], axis=-1)


def aggregate_iqm(tasks):
    """Interquartile mean: the 25 % trimmed mean of all runs of all tasks pooled."""
    return trimmed_mean(_pooled(tasks), 0.25)


def aggregate_optimality_gap(tasks, gamma=1.0):
    """``gamma`` minus the mean over all runs of ``min(score, gamma)``: how far below ``gamma``."""
    return gamma - np.mean(np.minimum(_pooled(tasks), gamma), axis=-1)


AGGREGATE_FUNCTIONS = {"median": aggregate_median, "iqm": aggregate_iqm, "mean": aggregate_mean,
                       "optimality_gap": aggregate_optimality_gap}


def aggregates(tasks):
    """``(..., 4)``: median, IQM, mean and optimality gap (the order of :data:`AGGREGATES`)."""
    return np.stack([AGGREGATE_FUNCTIONS[name](tasks) for name in AGGREGATES], axis=-1)


def improvement_probability(runs_x, runs_y):
    """P(X > Y) on one task: over every pair of runs, 1 if x > y and 1/2 on a tie (the Mann-Whitney
    U statistic over ``n_x * n_y``); batch axes lead."""
    x = np.asarray(runs_x, dtype=np.float64)[..., :, None]
    y = np.asarray(runs_y, dtype=np.float64)[..., None, :]
    wins = (x > y).astype(np.float64) + 0.5 * (x == y)
    return np.mean(wins, axis=(-2, -1))


def probability_of_improvement(tasks_x, tasks_y):
    """P(X > Y) averaged over tasks (``tasks_x``, ``tasks_y``: per-task runs of the same tasks)."""
    if len(tasks_x) != len(tasks_y):
        raise ValueError(f"X has {len(tasks_x)} tasks and Y {len(tasks_y)}; compare the same tasks")
    return np.mean(np.stack([improvement_probability(x, y) for x, y in zip(tasks_x, tasks_y)],
                            axis=-1), axis=-1)


def score_distribution(tasks, taus):
    """Performance profile: ``(..., len(taus))``, the fraction of all runs with a score above each
    threshold in ``taus``."""
    pooled = _pooled(tasks)
    taus = np.asarray(taus, dtype=np.float64)
    return np.mean(pooled[..., None, :] > taus[:, None], axis=-1)


# ---------------------------------------------------------------------------------- bootstrap


def generator(seed, *names):
    """The ``numpy.random.Generator`` of one interval estimate: seeded from ``seed`` and a stable
    checksum of each name (a method, a statistic), so it does not depend on what else is computed."""
    return np.random.default_rng([int(seed), *(zlib.crc32(str(name).encode()) for name in names)])


def stratified_resample(tasks, reps, rng):
    """``reps`` stratified bootstrap replicates: per task an array ``(reps, runs)`` of its runs drawn
    with replacement within that task."""
    resampled = []
    for runs in tasks:
        runs = np.asarray(runs, dtype=np.float64)
        resampled.append(runs[rng.integers(0, runs.size, size=(reps, runs.size))])
    return resampled


def percentile_interval(replicates, confidence=CONFIDENCE):
    """``(low, high)`` arrays: the percentile bootstrap interval over the first axis."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def interval_estimate(tasks, statistic, *, reps, seed, names=(), confidence=CONFIDENCE):
    """``(point, low, high)`` of ``statistic(tasks)`` with a stratified-bootstrap percentile interval.

    ``statistic`` maps per-task runs (with leading batch axes) to an array; ``names`` pick the
    random stream (see :func:`generator`).
    """
    tasks = [np.asarray(runs, dtype=np.float64) for runs in tasks]
    _check_tasks(tasks)
    point = np.asarray(statistic(tasks))
    replicates = statistic(stratified_resample(tasks, reps, generator(seed, *names)))
    low, high = percentile_interval(replicates, confidence)
    return point, low, high


def improvement_estimate(tasks_x, tasks_y, *, reps, seed, names=(), confidence=CONFIDENCE):
    """``(point, low, high)`` of P(X > Y), X and Y resampled independently within each task (rliable's
    ``StratifiedIndependentBootstrap``)."""
    tasks_x = [np.asarray(runs, dtype=np.float64) for runs in tasks_x]
    tasks_y = [np.asarray(runs, dtype=np.float64) for runs in tasks_y]
    _check_tasks(tasks_x)
    _check_tasks(tasks_y)
    rng = generator(seed, *names)
    point = probability_of_improvement(tasks_x, tasks_y)
    replicates = probability_of_improvement(stratified_resample(tasks_x, reps, rng),
                                            stratified_resample(tasks_y, reps, rng))
    low, high = percentile_interval(replicates, confidence)
    return float(point), float(low), float(high)


def _check_tasks(tasks):
    if not tasks:
        raise ValueError("no tasks to aggregate over")
    for runs in tasks:
        if runs.ndim != 1 or runs.size == 0:
            raise ValueError("each task needs a 1-D array of at least one run's score")
        if not np.all(np.isfinite(runs)):
            raise ValueError("scores must be finite")


def profile_thresholds(tasks_by_method, count=81):
    """Thresholds for performance profiles: ``count`` points from below the lowest score (at most
    -0.3) to above the highest (at least 1.3), since normalized scores leave [0, 1]."""
    values = np.concatenate([np.concatenate(tasks) for tasks in tasks_by_method.values()] or
                            [np.zeros(1)])
    low = min(-0.3, np.floor(values.min() * 10) / 10 - 0.1)
    high = max(1.3, np.ceil(values.max() * 10) / 10 + 0.1)
    return np.linspace(low, high, count)


def summarize(tasks_by_method, *, seed=0, reps=None, taus=None, confidence=CONFIDENCE):
    """Every aggregate of the leaderboard for ``{method: [runs of task 1, runs of task 2, ...]}``
    (the same tasks, in the same order, for every method).

    Returns a JSON-able dict: ``aggregates`` (method -> metric -> ``{value, low, high}``),
    ``improvement`` (``"X>Y"`` -> ``{x, y, value, low, high}`` for every ordered pair),
    ``profiles`` (``taus`` and, per method, ``value``, ``low``, ``high`` lists), ``seed``, ``reps``,
    ``confidence``.
    """
    reps = {**DEFAULT_REPS, **(reps or {})}
    taus = profile_thresholds(tasks_by_method) if taus is None else np.asarray(taus, np.float64)
    result = {"seed": int(seed), "reps": reps, "confidence": confidence, "aggregates": {},
              "improvement": {}, "profiles": {"taus": taus.tolist(), "methods": {}}}
    for method, tasks in tasks_by_method.items():
        point, low, high = interval_estimate(tasks, aggregates, reps=reps["aggregate"], seed=seed,
                                             names=(method, "aggregates"), confidence=confidence)
        result["aggregates"][method] = {
            name: {"value": float(point[i]), "low": float(low[i]), "high": float(high[i])}
            for i, name in enumerate(AGGREGATES)}
        point, low, high = interval_estimate(
            tasks, lambda t: score_distribution(t, taus), reps=reps["profile"], seed=seed,
            names=(method, "profile"), confidence=confidence)
        result["profiles"]["methods"][method] = {"value": point.tolist(), "low": low.tolist(),
                                                 "high": high.tolist()}
    for x in tasks_by_method:
        for y in tasks_by_method:
            if x == y:
                continue
            value, low, high = improvement_estimate(
                tasks_by_method[x], tasks_by_method[y], reps=reps["improvement"], seed=seed,
                names=(x, y, "improvement"), confidence=confidence)
            result["improvement"][f"{x}>{y}"] = {"x": x, "y": y, "value": value, "low": low,
                                                 "high": high}
    return result
