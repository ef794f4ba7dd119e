"""Exogenous state dimensions: a variant of a dataset whose ``state`` carries K more dimensions with
their own dynamics, which no action affects, in the dataset and in evaluation alike.

The process is K/3 independent Lorenz-63 systems (sigma 10, rho 28, beta 8/3), integrated with
RK4 (``substeps`` steps of ``dt / substeps`` per agent step), each normalized to roughly unit scale
(``(x - center) / scale`` with the attractor's mean and standard deviation per coordinate). It is
chaotic (nearby starts part within a few agent-step dozens), costs nothing, needs no data at
evaluation time and is deterministic: the same episode seed gives the same exogenous states. An
episode's initial conditions are drawn from its seed (the dataset's ``episode_seeds``; in
evaluation the seed the environment is reset with), then run through ``burn_in`` RK4 steps so that
every system starts on its attractor.

::

    lqv-d4rl add-exogenous walker_walk-medrep --dims 24 --id walker_walk-medrep-exo24

:func:`lqv_d4rl.exogenous_dataset.add_exogenous` writes the new dataset (same images, actions,
rewards, flags and physics; ``state`` extended by K dimensions named ``exogenous_lorenz_<i>`` in
``spaces.state.fields``; provenance recording the source and the process spec under ``exogenous``). Evaluating a run
trained on it appends the same process, seeded from each evaluation episode's seed, to the
environment's ``info["state"]`` (:class:`ExogenousStateEnv`, built by
:func:`lqv_d4rl.eval_env.make_eval_env` from the manifest's spec, never by default).

Entry t of an episode holds the exogenous state after t agent steps from the initial one, as the
environment's state after reset (entry 0) and after each step does.
"""

import math

import numpy as np

from .errors import LQVError

KIND = "lorenz63"
SEED_STREAM = 0x4C6F72  # "Lor": keeps the exogenous draws apart from every other use of a seed
UNKNOWN_SEED_OFFSET = 2**32
"""An episode that records no seed (-1) is seeded with ``2**32 + its index`` (apart from every
environment seed)."""

DEFAULT_SPEC = {
    "kind": KIND, "version": 1, "sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0,
    "dt": 0.03, "substeps": 6, "burn_in": 1000,
    "init_low": [-15.0, -20.0, 5.0], "init_high": [15.0, 20.0, 40.0],
    "center": [0.0, 0.0, 23.5], "scale": [7.9, 9.0, 8.6],
}
"""The process without its size and seed: Lorenz-63's classic parameters; 0.03 time units per
agent step (an orbit of one lobe takes about 0.7, so a 500-step episode sees many lobe switches),
in 6 RK4 sub-steps; 1000 RK4 burn-in steps (5 time units) from a uniform draw in the box
``init_low``..``init_high``; the attractor's per-coordinate mean and std as normalization."""


class ExogenousError(LQVError, ValueError):
    """A dataset or option that an exogenous variant cannot be made from."""


def default_dims(state_size):
    """The smallest multiple of 3 that is at least ``state_size`` (24 for walker_walk's 24)."""
    return max(3, 3 * math.ceil(int(state_size) / 3))


