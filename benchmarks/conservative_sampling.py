"""What SeMOPO's conservative sampling does to the data it trains on (the paper's Fig. 6).

For each dataset, the action entropy of the batches each sampling schedule draws, at points spread
over the model phase of SeMOPO's ``paper`` preset (25,000 updates, batches of 64 x 50):

* ``conservative, return order``: the default; the prefix of trajectories sorted by return grows
  from 10 to all of them over the model phase, as the released code's schedule does;
* ``conservative, policy order``: the same growth over trajectories ordered by behaviour policy,
  then recording time;
* ``released (return_curriculum)``: the released code exactly (integer increment, off-by-one cap,
  duplicate returns collapsed): with 400 episodes it stops at 260 of them;
* ``literal (pace 1)``: the paper's sentence read with one update per epoch: over after n updates;
* ``random``: uniform windows (the ablation of Sec. 4.3).

Only the windows' actions are gathered (no images), so full-size datasets load lazily and a run
takes seconds. Writes ``<out>/conservative-sampling.json`` and ``.png``.

Usage: ``python benchmarks/conservative_sampling.py walker_walk-medrep walker_walk-medium
[--root R] [--out docs/conservative-sampling] [--batches 8] [--points 26]``.
"""

import argparse
import json
from pathlib import Path

import numpy as np

import semopo
from lqv_d4rl.dataset import load_dataset
from semopo.analysis import sampling_action_entropy
from run_info import git_commit

SCHEDULES = {
    "conservative, return order": ("conservative", {"conservative_order": "return"}),
    "conservative, policy order": ("conservative", {"conservative_order": "policy"}),
    "released (return_curriculum)": ("return_curriculum", {
        key: value for key, value in semopo.PRESETS["released"].items()
        if key in ("curriculum_steps", "replicate_off_by_one", "unique_returns")}),
    "literal (pace 1)": ("conservative_literal", {}),
    "random": ("random", {}),
}
"""Label -> (SeMOPO sampling mode, config overrides on the paper preset)."""


def entropy_curves(dataset, *, batches, points, seed=0):
    """{schedule label: [(model update, action entropy), ...]} on one dataset."""
    curves = {}
    for label, (mode, overrides) in SCHEDULES.items():
        config = semopo.preset("paper", **overrides)
        rows = sampling_action_entropy(dataset, config, batches=batches, points=points,
                                       seed=seed, modes=(mode,))
        curves[label] = [(row["step"], row["entropy"]) for row in rows]
    return curves


def summarize(curves):
    """Mean entropy of each schedule over the model phase (steps weighted evenly in time)."""
    summary = {}
    for label, curve in curves.items():
        steps = np.array([step for step, _ in curve], dtype=float)
        values = np.array([value for _, value in curve])
        area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps))
        summary[label] = float(area / (steps[-1] - steps[0]))
    return summary


def plot(results, path):
    """One panel per dataset: entropy against model update, one line per schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(max(5.2 * len(results), 8.0), 4.0),
                                squeeze=False)
    for axis, (dataset_id, result) in zip(axes[0], results.items()):
        for label, curve in result["curves"].items():
            steps, values = zip(*curve)
            axis.plot(steps, values, marker=".", label=label)
        axis.set_title(f"{dataset_id} ({result['episodes']} episodes)")
        axis.set_xlabel("model update")
        axis.set_ylabel("action entropy of sampled batches (nats)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Conservative sampling: action entropy of the batches over SeMOPO's model phase")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help="dataset ids (or folders)")
    parser.add_argument("--root", default=None, help="dataset root (default: $LQV_D4RL_ROOT)")
    parser.add_argument("--out", default="docs/conservative-sampling", help="output folder")
    parser.add_argument("--batches", type=int, default=8, help="batches pooled per point")
    parser.add_argument("--points", type=int, default=26, help="points over the model phase")
    args = parser.parse_args(argv)
    results = {}
    for dataset_id in args.datasets:
        dataset = load_dataset(dataset_id, root=args.root, lazy=True)
        curves = entropy_curves(dataset, batches=args.batches, points=args.points)
        results[dataset_id] = {"episodes": len(dataset), "curves": curves,
                               "mean_over_model_phase": summarize(curves)}
        dataset.close()
        print(f"\n{dataset_id} ({len(dataset)} episodes): mean action entropy over the model phase")
        for label, value in results[dataset_id]["mean_over_model_phase"].items():
            print(f"  {label:32s} {value:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/conservative_sampling.py " + " ".join(args.datasets)
    (out / "conservative-sampling.json").write_text(json.dumps(
        {"command": command, "commit": git_commit(), "results": results}, indent=1))
    plot(results, out / "conservative-sampling.png")
    print(f"\nwrote {out / 'conservative-sampling.json'} and .png")


if __name__ == "__main__":
    main()
