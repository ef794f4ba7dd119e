"""One experiment: train an algorithm on a dataset in a run folder, evaluate it, analyse it.

This is what ``lqv-d4rl train`` and the leaderboard call for every run::

    from lqv_d4rl.experiment import run_experiment
    result = run_experiment("semopo", "walker_walk-medrep", preset="smoke", out="runs/demo")
    result["normalized_score"]

Files in the run folder are described in :mod:`lqv_d4rl.runs`; evaluation adds ``eval.json`` (raw
returns, their mean, normalized scores; see :func:`lqv_d4rl.evaluation.evaluate`) and, with
``rgb_background``, ``eval_rgb.json`` (the paper's Table 2 colour backgrounds).
"""

import time
import warnings
from pathlib import Path

from . import algorithms
from .evaluation import evaluate, summarize, with_rgb_background, with_video_dir
from .runs import EVAL_NAME, Run, is_finished, read_run_config
from .seeding import make_cuda_deterministic

EVAL_RGB_NAME = "eval_rgb.json"
EVAL_SEED_OFFSET = 10_000
"""Evaluation episodes of training seed k start at ``10_000 + 1000 k``: apart from every seed used to
collect the datasets and to train."""


def eval_seed(seed):
    """First evaluation seed of a run trained with ``seed``."""
    return EVAL_SEED_OFFSET + 1000 * int(seed)


def default_preset(device):
    """``paper`` on a GPU; ``smoke`` on a CPU-only machine (a paper-size run there takes weeks)."""
    return "paper" if str(device).startswith("cuda") else "smoke"


def check_device(device):
    """The device string of ``device``; :class:`lqv_d4rl.torch_data.DeviceUnavailableError` (one
    line) for a device this machine does not have (see :func:`lqv_d4rl.torch_data.check_device`)."""
    from .torch_data import check_device as checked_device

    return str(checked_device(device))


def run_experiment(algorithm, dataset, *, preset=None, config=None, settings=(), overrides=None,
                   out, seed=0, device="cpu", root=None, resume=False, overwrite=False,
                   eval_episodes=None, eval_workers=1, rgb_background=False, video_dir=None,
                   analyse=True, stop_after=None, deterministic=False, progress=True, echo=print,
                   rgb_eval=None):
    """Train ``algorithm`` on ``dataset`` in the run folder ``out``, then evaluate (and analyse).

    Args:
        algorithm: a registry name or an :class:`lqv_d4rl.algorithms.Algorithm`.
        dataset: a dataset id or folder, or a loaded :class:`lqv_d4rl.Dataset`.
        preset: the algorithm's preset (default: ``paper`` on CUDA, ``smoke`` on a CPU).
        config: a ready config dataclass (then ``preset`` only names it in ``config.json``).
        settings: ``["key=value", ...]`` applied on top (``--set``), parsed by field type.
        overrides: ``{field: value}`` applied on top.
        out: the run folder.
        seed: seeds the whole run; evaluation uses :func:`eval_seed`.
        device: torch device of training.
        root: dataset root for ids.
        resume, overwrite: continue an unfinished run / replace any run in ``out``.
        eval_episodes: evaluation episodes (default: the config's ``eval_episodes``).
        eval_workers: processes for evaluation episodes.
        rgb_background: also evaluate over colour backgrounds (``eval_rgb.json``).
        video_dir: the dataset's background videos, where the manifest's path is not valid here.
        analyse: run the algorithm's analysis into the run folder (if it has one).
        stop_after: stop training after this many updates (checkpointed); continue with ``resume``.
        deterministic: on CUDA, use deterministic kernels (slower) so that the same seed gives the
            same run on the same GPU and software (on CPU runs repeat anyway).
        progress, echo: tqdm bars and the function that prints one-line messages.
        rgb_eval: deprecated name of ``rgb_background`` (a DeprecationWarning says so).

    Returns:
        the evaluation dict (see :func:`lqv_d4rl.evaluation.evaluate`), or None when training stopped
        early because of ``stop_after``.
    """
    from .dataset import load_dataset

    if rgb_eval is not None:
        warnings.warn("run_experiment(rgb_eval=...) is deprecated: the argument is now "
                      "rgb_background, as everywhere else", DeprecationWarning, stacklevel=2)
        rgb_background = rgb_eval
    algorithm = algorithm if isinstance(algorithm, algorithms.Algorithm) else algorithms.get(algorithm)
    device = check_device(device)
    if deterministic and device.startswith("cuda"):
        make_cuda_deterministic()
    preset = preset or default_preset(device)
    loaded_here = not hasattr(dataset, "episode_lengths")
    # lazily first (the images stay in the shards): the config needs the task, and a model of the
    # stored states (observation="state") never reads a frame, so only image learners load them
    data = load_dataset(dataset, root=root, lazy=True) if loaded_here else dataset
    if config is None:
        config = algorithm.config(preset, task=data.task, **(overrides or {}))
    if settings:
        config = algorithms.apply_settings(config, settings, algorithm.name)
    if loaded_here and getattr(config, "observation", "image") != "state":
        data.close()
        data = load_dataset(dataset, root=root)
    episodes = eval_episodes or getattr(config, "eval_episodes", 10)
    env_kwargs = data.eval_env_kwargs(video_dir=video_dir)  # fails now, not after training
    run = Run.open(out, algorithm, config, data, seed=seed, device=device, resume=resume,
                   overwrite=overwrite, stop_after=stop_after, progress=progress,
                   extra={"preset": preset, "eval_env": env_kwargs, "deterministic": deterministic,
                          "dataset_source": None if hasattr(dataset, "episode_lengths")
                          else str(dataset)})
    echo(f"{algorithm.name} on {', '.join(sorted(set(map(str, data.dataset_ids))))}: {len(data)} "
         f"episodes, {data.num_steps} steps; preset {preset}, seed {seed}, device {device}; "
         f"run folder {run.path}")
    started = time.perf_counter()
    try:
        algorithm.train(data, config, run, device)
    finally:
        run.close()
    if run.stopped:
        echo(f"stopped after the requested number of updates; continue with --resume "
             f"(run folder {run.path})")
        return None
    train_seconds = run.train_seconds
    result = _evaluate_run(algorithm, run.path, env_kwargs, episodes, seed, eval_workers, device,
                           getattr(config, "eval_max_steps", None), progress)
    result["train_seconds"] = train_seconds
    result["session_seconds"] = time.perf_counter() - started
    _write_eval(run, result, EVAL_NAME, echo, "own background")
    if rgb_background:
        rgb = _evaluate_run(algorithm, run.path, with_rgb_background(env_kwargs), episodes, seed,
                            eval_workers, device, getattr(config, "eval_max_steps", None), progress)
        _write_eval(run, rgb, EVAL_RGB_NAME, echo, "RGB background")
    if analyse and algorithm.analyse is not None:
        written = algorithm.analyse(run.path, data, run.path, device)
        echo("analysis: " + ", ".join(Path(path).name for path in written.values()))
    return result


