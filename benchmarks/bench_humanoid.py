"""Where the sac-state recipe's time goes on humanoid_walk, and what the machine's cores can buy.

humanoid_walk (67 state values, 21 actions, the heaviest dm_control task) takes the CPU recipe
longest. This measures, in one run (interleaved, so that a busy machine slows both sides alike):

* SAC updates/s (batch 256, 3 x 256, the cpu preset) with 1 torch thread against 2, and, with 2
  threads, of the larger SAC that public runs saw walk within 3M environment steps
  (:data:`LARGE_SAC`);
* training episodes played on the physics alone, agent steps/s: one simulator in this process
  (the recipe's way) against the same episodes split over 2 worker processes (a vector
  environment), with the policy acting on every step;
* what a training episode then costs at several update-to-data ratios (updates per agent step):
  seconds of updates and of playing per 500-step episode, from the two rates above.

Usage: ``python benchmarks/bench_humanoid.py [--updates 200] [--episodes 4] [--repeats 2]``.
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.pop(_variable, None)  # thread counts are set per measurement below

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402


import lqv_d4rl  # noqa: E402,F401  (pins the CPU kernels before torch starts)
import torch  # noqa: E402
from bench_sac import random_replay  # noqa: E402
from collectors.sac import SACAgent, SACConfig, SACPolicy  # noqa: E402

TASK = "humanoid_walk"
STATE_DIM, ACTION_DIM, EPISODE_STEPS = 67, 21, 500
LARGE_SAC = {"units": 1024, "actor_layers": 2, "critic_layers": 2, "batch_size": 1024}
"""The network and batch sizes of denisyarats/pytorch_sac (config/agent/sac.yaml), whose 3 seeds
reached a mean evaluation return of 571 on humanoid_walk at 3M environment steps (data/sac.csv;
action repeat 1, so 3M updates); the cpu preset's SAC stays near 2 there (DATASETS.md)."""


def update_rate(threads, updates, **sizes):
    """SAC updates/s with ``threads`` torch threads (after 5 warm-up updates); ``sizes``
    replace the cpu preset's network and batch sizes."""
    torch.set_num_threads(threads)
    replay = random_replay(STATE_DIM, ACTION_DIM)
    config = dataclasses.replace(SACConfig.cpu(TASK), **sizes)
    agent = SACAgent(config, STATE_DIM, ACTION_DIM, seed=0)
    batches = [replay.sample(config.batch_size) for _ in range(updates + 5)]
    for batch in batches[:5]:
        agent.update(batch)
    start = time.perf_counter()
    for batch in batches[5:]:
        agent.update(batch)
    return updates / (time.perf_counter() - start)


def play_episodes(seeds, steps):
    """Play ``seeds`` episodes of ``steps`` agent steps with an untrained actor; agent steps."""
    from collectors.state_recipe import simulate_episode
    from lqv_d4rl.physics import StateSimulator

    torch.set_num_threads(1)
    simulator = StateSimulator(TASK)
    actor = SACPolicy.of(SACAgent(SACConfig.cpu(TASK), STATE_DIM, ACTION_DIM, seed=0))
    played = 0
    for seed in seeds:
        episode = simulate_episode(simulator, actor, seed, explore=True, noise_seed=seed,
                                   max_episode_steps=steps)
        played += episode.num_agent_steps
    simulator.close()
    return played


def play_rate(workers, episodes, steps, pool=None):
    """Agent steps/s of ``episodes`` episodes split over ``workers`` processes (1: here)."""
    seeds = list(range(episodes))
    start = time.perf_counter()
    if workers == 1:
        played = play_episodes(seeds, steps)
    else:
        shares = [seeds[i::workers] for i in range(workers)]
        played = sum(pool.starmap(play_episodes, [(share, steps) for share in shares]))
    return played / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=EPISODE_STEPS)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    updates = {1: 0.0, 2: 0.0}
    large_updates = 0.0
    playing = {1: 0.0, 2: 0.0}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        play_rate(2, 2, 10, pool)  # start the workers (imports, MuJoCo) before timing
        for _ in range(args.repeats):
            for threads in updates:
                updates[threads] = max(updates[threads], update_rate(threads, args.updates))
            large_updates = max(large_updates,
                                update_rate(2, max(args.updates // 10, 5), **LARGE_SAC))
            for workers in playing:
                playing[workers] = max(playing[workers],
                                       play_rate(workers, args.episodes, args.steps, pool))
    torch.set_num_threads(1)
    print(f"\nSAC updates/s ({TASK}: {STATE_DIM} -> {ACTION_DIM}, batch 256, 3 x 256, best of "
          f"{args.repeats}):")
    for threads, rate in updates.items():
        print(f"  {threads} torch thread(s)  {rate:7.1f}  ({rate / updates[1]:.2f}x)")
    print(f"  pytorch_sac's sizes (batch 1024, 2 x 1024), 2 threads  {large_updates:7.2f}  "
          f"({large_updates / updates[2]:.3f}x of the cpu preset with 2 threads; its 3M updates "
          f"would take {3e6 / large_updates / 86400:.1f} days)")
    print(f"\ntraining episodes on the physics alone, agent steps/s (policy acting, "
          f"{args.episodes} x {args.steps} steps):")
    for workers, rate in playing.items():
        label = "this process" if workers == 1 else f"{workers} worker processes"
        print(f"  {label:20s} {rate:7.1f}  ({rate / playing[1]:.2f}x)")
    print("\nseconds per 500-step training episode (1 thread, 1 process) by updates per agent step:")
    for ratio in (0.05, 0.1, 0.25, 0.5, 1.0):
        updating = ratio * EPISODE_STEPS / updates[1]
        play = EPISODE_STEPS / playing[1]
        print(f"  {ratio:4.2f}: updates {updating:6.1f} s + playing {play:5.1f} s "
              f"(updates {updating / (updating + play):.0%} of the time)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
