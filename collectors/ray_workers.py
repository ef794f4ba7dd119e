"""The vector env of :mod:`collectors.vector_env` on Ray actors, for collection beyond one machine.

Install the extra first: ``pip install lqv-d4rl[ray]``. Ray is imported only when a
:class:`RayVectorEnv` is created; start (or connect to) a cluster with ``ray.init(...)`` beforehand,
otherwise a local one is started. Each actor holds a contiguous block of environments
(an :class:`~collectors.vector_env.EnvGroup`), exactly like a worker process, so observations are
the same as with ``workers=1`` for the same seeds::

    import ray
    ray.init(address="auto")
    venv = make_vector_env("walker_walk", num_envs=64, workers=16, backend="ray")
"""

from lqv_d4rl.errors import LQVError

from .vector_env import EnvGroup, VectorEnv, VectorEnvError, split_indices


class RayNotInstalledError(LQVError, ImportError):
    """The Ray backend was asked for but ``ray`` is not installed."""


def import_ray():
    """Import ray, or raise RayNotInstalledError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(
            "the Ray backend needs the 'ray' package: pip install 'lqv-d4rl[ray]' "
            "(or use the default multiprocessing backend, backend='process')"
        ) from None
    return ray


class RayVectorEnv(VectorEnv):
    """Environments spread over ``workers`` Ray actors (one CPU each)."""

    def __init__(self, task, num_envs, *, workers, env_seeds, env_kwargs, num_cpus_per_actor=1):
        ray = import_ray()
        self._ray = ray
        self._actors = []
        self._closed = False
        if not ray.is_initialized():
            ray.init(include_dashboard=False)
        actor_class = ray.remote(num_cpus=num_cpus_per_actor)(EnvGroup)
        groups_indices = split_indices(num_envs, workers)
        shared_kwargs = ray.put(env_kwargs)  # e.g. a VideoPool: sent once, not once per actor
        self._actors = [actor_class.remote(task, indices, list(env_seeds), shared_kwargs)
                        for indices in groups_indices]
        from lqv_d4rl.tasks import get_task

        super().__init__(task, num_envs, groups_indices=groups_indices,
                         observation_shape=(env_kwargs.get("size", 64),) * 2 + (3,),
                         action_dim=get_task(task).action_dim)

    def _call(self, command, per_group_args):
        if self._closed:
            raise VectorEnvError("this vector env is closed")
        futures = [getattr(actor, command).remote(*args)
                   for actor, args in zip(self._actors, per_group_args)]
        try:
            return self._ray.get(futures)
        except self._ray.exceptions.RayError as err:
            self.close()
            raise VectorEnvError(f"a Ray environment actor failed:\n{err}") from err
        except BaseException:
            self.close()
            raise

    def _shutdown(self):
        for actor in self._actors:
            try:
                self._ray.get(actor.close.remote())
            except self._ray.exceptions.RayError:
                pass  # already dead: killing it below is all that is left
            self._ray.kill(actor)
        self._actors = []