def _evaluate_run(algorithm, path, env_kwargs, episodes, seed, workers, device, max_steps, progress):
    policy = algorithm.load(path, device=device)
    return evaluate(policy, env_kwargs, episodes, first_episode_seed=eval_seed(seed),
                    workers=workers, max_steps=max_steps, progress=progress)


def _write_eval(run, result, name, echo, label):
    run.metrics.write("eval", 0, {"mean_return": result["mean_return"],
                                  "normalized_score": result["normalized_score"]})
    run.write_json(name, result)
    echo(f"{label}: {summarize(result)}")


def evaluate_run(path, *, episodes=None, workers=1, rgb_background=False, video_dir=None,
                 device="cpu", seed=None, progress=True, echo=print):
    """Evaluate the finished (or stopped) run in ``path`` again and write ``eval.json``
    (``eval_rgb.json`` with ``rgb_background``); returns the result.

    The environment comes from the run's ``config.json`` (the training dataset's own settings);
    ``video_dir`` replaces the video folder recorded there.
    """
    record = read_run_config(path)
    algorithm = algorithms.get(record["algorithm"])
    env_kwargs = record["eval_env"]
    if video_dir is not None:
        env_kwargs = with_video_dir(env_kwargs, video_dir)
    if rgb_background:
        env_kwargs = with_rgb_background(env_kwargs)
    config = algorithms.config_from_dict(algorithm.config_class, record["config"], algorithm.name)
    episodes = episodes or getattr(config, "eval_episodes", 10)
    seed = record["seed"] if seed is None else seed
    result = _evaluate_run(algorithm, path, env_kwargs, episodes, seed, workers, check_device(device),
                           getattr(config, "eval_max_steps", None), progress)
    run = Run(path, algorithm=algorithm.name, config=config, seed=seed, device=device, record=record)
    _write_eval(run, result, EVAL_RGB_NAME if rgb_background else EVAL_NAME, echo,
                "RGB background" if rgb_background else "own background")
    return result


__all__ = ["check_device", "default_preset", "eval_seed", "evaluate_run", "is_finished",
           "run_experiment"]
