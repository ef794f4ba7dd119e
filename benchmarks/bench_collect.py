"""Collection throughput: environment steps/s with N worker processes vs 1, and TIA updates/s.

Part 1 plays rounds of ``--num-envs`` episodes (walker_walk, procedural distractor, the real
observation pipeline) with ``make_vector_env(..., workers=W)`` for every W of ``--workers`` in the
same run, interleaved ``--repeats`` times (best run counts), with two policies: uniform random
actions (environment-bound) and a TIA smoke agent acting with exploration (the recorders' case).
It prints agent steps/s and environment steps/s (x action repeat 2) and the ratio to 1 worker.
The figures are wall-clock rates: parallel workers only pay off when the machine has idle cores.

Part 2 times TIA updates (``collectors.tia.benchmark_update``): smoke sizes on the CPU, and the
paper sizes (batch 50 x 50, depth 26, dense 400) on CUDA when a GPU is present (or with
``--paper-cpu``, slow). Usage::

    python benchmarks/bench_collect.py                       # workers 1,2; 4 envs; 100 steps
    python benchmarks/bench_collect.py --workers 1,2,4 --num-envs 8 --steps 200
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import time  # noqa: E402


import distractors  # noqa: E402
import lqv_d4rl  # noqa: E402,F401  (sets MUJOCO_GL)
from collectors.recorders import UniformRandomPolicy, play_round  # noqa: E402
from collectors.vector_env import make_vector_env  # noqa: E402

TASK = "walker_walk"
ACTION_DIM = 6
ACTION_REPEAT = 2


def collection_rate(venv, policy, steps):
    """Agent steps per wall-clock second of one round of ``steps``-step episodes."""
    seeds = list(range(venv.num_envs))
    play_round(venv, policy, seeds, explore=True, max_episode_steps=2)  # warm up (first renders)
    start = time.perf_counter()
    play_round(venv, policy, seeds, explore=True, max_episode_steps=steps)
    return venv.num_envs * steps / (time.perf_counter() - start)


def bench_collection(args, pool):
    import torch

    from collectors.tia import TIAAgent, TIAConfig

    torch.set_num_threads(1)
    policies = {"uniform random": UniformRandomPolicy(ACTION_DIM),
                "TIA smoke agent": TIAAgent(TIAConfig.smoke(), ACTION_DIM, seed=0)}
    worker_counts = [int(w) for w in args.workers.split(",")]
    venvs = {w: make_vector_env(TASK, args.num_envs, workers=w, env_kwargs={"distractor": pool})
             for w in worker_counts}
    best = {(name, w): 0.0 for name in policies for w in worker_counts}
    try:
        for _ in range(args.repeats):
            for name, policy in policies.items():
                for workers, venv in venvs.items():
                    rate = collection_rate(venv, policy, args.steps)
                    best[name, workers] = max(best[name, workers], rate)
    finally:
        for venv in venvs.values():
            venv.close()
    print(f"\ncollection, {TASK}, {args.num_envs} envs, {args.steps}-step episodes, "
          f"{os.cpu_count()} CPUs (best of {args.repeats})")
    print(f"{'policy':<18}{'workers':>8}{'agent steps/s':>15}{'env steps/s':>13}{'vs 1':>7}")
    for name in policies:
        base = best[name, worker_counts[0]]
        for workers in worker_counts:
            rate = best[name, workers]
            print(f"{name:<18}{workers:>8}{rate:>15.1f}{rate * ACTION_REPEAT:>13.1f}"
                  f"{rate / base:>7.2f}")


def bench_updates(args):
    import torch

    from collectors.tia import TIAConfig, benchmark_update

    torch.set_num_threads(1)
    runs = [("smoke", TIAConfig.smoke(), "cpu", args.update_steps)]
    if torch.cuda.is_available():
        runs.append(("paper", TIAConfig.paper(TASK), "cuda", args.update_steps * 5))
    elif args.paper_cpu:
        runs.append(("paper", TIAConfig.paper(TASK), "cpu", 2))
    print(f"\nTIA updates ({TASK}, torch threads 1)")
    print(f"{'sizes':<8}{'device':<8}{'batch':>10}{'updates/s':>11}{'s/update':>10}"
          f"{'CPU s/update':>14}")
    for name, config, device, steps in runs:
        result = benchmark_update(config, steps, action_dim=ACTION_DIM, device=device)
        print(f"{name:<8}{device:<8}{config.batch_size:>5}x{config.seq_len:<4}"
              f"{result['steps_per_s']:>11.2f}{result['seconds_per_update']:>10.3f}"
              f"{result.get('cpu_seconds_per_update', float('nan')):>14.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--num-envs", type=int, default=4, help="episodes played at once")
    parser.add_argument("--steps", type=int, default=100, help="agent steps per episode")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--update-steps", type=int, default=5, help="timed TIA updates")
    parser.add_argument("--paper-cpu", action="store_true",
                        help="also time paper-size updates on the CPU (no GPU present)")
    args = parser.parse_args()
    pool = distractors.make_video_pool(None, num_frames=200, seed=0)
    bench_collection(args, pool)
    bench_updates(args)


if __name__ == "__main__":
    main()
