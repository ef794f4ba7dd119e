"""Matplotlib figures of a leaderboard (from the dict :func:`.report.build_results` returns).

* ``scores_per_dataset.png``: mean ± std over seeds per dataset and method, the paper's Table 1
  value marked on each bar;
* ``aggregates.png``: median, IQM, mean and optimality gap with their 95% intervals (rliable's
  interval-estimate plot);
* ``probability_of_improvement.png``: P(X > Y) with 95% intervals for every ordered pair;
* ``performance_profiles.png``: fraction of runs above each score threshold, with 95% bands.
"""

import os
from pathlib import Path

import numpy as np

from .stats import AGGREGATE_NAMES, AGGREGATES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods):
    """A fixed colour per method (matplotlib's tab10 cycle, in grid order)."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    return {method: palette[index % len(palette)] for index, method in enumerate(methods)}


def _save(figure, path):
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    figure.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)
    return path


def write_figures(results, folder):
    """Write every figure that the results allow into ``folder``; returns ``{name: path}``."""
    folder = Path(folder)
    written = {"scores_per_dataset.png": _save(scores_figure(results),
                                               folder / "scores_per_dataset.png")}
    stats_ = results["statistics"]
    if stats_.get("aggregates"):
        written["aggregates.png"] = _save(aggregates_figure(results), folder / "aggregates.png")
        written["performance_profiles.png"] = _save(profiles_figure(results),
                                                    folder / "performance_profiles.png")
    if stats_.get("improvement"):
        written["probability_of_improvement.png"] = _save(
            improvement_figure(results), folder / "probability_of_improvement.png")
    return written


def scores_figure(results):
    """Grouped bars: datasets along x, one bar per method (mean ± std over seeds); a black diamond
    marks the paper's Table 1 value."""
    plt = _pyplot()
    grid = results["grid"]
    methods, datasets = grid["methods"], grid["datasets"]
    colors = method_colors(methods)
    by_cell = {(row["dataset"], row["method"]): row for row in results["rows"]}
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(datasets) * max(1, len(methods)) / 2
                                             + 2), 4.2))
    x = np.arange(len(datasets))
    paper_shown, shown = False, [0.0, 1.0]  # the axis always spans 0..1, the usual score range
    for index, method in enumerate(methods):
        offsets = x - 0.4 + width * (index + 0.5)
        rows = [by_cell[(dataset, method)] for dataset in datasets]
        means = [np.nan if r["score_mean"] is None else r["score_mean"] for r in rows]
        stds = [0.0 if r["score_std"] is None else r["score_std"] for r in rows]
        axis.bar(offsets, means, width * 0.9, yerr=stds, capsize=3, color=colors[method],
                 label=method)
        papers = [(o, r["paper_score_mean"]) for o, r in zip(offsets, rows)
                  if r["paper_score_mean"] is not None]
        shown += [m + sign * s for m, s in zip(means, stds) if not np.isnan(m) for sign in (-1, 1)]
        shown += [value for _, value in papers]
        if papers:
            axis.scatter(*zip(*papers), marker="D", color="black", s=22, zorder=3,
                         label=None if paper_shown else "paper (Table 1)")
            paper_shown = True
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_ylim(min(shown) - 0.05, max(shown) + 0.1)
    axis.set_xticks(x, datasets, rotation=30 if len(datasets) > 3 else 0, ha="right"
                    if len(datasets) > 3 else "center")
    axis.set_xlabel("dataset")
    axis.set_ylabel(f"normalized score ({grid['reference']})")
    axis.set_title("Normalized score per dataset: mean ± std over seeds")
    axis.legend(fontsize="small", ncol=min(4, len(methods) + 1))
    axis.grid(axis="y", alpha=0.3)
    return figure


def aggregates_figure(results):
    """One panel per aggregate: each method's point estimate and 95% interval."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    aggregates = results["statistics"]["aggregates"]
    methods = list(aggregates)
    colors = method_colors(results["grid"]["methods"])
    figure, axes = plt.subplots(1, len(AGGREGATES),
                                figsize=(3.2 * len(AGGREGATES), 0.6 * len(methods) + 1.6),
                                sharey=True)
    for axis, name in zip(axes, AGGREGATES):
        for row, method in enumerate(methods):
            entry = aggregates[method][name]
            axis.barh(row, entry["high"] - entry["low"], left=entry["low"], height=0.6,
                      color=colors[method], alpha=0.75)
            axis.plot([entry["value"]] * 2, [row - 0.3, row + 0.3], color="black", linewidth=2)
        axis.set_yticks(range(len(methods)), methods)
        axis.xaxis.set_major_locator(MaxNLocator(4))
        axis.set_title(AGGREGATE_NAMES[name])
        axis.set_xlabel("normalized score")
        axis.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()  # the grid's order, top to bottom (the axes share y: invert once)
    figure.suptitle(f"Aggregates over {len(results['statistics']['datasets'])} dataset(s): point "
                    "estimate (black) and 95% stratified-bootstrap interval")
    figure.tight_layout()
    return figure


def improvement_figure(results):
    """P(X > Y) for every pair, X before Y in the grid's order (P(Y > X) is 1 - P(X > Y)), with
    95% intervals; 0.5 is no difference."""
    plt = _pyplot()
    order = results["grid"]["methods"]
    entries = [entry for entry in results["statistics"]["improvement"].values()
               if order.index(entry["x"]) < order.index(entry["y"])]
    colors = method_colors(results["grid"]["methods"])
    figure, axis = plt.subplots(figsize=(6.0, 0.45 * len(entries) + 1.4))
    for row, entry in enumerate(entries):
        axis.barh(row, entry["high"] - entry["low"], left=entry["low"], height=0.6,
                  color=colors[entry["x"]], alpha=0.75)
        axis.plot([entry["value"]] * 2, [row - 0.3, row + 0.3], color="black", linewidth=2)
        axis.plot(entry["value"], row, "o", color="black", markersize=4)  # seen at 0 or 1 too
    axis.set_yticks(range(len(entries)), [f"{e['x']} vs {e['y']}" for e in entries])
    axis.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    axis.set_xlim(-0.03, 1.03)
    axis.set_xlabel("P(X > Y): probability that a run of X beats a run of Y on a dataset")
    axis.set_title("Probability of improvement (95% stratified-bootstrap intervals)")
    axis.grid(axis="x", alpha=0.3)
    axis.invert_yaxis()
    return figure


def profiles_figure(results):
    """Performance profiles: the fraction of runs whose score exceeds tau, with 95% bands."""
    plt = _pyplot()
    profiles = results["statistics"]["profiles"]
    taus = np.asarray(profiles["taus"])
    colors = method_colors(results["grid"]["methods"])
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for method, curve in profiles["methods"].items():
        axis.plot(taus, curve["value"], color=colors[method], label=method, linewidth=2)
        axis.fill_between(taus, curve["low"], curve["high"], color=colors[method], alpha=0.2)
    axis.set_xlabel("normalized score τ")
    axis.set_ylabel("fraction of runs with score > τ")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("Performance profiles (score distributions, 95% bands)")
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return figure
