"""The benchmark's environments in gymnasium's registry: ``lqv_d4rl/<task>-v0`` for every task.

``import lqv_d4rl`` registers them, so that::

    import gymnasium, lqv_d4rl
    env = gymnasium.make("lqv_d4rl/walker_walk-v0")                    # procedural video
    env = gymnasium.make("lqv_d4rl/cheetah_run-v0", distractor="~/kinetics/driving_car",
                         composite="color", seed=3)
    obs, info = env.reset(seed=7)

(``gymnasium.make("lqv_d4rl:lqv_d4rl/walker_walk-v0")`` imports lqv_d4rl itself.) Keyword
arguments are those of :func:`lqv_d4rl.make_env`. ``env.spec`` names the id and its arguments,
with ``max_episode_steps`` 500 (the task's episode); ``env.metadata["render_fps"]`` is the agent
steps per simulated second (what ``gymnasium.wrappers.RecordVideo`` plays back at).

Seeds. As gymnasium expects, ``reset(seed=s)`` alone decides the episode that follows: the task's
initial state, the background's start frame and the background video itself. For that the
background pool is built from ``video_seed`` (default :data:`VIDEO_SEED`), not from the ``seed``
argument, which only seeds the episodes of ``reset()`` calls without a seed. (``make_env(task,
seed=s)`` builds its pool from ``s``; ``make_env(task, seed=s, video_seed=0)`` is the gymnasium
environment.)
"""

import gymnasium

from .tasks import TASKS, get_task

NAMESPACE = "lqv_d4rl"
VERSION = 0
ENTRY_POINT = "lqv_d4rl.gym_registration:make_gym_env"
VIDEO_SEED = 0
"""Seed of the background pool of the gymnasium environments (``video_seed=`` overrides it)."""


def gym_id(task: str) -> str:
    """The gymnasium id of benchmark ``task``, e.g. ``"lqv_d4rl/walker_walk-v0"``."""
    return f"{NAMESPACE}/{get_task(task).name}-v{VERSION}"


def make_gym_env(task, *, seed=0, video_seed=VIDEO_SEED, render_mode="rgb_array", **options):
    """The entry point of the gymnasium ids: :func:`lqv_d4rl.make_env` with a fixed ``video_seed``.

    ``render_mode`` can only be ``"rgb_array"`` (``render()`` returns the latest observation).
    """
    from .envs import EnvConfigError, make_env

    if render_mode not in ("rgb_array", None):
        raise EnvConfigError(f"render_mode must be 'rgb_array' (render() returns the latest "
                             f"observation), got {render_mode!r}")
    return make_env(task, seed=seed, video_seed=video_seed, **options)


def register_envs() -> None:
    """Add ``lqv_d4rl/<task>-v0`` to gymnasium's registry for every task (once)."""
    for task, spec in TASKS.items():
        if gym_id(task) not in gymnasium.registry:
            gymnasium.register(gym_id(task), entry_point=ENTRY_POINT, kwargs={"task": task},
                               max_episode_steps=spec.episode_steps)


def env_spec(task: str, **kwargs) -> gymnasium.envs.registration.EnvSpec:
    """The ``EnvSpec`` of ``gymnasium.make(gym_id(task), **kwargs)``, made without building the
    environment (e.g. to store in a Minari dataset, whose ``recover_environment()`` makes it)."""
    registered = gymnasium.spec(gym_id(task))
    return gymnasium.envs.registration.EnvSpec(
        id=registered.id, entry_point=registered.entry_point,
        max_episode_steps=registered.max_episode_steps, kwargs={**registered.kwargs, **kwargs})


def env_kwargs_of_manifest(manifest: dict) -> dict | None:
    """The ``gymnasium.make`` keyword arguments of the environment a dataset was recorded in, read
    from its manifest (see :mod:`lqv_d4rl.eval_env`); None when the manifest does not record a
    background this toolkit can make again (data made elsewhere and imported)."""
    from .eval_env import EvalEnvError, env_kwargs_from_manifest, make_env_arguments

    try:
        return make_env_arguments(env_kwargs_from_manifest(manifest, check_videos=False))
    except EvalEnvError:
        return None


register_envs()
