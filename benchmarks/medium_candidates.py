"""Why a CPU-recipe run's medium search has not matched yet: how its snapshots' returns spread.

The medium search (``collectors.state_recipe.MediumSearch``) wants a snapshot with at least 95 %
of its episodes inside Table 3's medium band and its mean within 7 % of the paper's. This plays
more episodes of the run's evaluated snapshots, with tanh(mean) and under action scales (the
search's handicap), and prints, per snapshot and scale, the mean, std, min, max, the share of
episodes in the band and whether the search's criterion holds, next to Table 3's std. A snapshot
whose std is far above the paper's cannot keep 95 % of its episodes in the band at any scale.

Episodes are played on the physics alone, seeded from ``--seed`` on the ``probe`` stream from
episode :data:`FIRST_EPISODE` on (not the episodes the run itself played); reading the run does not
disturb it. The band and criterion are the cpu preset's (a run made with ``--set`` changes to
its medium search is judged by the preset's). Writes ``<out>/medium-candidates-<task>.json``.

Usage: ``python benchmarks/medium_candidates.py humanoid_walk [--root R] [--seed 0]
[--steps 1400000,1420000 | --from 1400000 --every 2] [--scales 1,0.95,0.9] [--episodes 20]
[--out DIR]``.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from collectors.sac import SACPolicy
from collectors.state_recipe import MediumSearch, medium_policy, simulate_level, state_recipe
from lqv_d4rl.fidelity import share_in_band
from lqv_d4rl.registry import get_recipe
from run_info import git_commit
from training_progress import load_run, work_dir

FIRST_EPISODE = 1_000_000
"""The probe episodes' numbers start here: past the run's own probes (evaluation index x
``PROBES_PER_EVALUATION``) for its first 1,000 evaluations (5M environment steps of the cpu
preset); later ones may replay episodes the search played, which changes no figure's meaning."""


def chosen_evaluations(evaluations, steps=None, start=0, every=1):
    """The evaluations at ``steps`` (all must exist) or, without, every ``every``-th one from
    ``start`` environment steps on (the untrained actor at step 0 left out)."""
    if steps:
        by_step = {e["env_steps"]: e for e in evaluations}
        missing = [step for step in steps if step not in by_step]
        if missing:
            raise SystemExit(f"no evaluation at {missing} environment steps; the run evaluated "
                             f"at {', '.join(str(e['env_steps']) for e in evaluations[:3])}, ... "
                             f"{evaluations[-1]['env_steps']}")
        return [by_step[step] for step in steps]
    later = [e for e in evaluations if e["env_steps"] >= max(start, 1)]
    return later[::every]


def judge(returns, search):
    """One row's figures: the returns' statistics, share in the band and whether ``search``
    (a MediumSearch) would call them promising."""
    returns = np.asarray(returns, float)
    return {"mean": float(returns.mean()), "std": float(returns.std()),
            "min": float(returns.min()), "max": float(returns.max()),
            "share_in_band": share_in_band(returns, search.band),
            "meets_search": sum(search.shortfalls(list(returns))) == 0}


def play(simulator, policy, scale, episodes, seed, max_episode_steps):
    """The returns of ``episodes`` probe episodes of ``policy`` (a SACPolicy, tanh(mean)) with
    its actions scaled by ``scale``."""
    if scale != 1.0:
        policy = medium_policy(policy, ("action_scale", scale))
    return [episode.episode_return for _, episode in simulate_level(
        simulator, policy, 0, episodes, seed=seed, stream="probe", explore=False,
        max_episode_steps=max_episode_steps, index_offset=FIRST_EPISODE)]


def format_table(rows, paper):
    """The rows as a text table, with Table 3's medium row first."""
    lines = [f"{'snapshot':>22} {'scale':>5} {'mean':>7} {'std':>6} {'min':>7} {'max':>7} "
             f"{'in band':>7}  search",
             f"{'Table 3 medium':>22} {'':>5} {paper['mean']:7.1f} {paper['std']:6.1f} "
             f"{paper['min']:7.1f} {paper['max']:7.1f} {'100 %':>7}"]
    for row in rows:
        lines.append(f"{row['policy_id']:>22} {row['scale']:5.2f} {row['mean']:7.1f} "
                     f"{row['std']:6.1f} {row['min']:7.1f} {row['max']:7.1f} "
                     f"{row['share_in_band']:6.0%}  {'match' if row['meets_search'] else '-'}")
    return "\n".join(lines)


def scales_argument(text):
    """``--scales``: comma-separated action scales in (0, 1]."""
    scales = [float(part) for part in text.split(",") if part.strip()]
    if not scales or not all(0 < scale <= 1 for scale in scales):
        raise argparse.ArgumentTypeError(f"{text!r}: action scales lie in (0, 1]")
    return scales


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task")
    parser.add_argument("--root", default=None, help="dataset root (default: $LQV_D4RL_ROOT)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (its work dir)")
    parser.add_argument("--steps", default="", help="comma-separated evaluation steps")
    parser.add_argument("--from", dest="start", type=int, default=0,
                        help="without --steps: evaluations from these environment steps on")
    parser.add_argument("--every", type=int, default=1, help="without --steps: every n-th one")
    parser.add_argument("--scales", type=scales_argument, default=[1.0],
                        help="action scales to play each snapshot with (default: 1)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per row")
    parser.add_argument("--out", default="docs/datasets", help="folder of the JSON record")
    args = parser.parse_args(argv)
    from lqv_d4rl.car_racing import make_state_simulator

    recipe = state_recipe(args.task, "cpu")
    paper = get_recipe(f"{args.task}-medium").paper_returns
    folder = work_dir(args.root, args.task, args.seed)
    search = MediumSearch(recipe.medium_band, recipe.medium_mean, folder,
                          min_share=recipe.medium_min_share,
                          mean_tolerance=recipe.medium_mean_tolerance)
    _, _, _, evaluations = load_run(folder)
    steps = [int(step) for step in args.steps.split(",") if step.strip()]
    torch.set_num_threads(1)
    simulator = make_state_simulator(args.task)
    rows = []
    for evaluation in chosen_evaluations(evaluations, steps, args.start, args.every):
        snapshot = SACPolicy.load(folder / evaluation["snapshot"])
        for scale in args.scales:
            returns = play(simulator, snapshot, scale, args.episodes, args.seed,
                           recipe.max_episode_steps)
            rows.append({"policy_id": evaluation["policy_id"],
                         "env_steps": evaluation["env_steps"], "scale": scale,
                         "evaluation_mean_return": evaluation["mean_return"],
                         **judge(returns, search), "returns": returns})
            print(format_table(rows[-1:], paper).splitlines()[-1], flush=True)
    simulator.close()
    print("\n" + format_table(rows, paper))
    command = "python benchmarks/medium_candidates.py " + " ".join(argv or sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"medium-candidates-{args.task}.json"
    path.write_text(json.dumps({"task": args.task, "command": command, "commit": git_commit(),
                                "episodes": args.episodes, "band": list(recipe.medium_band),
                                "paper": paper, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
