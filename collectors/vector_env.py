"""Step several benchmark environments at once, in this process or in worker processes.

``make_vector_env(task, num_envs, workers=N)`` returns a vector environment with a batched API::

    venv = make_vector_env("walker_walk", num_envs=4, workers=2, env_kwargs={"distractor": pool})
    obs, infos = venv.reset(seeds=[10, 11, 12, 13])        # obs: (4, 64, 64, 3) uint8
    obs, rewards, terminated, truncated, infos = venv.step(actions)   # actions: (4, A)
    venv.close()                                            # or use it as a context manager

Environment ``i`` is always built and driven the same way, whichever process it lives in, so the
same seeds and actions give the same observations with 1 worker or N. ``workers=1`` steps every
environment in this process; ``workers > 1`` spreads them over worker processes started with the
``spawn`` context (a MuJoCo / EGL context must never be inherited through ``fork``). Each worker
builds its own environments with ``lqv_d4rl.make_env``; only actions, observations and small info
dicts travel between processes. As with any ``spawn`` multiprocessing, a script that creates a
vector env with ``workers > 1`` must do so under ``if __name__ == "__main__":``.

``step(actions, active=mask)`` steps only the environments whose mask entry is True (an episode
that ended waits there until the next ``reset``); inactive entries come back as zeros and empty
info dicts. A worker that raises, or dies, stops the whole vector env with a
:class:`VectorEnvError` carrying the worker's traceback; ``close()`` (also on KeyboardInterrupt, via
the context manager) shuts every worker down.
"""

import multiprocessing
import signal
import time
import traceback

import numpy as np

from lqv_d4rl.errors import LQVError

_CLOSE_TIMEOUT_S = 10.0


class VectorEnvError(LQVError, RuntimeError):
    """A worker environment failed or died; the message carries its traceback."""


class EnvGroup:
    """Some of a vector env's environments, driven one after the other (in any process).

    ``indices`` are the global indices of the environments; environment ``i`` is
    ``make_env(task, seed=env_seeds[i], **env_kwargs)``.
    """

    def __init__(self, task, indices, env_seeds, env_kwargs):
        import lqv_d4rl  # sets MUJOCO_GL before dm_control is imported in a fresh process

        self.indices = list(indices)
        self.envs = [lqv_d4rl.make_env(task, seed=int(env_seeds[i]), **env_kwargs)
                     for i in self.indices]

    def reset(self, seeds):
        """Reset every environment of the group; ``seeds`` holds one seed (or None) per env."""
        results = [env.reset(seed=None if seed is None else int(seed))
                   for env, seed in zip(self.envs, seeds)]
        return np.stack([obs for obs, _ in results]), [info for _, info in results]

    def step(self, actions, active):
        """Step the environments whose ``active`` entry is True; return their results in order."""
        results = []
        for env, action, is_active in zip(self.envs, actions, active):
            if is_active:
                obs, reward, terminated, truncated, info = env.step(action)
                results.append((obs, reward, terminated, truncated, info))
            else:
                results.append(None)
        return results

    def close(self):
        """Close every environment of the group."""
        for env in self.envs:
            env.close()


def split_indices(num_envs, workers):
    """Contiguous blocks of environment indices, one block per worker (no empty blocks)."""
    workers = max(1, min(int(workers), int(num_envs)))
    return [block.tolist() for block in np.array_split(np.arange(num_envs), workers)]


