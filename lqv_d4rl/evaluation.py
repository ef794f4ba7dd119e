"""Evaluating a policy online, in the environment its training dataset was recorded in.

::

    data = lqv_d4rl.load_dataset("walker_walk-medrep")
    policy = lqv_d4rl.algorithms.get("semopo").load("runs/semopo-walker")
    result = evaluate(policy, data.eval_env_kwargs(), episodes=10, first_episode_seed=10_000,
                      workers=4)
    result["mean_return"], result["normalized_score"]

A *policy* is any picklable object with ``reset()`` (start an episode) and ``policy(observation)``
(one ``(64, 64, 3)`` uint8 observation -> action in [-1, 1]^A). A policy whose
``observation_key`` attribute is ``"state"`` (a latent model trained with ``observation="state"``)
is given the environment's ``info["state"]`` instead of the frame: the task's low-dimensional
state, with the dataset's exogenous dimensions appended where its manifest records an exogenous
process (:mod:`lqv_d4rl.exogenous`). Episode ``i`` plays in an
environment reset with seed ``first_episode_seed + i``, under a torch RNG seeded with the same and
one CPU thread, so its return does not depend on how many ``workers`` shared the episodes. (The
name is not ``seed``: elsewhere, as in ``lqv-d4rl train/evaluate --seed`` and
:func:`lqv_d4rl.experiment.evaluate_run`, ``seed`` is the training seed, whose evaluation episodes
start at :func:`lqv_d4rl.experiment.eval_seed`.)

The environment settings (*env kwargs*) come from the dataset's manifest
(:mod:`lqv_d4rl.eval_env`): evaluation happens in the environment the data was recorded in.
"""

import contextlib
import io
import time
import warnings

import numpy as np

from .eval_env import (  # noqa: F401  (re-exported: the evaluation API in one place)
    EvalEnvError, env_kwargs_from_manifest, make_eval_env, with_rgb_background, with_video_dir,
)
from .scores import get_normalized_score
from .seeding import seeded_torch


def evaluate(policy, env_kwargs, episodes=10, *, first_episode_seed=0, workers=1, max_steps=None,
             progress=False, seed=None):
    """Play ``episodes`` episodes of ``policy``; returns a JSON-able dict of returns and scores.

    Args:
        policy: ``reset()`` and ``policy(observation) -> action`` (see the module docstring).
        env_kwargs: the environment, from ``Dataset.eval_env_kwargs()``.
        episodes: number of episodes (the paper evaluates 10).
        first_episode_seed: episode ``i`` uses ``first_episode_seed + i`` for the environment and
            the policy's torch RNG; keep it apart from the seeds the data was collected with.
        workers: processes that play episodes in parallel (each gets a CPU copy of the policy);
            1 plays them here, on the policy's own device.
        max_steps: cap on agent steps per episode (None: the task's full episode); a capped return
            is not comparable with the paper's.
        progress: show a tqdm bar over episodes.
        seed: deprecated name of ``first_episode_seed`` (a DeprecationWarning says so).

    Returns:
        ``{"task", "env", "episodes", "first_episode_seed", "max_steps", "returns", "lengths",
        "mean_return", "std_return", "normalized_scores", "normalized_score",
        "normalized_score_std", "normalized_score_table1", "reference", "workers", "seconds"}``;
        normalized scores use the paper's Table 3 references (``normalized_score_table1``: the references the paper's Table 1
        was computed with; they differ for car_racing).
    """
    from tqdm.auto import tqdm

    if seed is not None:
        warnings.warn("evaluate(seed=...) is deprecated: the argument is now first_episode_seed "
                      "(seed means the training seed elsewhere)", DeprecationWarning, stacklevel=2)
        first_episode_seed = seed
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    started = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"evaluate {env_kwargs['task']}", unit="episode",
               disable=not progress)
    try:
        if workers == 1 or episodes == 1:
            outcomes = _play_here(policy, env_kwargs, episodes, first_episode_seed, max_steps,
                                  bar)
        else:
            outcomes = _play_in_workers(policy, env_kwargs, episodes, first_episode_seed,
                                        max_steps, min(workers, episodes), bar)
    finally:
        bar.close()
    returns = np.array([outcome[0] for outcome in outcomes], dtype=np.float64)
    task = env_kwargs["task"]
    scores = np.atleast_1d(get_normalized_score(task, returns, reference="paper"))
    table1 = np.atleast_1d(get_normalized_score(task, returns, reference="paper_table1"))
    return {
        "task": task, "env": env_kwargs, "episodes": episodes,
        "first_episode_seed": int(first_episode_seed),
        "max_steps": max_steps, "returns": returns.tolist(),
        "lengths": [int(outcome[1]) for outcome in outcomes],
        "mean_return": float(returns.mean()), "std_return": float(returns.std()),
        "normalized_scores": scores.tolist(), "normalized_score": float(scores.mean()),
        "normalized_score_std": float(scores.std()),
        "normalized_score_table1": float(table1.mean()), "reference": "paper",
        "workers": workers, "seconds": time.perf_counter() - started,
    }


def play_episode(policy, env, seed, max_steps=None):
    """One episode of ``policy`` in ``env``, reset with ``seed`` and under a torch RNG seeded with
    it (the caller's RNG state is restored); returns ``(return, agent steps)``."""
    key = getattr(policy, "observation_key", "image")
    with seeded_torch(seed), _one_thread():
        policy.reset()
        observation, info = env.reset(seed=int(seed) % 2**32)
        total, steps = 0.0, 0
        while max_steps is None or steps < max_steps:
            action = policy(info["state"] if key == "state" else observation)
            observation, reward, terminated, truncated, info = env.step(action)
            total += reward
            steps += 1
            if terminated or truncated:
                break
    return total, steps


@contextlib.contextmanager
def _one_thread():
    """One torch thread: the same floating-point results here as in a worker process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _play_here(policy, env_kwargs, episodes, seed, max_steps, bar):
    env = make_eval_env(env_kwargs, seed)
    outcomes = []
    try:
        for index in range(episodes):
            outcomes.append(play_episode(policy, env, seed + index, max_steps))
            bar.update(1)
    finally:
        env.close()
    return outcomes


def _play_in_workers(policy, env_kwargs, episodes, seed, max_steps, workers, bar):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    payload = _serialize_policy(policy)
    context = multiprocessing.get_context("spawn")  # torch and MuJoCo are not fork-safe
    outcomes = [None] * episodes
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                             initargs=(payload, env_kwargs, seed)) as pool:
        futures = {pool.submit(_worker_episode, seed + index, max_steps): index
                   for index in range(episodes)}
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
            bar.update(1)
    return outcomes


def _serialize_policy(policy):
    import torch

    buffer = io.BytesIO()
    torch.save(policy, buffer)
    return buffer.getvalue()


_worker = {}


def _worker_start(payload, env_kwargs, seed):
    import torch

    torch.set_num_threads(1)
    policy = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    if hasattr(policy, "to"):
        moved = policy.to("cpu")
        policy = policy if moved is None else moved
    _worker["policy"] = policy
    _worker["env"] = make_eval_env(env_kwargs, seed)


def _worker_episode(episode_seed, max_steps):
    return play_episode(_worker["policy"], _worker["env"], episode_seed, max_steps)


def summarize(result):
    """One line: mean return +- std, normalized score, episodes."""
    return (f"return {result['mean_return']:.1f} +- {result['std_return']:.1f}, normalized score "
            f"{result['normalized_score']:.3f} over {result['episodes']} episodes")
