"""How far the CPU recipe's SAC training run of a task has got, while it runs or after it: its
evaluation curve against Table 3's medium band and random row, the medium search's best candidate
so far, the medrep level as it would be recorded from the run's training episodes (its statistics
and Table 3 verdicts; where medrep ends at the band or at a return, they are final long before the
run ends), and the run's recent pace with the time its step budget would still take.

Reads ``<root>/.work/<task>-sac-state-seed<S>/state.json`` (rewritten at every checkpoint of
``lqv-d4rl generate TASK --behaviour sac-state --preset cpu``; reading it does not disturb a run),
prints a table of the evaluations, and writes ``<out>/training-<task>.json`` and ``.png``. The pace
comes from the times the evaluation snapshots were written, over the latest stretch without a
pause (an interrupted run's restart does not count), so it says as much about the machine's load
as about the recipe.

Usage: ``python benchmarks/training_progress.py hopper_hop [--root R] [--seed 0] [--out DIR]
[--every 10]``.
"""

import argparse
import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import numpy as np

from collectors.generate import MEDIUM_POLICY_INFO
from collectors.state_recipe import (STATE_NAME, first_band_evaluation, medrep_end_step,
                                     medrep_indices, state_recipe, training_episode_returns)
from lqv_d4rl.fidelity import Verdict, fidelity_verdicts, format_verdicts, share_in_band
from lqv_d4rl.registry import dataset_root, get_recipe
from lqv_d4rl.stats import return_statistics
from lqv_d4rl.tasks import get_task
from run_info import git_commit

PAUSE_FACTOR = 5.0
"""A gap between two snapshots this many times the usual one is a pause (the run was stopped)."""
PACE_WINDOW = 20
"""Evaluations over which the recent pace is measured."""


def work_dir(root, task, seed):
    """Where ``generate`` keeps the task's SAC training run."""
    return dataset_root(root) / ".work" / f"{task}-sac-state-seed{seed}"


def load_run(folder):
    """The run's config, run settings, state and evaluations (its ``state.json``), with each
    snapshot's write time."""
    path = Path(folder) / STATE_NAME
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: no SAC training run of this task and seed under "
                         "this root (start one with `lqv-d4rl generate TASK --behaviour sac-state "
                         "--preset cpu --root R`)")
    saved = json.loads(path.read_text(encoding="utf-8"))
    evaluations = saved["state"]["evaluations"]
    for evaluation in evaluations:
        snapshot = Path(folder) / evaluation["snapshot"]
        evaluation["written"] = snapshot.stat().st_mtime if snapshot.is_file() else None
    return saved["run"]["config"], saved["run"]["settings"], saved["state"], evaluations


def medrep_preview(task, folder, state, evaluations, medium):
    """The medrep level the cpu preset would record from this run (its rule, statistics and
    verdicts): the training episodes before where the preset's medrep ends (``medrep_until``;
    a run made with another rule is previewed with the preset's), or all so far if the run has
    not got there yet, evenly spaced down to the level's episode count."""
    recipe = state_recipe(task)
    found = medium if state["finished"] and medium is not None and medium.get("in_band") else None
    returns, steps = training_episode_returns(Path(folder) / "episodes", state["episodes"])
    until, rule = medrep_end_step(recipe, evaluations, found and found["policy_step"],
                                  zip(returns, steps))
    before, selected = medrep_indices(steps, until, recipe.medrep_episodes)
    kept = returns[selected]
    return {"ends_at": rule, "until_env_steps": until,
            "reached": until is not None, "training_episodes": len(returns),
            "before": len(before), "kept": len(kept), "statistics": return_statistics(kept),
            "verdicts": [v.to_dict() for v in fidelity_verdicts(task, "medrep", kept)]}


def preset_departures(task, config, settings):
    """The run's SAC settings (and learner shaping, training threads) that differ from the task's
    cpu preset: an experiment's run (e.g. ``benchmarks/datasets.py --set sac.init_alpha=1``)."""
    recipe = state_recipe(task)
    preset = dataclasses.asdict(recipe.sac)
    departures = {name: value for name, value in config.items()
                  if name in preset and value != preset[name]}
    shaping = settings.get("training_shaping", 0.0)
    if shaping != recipe.training_shaping:
        departures["training_shaping"] = shaping
    threads = settings.get("torch_threads", 1)
    if threads != recipe.training_threads:
        departures["training_threads"] = threads
    return departures


def approximate_updates(env_steps, config, action_repeat):
    """SAC updates made by ``env_steps`` (one per ``1 / updates_per_step`` agent steps after
    ``learning_starts``; exact up to the episode in progress)."""
    agent_steps = max(env_steps - config["learning_starts"], 0) / action_repeat
    return int(agent_steps * config["updates_per_step"])