class VectorEnv:
    """Batched reset/step over ``num_envs`` environments held by one or more :class:`EnvGroup`.

    Subclasses say how to call the groups (:meth:`_call`: send one command to every group, then
    gather every reply, so that groups in other processes work in parallel).
    """

    def __init__(self, task, num_envs, *, groups_indices, observation_shape, action_dim):
        self.task = task
        self.num_envs = int(num_envs)
        self.action_dim = int(action_dim)
        self.observation_shape = tuple(observation_shape)
        self._groups_indices = groups_indices
        self._closed = False

    def reset(self, seeds):
        """Reset all environments (``seeds``: one int or None per env); return (obs, infos)."""
        seeds = list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, one per environment; "
                             f"got {len(seeds)}")
        replies = self._call("reset", [([seeds[i] for i in indices],)
                                       for indices in self._groups_indices])
        obs = np.concatenate([group_obs for group_obs, _ in replies])
        infos = [info for _, group_infos in replies for info in group_infos]
        return obs, infos

    def step(self, actions, active=None):
        """Step the environments (all, or those where ``active`` is True) with ``actions`` (N, A).

        Returns ``obs`` (N, H, W, 3) uint8, ``rewards`` (N,) float64, ``terminated`` and
        ``truncated`` (N,) bool and a list of N info dicts; inactive entries are zeros / ``{}``.
        """
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"step needs actions of shape {(self.num_envs, self.action_dim)}, "
                             f"got {actions.shape}")
        active = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        if active.shape != (self.num_envs,):
            raise ValueError(f"active needs one flag per environment, shape ({self.num_envs},); "
                             f"got {active.shape}")
        replies = self._call("step", [(actions[indices], active[indices])
                                      for indices in self._groups_indices])
        return self._assemble_step([result for group in replies for result in group])

    def _assemble_step(self, results):
        obs = np.zeros((self.num_envs,) + self.observation_shape, np.uint8)
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        infos = [{} for _ in range(self.num_envs)]
        for i, result in enumerate(results):
            if result is not None:
                obs[i], rewards[i], terminated[i], truncated[i], infos[i] = result
        return obs, rewards, terminated, truncated, infos

    def close(self):
        """Close every environment and stop the workers (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def _call(self, command, per_group_args):
        raise NotImplementedError

    def _shutdown(self):
        raise NotImplementedError


class InProcessVectorEnv(VectorEnv):
    """All environments in this process (``workers=1``)."""

    def __init__(self, task, num_envs, *, env_seeds, env_kwargs):
        self._group = EnvGroup(task, range(num_envs), env_seeds, env_kwargs)
        env = self._group.envs[0]
        super().__init__(task, num_envs, groups_indices=[list(range(num_envs))],
                         observation_shape=env.observation_space.shape,
                         action_dim=env.action_space.shape[0])

    def _call(self, command, per_group_args):
        return [getattr(self._group, command)(*per_group_args[0])]

    def _shutdown(self):
        self._group.close()


def _worker_main(connection, task, indices, env_seeds, env_kwargs):
    """Body of a worker process: build an EnvGroup, then answer commands until told to close."""
    # Ctrl-C reaches the whole process group; the main process handles it and closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = None
    try:
        group = EnvGroup(task, indices, env_seeds, env_kwargs)
        env = group.envs[0]
        connection.send(("ok", (env.observation_space.shape, env.action_space.shape[0])))
        while True:
            command, args = connection.recv()
            if command == "close":
                break
            connection.send(("ok", getattr(group, command)(*args)))
    except (EOFError, BrokenPipeError):
        pass  # the main process is gone
    except Exception:
        try:
            connection.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if group is not None:
            group.close()
        connection.close()


class SubprocessVectorEnv(VectorEnv):
    """Environments spread over ``workers`` processes (``spawn`` context by default)."""

    def __init__(self, task, num_envs, *, workers, env_seeds, env_kwargs, start_method="spawn"):
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver' (MuJoCo's GL context "
                             f"cannot be forked), got {start_method!r}")
        context = multiprocessing.get_context(start_method)
        groups_indices = split_indices(num_envs, workers)
        self._connections, self._processes = [], []
        self._closed = False  # __del__ may run if a worker fails to start
        try:
            for indices in groups_indices:
                parent, child = context.Pipe()
                process = context.Process(target=_worker_main, daemon=True,
                                          args=(child, task, indices, list(env_seeds),
                                                env_kwargs))
                process.start()
                child.close()
                self._connections.append(parent)
                self._processes.append(process)
            shapes = [self._receive(worker) for worker in range(len(groups_indices))]
        except BaseException:
            self._shutdown()
            raise
        observation_shape, action_dim = shapes[0]
        super().__init__(task, num_envs, groups_indices=groups_indices,
                         observation_shape=observation_shape, action_dim=action_dim)

    @property
    def workers(self):
        """Number of worker processes."""
        return len(self._processes)

    def _call(self, command, per_group_args):
        if self._closed:
            raise VectorEnvError("this vector env is closed")
        try:
            for connection, args in zip(self._connections, per_group_args):
                connection.send((command, args))
            return [self._receive(worker) for worker in range(len(self._connections))]
        except BaseException:
            self.close()  # a failed or interrupted exchange leaves the pipes out of step
            raise

    def _receive(self, worker):
        try:
            status, payload = self._connections[worker].recv()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            process = self._processes[worker]
            process.join(timeout=1.0)
            raise VectorEnvError(f"environment worker {worker} died (exit code "
                                 f"{process.exitcode}); see its output above") from None
        if status == "error":
            raise VectorEnvError(f"environment worker {worker} failed:\n{payload}")
        return payload

    def _shutdown(self):
        for connection in self._connections:
            try:
                connection.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for connection, process in zip(self._connections, self._processes):
            _drain_and_join(connection, process, _CLOSE_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
                process.join(timeout=_CLOSE_TIMEOUT_S)
        for connection in self._connections:
            connection.close()
        self._connections, self._processes = [], []


def _drain_and_join(connection, process, timeout):
    """Wait for ``process`` to exit, reading (and dropping) replies it still sends meanwhile.

    After an interruption a worker may still be answering the last command; reading its reply
    keeps it from blocking on a full pipe, so it reaches the close command and exits cleanly.
    """
    deadline = time.monotonic() + timeout
    while process.is_alive() and time.monotonic() < deadline:
        try:
            if connection.poll(0.05):
                connection.recv()
        except (EOFError, OSError):
            process.join(timeout=max(deadline - time.monotonic(), 0))
            return
    process.join(timeout=0)


def make_vector_env(task, num_envs, *, workers=1, seed=0, env_seeds=None, env_kwargs=None,
                    backend="process"):
    """Create ``num_envs`` environments of ``task`` stepped together.

    Args:
        task: benchmark task name.
        num_envs: number of environments (the batch of parallel episodes).
        workers: 1 steps them all in this process; N > 1 spreads them over N worker processes
            (or Ray actors with ``backend="ray"``), at most one per environment.
        seed: environment ``i`` is built with seed ``seed + i`` unless ``env_seeds`` is given.
            (Episodes are normally re-seeded by ``reset(seeds)`` anyway.)
        env_seeds: one construction seed per environment.
        env_kwargs: further ``make_env`` keyword arguments (e.g. ``distractor=VideoPool``:
            pass a pool, built once, rather than ``"procedural"``, which every env would rebuild).
        backend: ``"process"`` (multiprocessing, spawn) or ``"ray"`` (see collectors.ray_workers).
    """
    num_envs, workers = int(num_envs), int(workers)
    if num_envs < 1 or workers < 1:
        raise ValueError(f"num_envs and workers must be at least 1, got {num_envs} and {workers}")
    env_seeds = [seed + i for i in range(num_envs)] if env_seeds is None else list(env_seeds)
    if len(env_seeds) != num_envs:
        raise ValueError(f"env_seeds needs {num_envs} entries, got {len(env_seeds)}")
    env_kwargs = dict(env_kwargs or {})
    if backend == "ray":
        from .ray_workers import RayVectorEnv

        return RayVectorEnv(task, num_envs, workers=workers, env_seeds=env_seeds,
                            env_kwargs=env_kwargs)
    if backend != "process":
        raise ValueError(f"backend must be 'process' or 'ray', got {backend!r}")
    if workers == 1:
        return InProcessVectorEnv(task, num_envs, env_seeds=env_seeds, env_kwargs=env_kwargs)
    return SubprocessVectorEnv(task, num_envs, workers=workers, env_seeds=env_seeds,
                               env_kwargs=env_kwargs)
