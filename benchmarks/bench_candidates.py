"""Playing the random level's candidates: one process against ``--workers`` processes.

The CPU recipe chooses its random level among candidate snapshots of the training run, each played
for ``random_episodes_per_policy`` episodes on the physics alone (car_racing's cpu preset: 307
candidates x 20 episodes). ``generate``'s render workers play them in parallel
(:func:`collectors.state_recipe.play_candidates`). This times both ways on the same candidates,
randomly initialized SAC actors of the task's cpu preset, in one run, checks that they return the
same floats, and prints the speed-up (a ratio: the machine is shared). Usage::

    python benchmarks/bench_candidates.py car_racing --candidates 24 --episodes 4 --workers 2
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from collectors.sac import SACAgent
from collectors.state_recipe import play_candidates, state_recipe
from lqv_d4rl.car_racing import make_state_simulator
from lqv_d4rl.tasks import get_task
from run_info import git_commit


def write_candidates(task, count, work_dir):
    """``count`` randomly initialized actors of the cpu preset, saved as candidate snapshots."""
    recipe = state_recipe(task)
    simulator = make_state_simulator(task)
    try:
        state_dim = len(simulator.reset(seed=0)[0])
    finally:
        simulator.close()
    action_dim = get_task(task).action_dim
    candidates = []
    for index in range(count):
        snapshot = f"candidate{index:03d}.pt"
        SACAgent(recipe.sac, state_dim, action_dim, seed=index).save_actor(work_dir / snapshot)
        candidates.append({"policy_id": f"candidate{index:03d}", "snapshot": snapshot,
                           "index": index})
    return candidates


def timed_play(task, candidates, settings, workers):
    """``(seconds, returns by policy id)`` of playing every candidate with ``workers``."""
    simulator = make_state_simulator(task)
    try:
        start = time.perf_counter()
        returns = dict(play_candidates(task, candidates, settings, workers=workers,
                                       simulator=simulator))
        return time.perf_counter() - start, returns
    finally:
        simulator.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", nargs="?", default="car_racing")
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per candidate")
    parser.add_argument("--max-episode-steps", type=int, default=None,
                        help="cut the episodes short (default: the task's own length)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        work_dir = Path(folder)
        candidates = write_candidates(args.task, args.candidates, work_dir)
        settings = {"work_dir": work_dir, "seed": 0, "episodes": args.episodes,
                    "max_episode_steps": args.max_episode_steps}
        serial, serial_returns = timed_play(args.task, candidates, settings, 1)
        parallel, parallel_returns = timed_play(args.task, candidates, settings, args.workers)
    if parallel_returns != serial_returns:
        raise SystemExit("the worker processes returned other episode returns than one process")
    record = {"task": args.task, "candidates": args.candidates, "episodes": args.episodes,
              "workers": args.workers, "torch_threads": torch.get_num_threads(),
              "one_process_s": round(serial, 2), "workers_s": round(parallel, 2),
              "speedup": round(serial / parallel, 2), "same_returns": True,
              "commit": git_commit()}
    print(f"{args.task}: {args.candidates} candidates x {args.episodes} episodes: one process "
          f"{serial:.1f} s, {args.workers} workers {parallel:.1f} s "
          f"(x{serial / parallel:.2f}, worker start-up included); same returns")
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