def recent_pace(evaluations):
    """``(env steps per second, evaluations measured)`` over the latest stretch of at most
    :data:`PACE_WINDOW` + 1 timed evaluations, cut at the latest pause (a gap between two snapshots
    over :data:`PAUSE_FACTOR` times the stretch's median gap: the run was stopped and resumed);
    ``(None, n)`` when fewer than two are timed."""
    timed = [e for e in evaluations[-(PACE_WINDOW + 1):] if e["written"] is not None]
    if len(timed) < 2:
        return None, len(timed)
    gaps = np.diff([e["written"] for e in timed])
    pauses = np.flatnonzero(gaps > PAUSE_FACTOR * max(float(np.median(gaps)), 1e-9))
    stretch = timed[pauses[-1] + 1:] if pauses.size else timed
    if len(stretch) < 2:
        return None, len(stretch)
    steps = stretch[-1]["env_steps"] - stretch[0]["env_steps"]
    seconds = stretch[-1]["written"] - stretch[0]["written"]
    return (steps / seconds if seconds > 0 else None), len(stretch)


def summarize(task, config, state, evaluations, medium, band, paper, departures):
    """The JSON record: the curve and what it means against Table 3 (``departures``: the run's
    settings that are not the cpu preset's)."""
    spec = get_task(task)
    returns = [np.asarray(e["returns"], dtype=np.float64) for e in evaluations]
    means = [e["mean_return"] for e in evaluations]
    latest = np.concatenate(returns[-10:]) if returns else np.zeros(0)
    pace, timed = recent_pace(evaluations)
    left = 0 if state["finished"] else max(config["total_steps"] - state["env_steps"], 0)
    per_step = config["updates_per_step"] / spec.action_repeat
    return {
        "task": task, "env_steps": state["env_steps"], "total_steps": config["total_steps"],
        "updates": approximate_updates(state["env_steps"], config, spec.action_repeat),
        "updates_per_env_step": per_step, "departures_from_cpu_preset": departures,
        "finished": state["finished"],
        "stop_reason": state["stop_reason"], "medium_band": list(band),
        "paper_medium_mean": paper["medium"]["mean"], "paper_random_max": paper["random"]["max"],
        "best_mean_return": max(means, default=None),
        "first_evaluation_reaching_band_min": first_band_evaluation(evaluations, band),
        "last_10_evaluations": {
            "mean_return": float(latest.mean()) if latest.size else None,
            "share_in_band": share_in_band(latest, band) if latest.size else None,
            "share_zero_return": float(np.mean(latest == 0.0)) if latest.size else None},
        "medium_candidate": medium,
        "recent_pace": None if pace is None else {
            "env_steps_per_s": pace, "updates_per_s": pace * per_step,
            "evaluations": timed, "hours_to_step_budget": left / pace / 3600},
        "evaluations": [{"env_steps": e["env_steps"], "mean_return": m, "updates":
                         approximate_updates(e["env_steps"], config, spec.action_repeat),
                         "returns": r.tolist()} for e, m, r in zip(evaluations, means, returns)],
    }


def print_table(record, every):
    """The evaluations (every ``every``-th and the last) and the summary lines."""
    print(f"{'env steps':>10} {'updates':>8} {'mean':>7} {'min':>7} {'max':>7} {'in band':>8}")
    band = record["medium_band"]
    rows = record["evaluations"]
    for index, row in enumerate(rows):
        if index % every and index != len(rows) - 1:
            continue
        returns = np.asarray(row["returns"])
        print(f"{row['env_steps']:>10} {row['updates']:>8} "
              f"{row['mean_return']:>7.1f} {returns.min():>7.1f} {returns.max():>7.1f} "
              f"{share_in_band(returns, band):>8.0%}")
    latest = record["last_10_evaluations"]
    print(f"\n{record['task']}: {record['env_steps']:,} of {record['total_steps']:,} environment "
          f"steps, ~{record['updates']:,} updates; best evaluation mean "
          f"{record['best_mean_return']:.1f}; band {band[0]}..{band[1]} (Table 3 medium mean "
          f"{record['paper_medium_mean']})")
    if latest["mean_return"] is not None:
        print(f"last 10 evaluations: mean {latest['mean_return']:.1f}, "
              f"{latest['share_in_band']:.0%} of episodes in the band, "
              f"{latest['share_zero_return']:.0%} with return 0")
    medium = record["medium_candidate"]
    if medium is not None:
        how = "explore" if medium.get("explore") else "tanh(mean)"
        if medium.get("transform"):
            how += f" under {medium['transform'][0]} {medium['transform'][1]:g}"
        share = medium["share_in_band"]
        verdict = "found" if medium["in_band"] else "no match" if record["finished"] \
            else "not yet a match"
        in_band = "" if share is None else f", {share:.0%} in band"  # None: a smoke run, no band
        print(f"medium search: best so far {medium['policy_id']} ({how}), mean "
              f"{medium['evaluation_return']:.1f}{in_band}, "
              f"{verdict}")
    medrep = record["medrep_preview"]
    if medrep["reached"]:
        where = (f"{medrep['before']} training episodes played before {medrep['ends_at']} "
                 f"({medrep['until_env_steps']:,} steps)")
    else:
        where = f"the {medrep['before']} training episodes so far (not yet at {medrep['ends_at']})"
    print(f"medrep if recorded now: {medrep['kept']} of {where}, evenly spaced")
    print(format_verdicts([(f"{record['task']}-medrep",
                            [Verdict.from_dict(v) for v in medrep["verdicts"]])]))
    pace = record["recent_pace"]
    if record["finished"]:
        print(f"the run has finished ({record['stop_reason']})")
    if pace is not None:
        rest = "" if record["finished"] else (f"; the step budget needs "
                                              f"{pace['hours_to_step_budget']:.1f} h more at that pace")
        print(f"recent pace: {pace['env_steps_per_s']:.0f} environment steps/s, "
              f"{pace['updates_per_s']:.1f} updates/s (last {pace['evaluations']} "
              f"evaluations){rest}")