def exogenous_spec(dims, seed=0):
    """The JSON-able spec of ``dims`` exogenous dimensions (``dims / 3`` Lorenz-63 systems) whose
    initial conditions are also keyed by ``seed`` (0: the default realization)."""
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims < 3 or dims % 3:
        raise ExogenousError(f"dims must be a positive multiple of 3 (three coordinates per "
                             f"Lorenz system), got {dims!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ExogenousError(f"seed must be a non-negative integer, got {seed!r}")
    return {**DEFAULT_SPEC, "dims": int(dims), "systems": int(dims) // 3, "seed": int(seed),
            "seeded_by": "the episode's environment seed (dataset: episode_seeds; evaluation: the "
                         "seed the environment is reset with); an episode without one (-1): "
                         f"{UNKNOWN_SEED_OFFSET} + its index"}


def exogenous_fields(spec):
    """``[(name, 3), ...]``: the parts the exogenous dimensions add to ``spaces.state.fields``."""
    return [(f"exogenous_lorenz_{index}", 3) for index in range(int(spec["systems"]))]


class LorenzProcess:
    """The exogenous process of ``spec``: ``reset(episode_seed)`` gives the first (dims,) float32
    state, ``step()`` the next one; :meth:`trajectory` gives a whole episode's."""

    def __init__(self, spec):
        if spec.get("kind") != KIND:
            raise ExogenousError(f"unknown exogenous process {spec.get('kind')!r}; this version "
                                 f"knows {KIND!r}")
        self.spec = dict(spec)
        self.systems = int(spec["systems"])
        self.h = float(spec["dt"]) / int(spec["substeps"])
        self.center = np.asarray(spec["center"], np.float64)
        self.scale = np.asarray(spec["scale"], np.float64)
        self._xyz = None

    def _derivative(self, xyz):
        spec = self.spec
        x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        return np.stack([spec["sigma"] * (y - x), x * (spec["rho"] - z) - y,
                         x * y - spec["beta"] * z], axis=1)

    def _rk4(self, xyz):
        h = self.h
        k1 = self._derivative(xyz)
        k2 = self._derivative(xyz + 0.5 * h * k1)
        k3 = self._derivative(xyz + 0.5 * h * k2)
        k4 = self._derivative(xyz + h * k3)
        return xyz + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def _observation(self):
        return ((self._xyz - self.center) / self.scale).reshape(-1).astype(np.float32)

    def initial_conditions(self, episode_seed):
        """The (systems, 3) Lorenz coordinates an episode of ``episode_seed`` starts from (after
        the burn-in)."""
        if int(episode_seed) < 0:
            raise ExogenousError(f"episode seeds are non-negative, got {episode_seed!r}")
        rng = np.random.default_rng(np.random.SeedSequence(
            [int(episode_seed), int(self.spec["seed"]), SEED_STREAM]))
        xyz = rng.uniform(self.spec["init_low"], self.spec["init_high"], size=(self.systems, 3))
        for _ in range(int(self.spec["burn_in"])):
            xyz = self._rk4(xyz)
        return xyz

    def reset(self, episode_seed):
        """Start an episode; returns its first exogenous state, (dims,) float32."""
        self._xyz = self.initial_conditions(episode_seed)
        return self._observation()

    def step(self):
        """Advance one agent step (``substeps`` RK4 steps); returns the new (dims,) state."""
        if self._xyz is None:
            raise ExogenousError("reset the exogenous process before stepping it")
        for _ in range(int(self.spec["substeps"])):
            self._xyz = self._rk4(self._xyz)
        return self._observation()

    def trajectory(self, episode_seed, length):
        """The (length, dims) float32 exogenous states of an episode of ``length`` entries."""
        states = [self.reset(episode_seed)]
        states += [self.step() for _ in range(int(length) - 1)]
        return np.stack(states)


def episode_seed_of(seed, index):
    """The seed of the exogenous process of a dataset episode: its recorded environment seed, or
    ``UNKNOWN_SEED_OFFSET + index`` when it records none."""
    return int(seed) if int(seed) >= 0 else UNKNOWN_SEED_OFFSET + int(index)


# ----------------------------------------------------------------------------------------------
# Evaluation: the same process appended to the environment's state
# ----------------------------------------------------------------------------------------------


class ExogenousStateEnv:
    """An environment whose ``info["state"]`` gets the exogenous process of ``spec`` appended,
    seeded from the seed of each ``reset(seed=...)`` (a reset without a seed draws one from the
    environment's own generator, seeded by ``seed``). Everything else is the wrapped environment's
    (attributes are forwarded)."""

    def __init__(self, env, spec, seed=0):
        self.env = env
        self.process = LorenzProcess(spec)
        self._seeds = np.random.default_rng(np.random.SeedSequence([int(seed), SEED_STREAM]))

    def reset(self, *, seed=None, options=None):
        observation, info = self.env.reset(seed=seed, options=options)
        episode_seed = int(seed) if seed is not None else int(self._seeds.integers(2**32))
        return observation, self._extended(info, self.process.reset(episode_seed))

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, self._extended(info,
                                                                          self.process.step())

    def close(self):
        return self.env.close()

    @staticmethod
    def _extended(info, exogenous):
        info = dict(info)
        info["state"] = np.concatenate([np.asarray(info["state"], np.float32), exogenous])
        return info

    def __getattr__(self, name):
        if name.startswith("__") or name in ("env", "process", "_seeds"):
            raise AttributeError(name)
        return getattr(self.env, name)


__all__ = ["DEFAULT_SPEC", "ExogenousError", "ExogenousStateEnv", "LorenzProcess", "default_dims",
           "episode_seed_of", "exogenous_fields", "exogenous_spec"]
