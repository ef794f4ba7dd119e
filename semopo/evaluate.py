"""Online evaluation of a trained agent in the distracted environment, with normalized scores.

The paper evaluates in the environment the data came from (grayscale driving-video background) and,
for its Table 2, in the same tasks with *colour* backgrounds the agent never saw
(``rgb_background=True``). Scores are normalized with the paper's Table 3 references
(``lqv_d4rl.scores.PAPER_REFERENCES``).
"""

import numpy as np
import torch

from lqv_d4rl.envs import make_env
from lqv_d4rl.scores import get_normalized_score


def evaluate(agent, task=None, episodes=10, *, rgb_background=False, seed=1000, max_steps=None,
             distractor="procedural", composite="segmentation", progress=False, **env_options):
    """Run ``episodes`` episodes of the agent's deterministic policy; returns a JSON-able dict.

    Args:
        agent: a trained :class:`semopo.SeMOPOAgent`.
        task: benchmark task (default: the task the agent was trained on).
        episodes: number of episodes (the released code evaluates 10).
        rgb_background: colour backgrounds (the paper's Table 2 generalization test).
        seed: seeds the environment (initial states and background starts) and the latent samples;
            episode i uses ``seed + i``. Pick one apart from the data-collection seeds.
        max_steps: stop each episode after this many agent steps (None: the task's full episode);
            a capped return is not comparable with the paper's.
        distractor, composite: background source and compositing, as in ``lqv_d4rl.make_env``.
        progress: show a tqdm bar over the episodes.
        env_options: further ``make_env`` arguments (e.g. ``num_video_frames``).

    Returns:
        ``{"task", "episodes", "rgb_background", "seed", "max_steps", "returns", "lengths",
        "mean_return", "std_return", "normalized_scores", "mean_normalized_score",
        "std_normalized_score", "reference"}``; normalized scores use the paper's references.
    """
    from tqdm.auto import tqdm

    task = task or agent.task
    if task is None:
        raise ValueError("evaluate() needs the task: the agent does not know which task it was "
                         "trained on; pass task=...")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    env = make_env(task, distractor=distractor, composite=composite, rgb_background=rgb_background,
                   seed=seed, **env_options)
    returns, lengths = [], []
    try:
        for episode in tqdm(range(episodes), desc=f"eval {task}", disable=not progress):
            episode_return, length = run_episode(agent, env, seed=seed + episode, max_steps=max_steps)
            returns.append(episode_return)
            lengths.append(length)
    finally:
        env.close()
    scores = np.atleast_1d(get_normalized_score(task, np.array(returns), reference="paper"))
    return {
        "task": task,
        "episodes": episodes,
        "rgb_background": bool(rgb_background),
        "seed": seed,
        "max_steps": max_steps,
        "returns": [float(value) for value in returns],
        "lengths": lengths,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "normalized_scores": [float(value) for value in scores],
        "mean_normalized_score": float(np.mean(scores)),
        "std_normalized_score": float(np.std(scores)),
        "reference": "paper",
    }


def run_episode(agent, env, *, seed, max_steps=None):
    """One episode of ``agent``'s policy in ``env``; returns ``(return, agent steps)``.

    The latent samples are drawn from a forked torch RNG seeded with ``seed``, so evaluation neither
    depends on nor disturbs the global random state.
    """
    policy = agent.policy()
    observation, _ = env.reset(seed=seed)
    total, steps = 0.0, 0
    cuda = agent.device.type == "cuda"
    with torch.random.fork_rng(devices=[agent.device.index or 0] if cuda else []):
        torch.manual_seed(seed)
        while max_steps is None or steps < max_steps:
            observation, reward, terminated, truncated, _ = env.step(policy(observation))
            total += reward
            steps += 1
            if terminated or truncated:
                break
    return total, steps