def plot(record, path):
    """Evaluation returns against environment steps, with Table 3's band and random max and
    where the medrep level's training episodes end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["evaluations"]
    steps = np.asarray([row["env_steps"] for row in rows]) / 1e6
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for x, row in zip(steps, rows):
        ax.scatter(np.full(len(row["returns"]), x), row["returns"], s=4, color="tab:blue",
                   alpha=0.25, linewidths=0)
    ax.plot(steps, [row["mean_return"] for row in rows], color="tab:blue",
            label="evaluation mean (10 episodes, tanh(mean)); dots: episodes")
    low, high = record["medium_band"]
    ax.axhspan(low, high, color="tab:green", alpha=0.15, label=f"Table 3 medium band {low}..{high}")
    ax.axhline(record["paper_medium_mean"], color="tab:green", linestyle="--",
               label=f"Table 3 medium mean {record['paper_medium_mean']}")
    ax.axhline(record["paper_random_max"], color="tab:red", linestyle=":",
               label=f"Table 3 random max {record['paper_random_max']}")
    medrep = record.get("medrep_preview")
    if medrep and medrep["reached"]:
        ax.axvline(medrep["until_env_steps"] / 1e6, color="tab:gray", linestyle="-.",
                   label=f"medrep ends: {medrep['ends_at']}")
    ax.set_xlabel("environment steps (millions); updates = steps x "
                  f"{record['updates_per_env_step']:g}")
    ax.set_ylabel("episode return")
    top = max((max(row["returns"]) for row in rows), default=0.0)
    if top < low / 10:  # a run still near zero: a log scale above 1 shows it and the band
        lowest = min(min(row["returns"]) for row in rows)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(min(lowest, 0.0), high * 1.5)
        ax.set_ylabel("episode return (symlog scale)")
    departures = record["departures_from_cpu_preset"]
    which = "the CPU recipe's SAC run" if not departures else "SAC run with " + ", ".join(
        f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in departures.items())
    ax.set_title(textwrap.fill(f"{record['task']}: {which}, {record['env_steps']:,} steps, "
                               f"~{record['updates']:,} updates", 80))
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="walker_walk, cheetah_run, hopper_hop, humanoid_walk or "
                                     "car_racing")
    parser.add_argument("--root", default=None, help="dataset root (default: $LQV_D4RL_ROOT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/datasets", help="folder of the JSON and PNG")
    parser.add_argument("--every", type=int, default=10, help="print every N-th evaluation")
    args = parser.parse_args(argv)
    folder = work_dir(args.root, args.task, args.seed)
    config, settings, state, evaluations = load_run(folder)
    recipe = state_recipe(args.task)
    info = folder / MEDIUM_POLICY_INFO
    medium = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else None
    paper = {level: get_recipe(f"{args.task}-{level}").paper_returns
             for level in ("random", "medium")}
    record = summarize(args.task, config, state, evaluations, medium, recipe.medium_band, paper,
                       preset_departures(args.task, config, settings))
    record["medrep_preview"] = medrep_preview(args.task, folder, state, evaluations, medium)
    record.update(command=f"python benchmarks/training_progress.py {args.task} --seed {args.seed} "
                          f"--out {args.out}", commit=git_commit())
    print_table(record, max(args.every, 1))
    if record["departures_from_cpu_preset"]:
        print(f"not the cpu preset's run: {record['departures_from_cpu_preset']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"training-{args.task}.json").write_text(json.dumps(record, indent=1))
    plot(record, out / f"training-{args.task}.png")
    print(f"wrote {out / f'training-{args.task}.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
