"""car_racing without pixels, then its frames: the parts of a CPU (``sac-state``-style) recipe.

The dm_control tasks are played on the physics alone and rendered afterwards from stored physics
states (:mod:`lqv_d4rl.physics`). CarRacing's Box2D world has no state that can be set back, but it
is deterministic: the same reset seed and the same actions give the same episode, bit for bit (also
in another process, and whatever episodes the env played before). So:

* :class:`CarRacingSimulator` steps car_racing exactly as :class:`lqv_d4rl.envs.CarRacingEnv` does
  (it *is* a CarRacingEnv: same reset seeding, action mapping, action repeat 2, rewards,
  termination, the 500-step truncation, discount) on a gymnasium CarRacing that draws no pixels
  (:class:`UnrenderedCarRacing`: CarRacing-v3 draws its 96x96 ``state_pixels`` frame after every
  physics step, ~98% of the live env's time; drawing only reads the simulation, so skipping it
  leaves physics and rewards untouched). Its observation is a low-dimensional feature vector for
  a state-based policy (:data:`FEATURE_FIELDS`, :func:`car_features`); ``info["state"]`` is the
  stored 12-value :func:`lqv_d4rl.states.car_state`, as in the live env.
* :class:`CarEpisodeRenderer` / :func:`render_car_episode` replay an episode's stored actions from
  its seed in the real :class:`~lqv_d4rl.envs.CarRacingEnv` and return its frames, checking that the
  replayed rewards (and car states, when given) equal the stored ones exactly.
* :class:`SpeedLimitedPolicy` puts a feature-based policy on a speed limit
  (:func:`speed_limited_action`): the medium level of the ``sac-state`` recipe
  (:mod:`collectors.state_recipe`).

``tests/test_car_racing.py`` checks that simulating then rendering gives the live env's frames,
rewards and states byte for byte.
"""

import dataclasses
import math

import gymnasium
import numpy as np
from gymnasium.envs.box2d import car_racing as gym_car_racing

from .envs import CarRacingEnv, InfoObservation
from .errors import LQVError
from .tasks import get_task

TRACK_WIDTH = gym_car_racing.TRACK_WIDTH
"""Half-width of the road (the tiles reach ``TRACK_WIDTH`` either side of the centre line)."""
TRACK_STEP = gym_car_racing.TRACK_DETAIL_STEP
"""Distance between consecutive track points (3.5 world units)."""
PLAYFIELD = gym_car_racing.PLAYFIELD
"""Leaving the square ``|x|, |y| <= PLAYFIELD`` ends the episode with reward -100."""
WHEEL_RADIUS = 27 * 0.02
"""Wheel radius of ``car_dynamics.Car`` (``WHEEL_R * SIZE``): omega x radius is a surface speed."""

SPEED_SCALE = 50.0
"""Speeds (world units per second) are divided by this: a hard-driven car reaches ~1-2."""
YAW_RATE_SCALE = 2.0
"""Yaw rates (rad/s) are divided by this."""
STEER_LIMIT = 0.4
"""The front wheels' steering joint turns within +-0.4 rad."""
LOOKAHEAD = (5, 10, 20, 40)
"""Track points ahead of the nearest one at which the track is described (x 3.5 world units)."""
MAX_CENTRE_OFFSET = 4.0
"""The centre-line offset feature is clipped to +- this many half-widths."""
VISITED_AHEAD = 10
"""Tiles ahead of the nearest one whose visited fraction is a feature."""

FEATURE_FIELDS = (
    ("forward_speed", "hull velocity along the car's heading / SPEED_SCALE"),
    ("lateral_speed", "hull velocity to the car's right / SPEED_SCALE (skidding)"),
    ("yaw_rate", "hull angular velocity (rad/s, counter-clockwise +) / YAW_RATE_SCALE"),
    ("wheel_speed_front_left", "wheel omega x wheel radius / SPEED_SCALE (surface speed)"),
    ("wheel_speed_front_right", "as above"),
    ("wheel_speed_rear_left", "as above (driven wheel: spins faster than the car when "
                              "slipping)"),
    ("wheel_speed_rear_right", "as above"),
    ("steering_angle", "front wheels' steering joint angle / 0.4 (in [-1, 1]; + = left)"),
    ("gas", "throttle of the rear wheels in [0, 1] (it ramps up by at most 0.1 a frame, so it is "
            "state, not action)"),
    ("centre_offset", "signed distance from the track centre line at the nearest track point, "
                      "in half-widths (+ = right of the centre line, |x| > 1: off the road), "
                      "clipped to +-4"),
    ("heading_error_sin", "sin of (car heading - track direction at the nearest point); "
                          "+ = the car points left of the track"),
    ("heading_error_cos", "cos of the same angle (-1: driving the wrong way)"),
    *[item for k in LOOKAHEAD for item in (
        (f"ahead{k}_forward", f"track point {k} ahead of the nearest one, in the car's frame: "
                              f"forward coordinate / ({k} x 3.5)"),
        (f"ahead{k}_lateral", f"its coordinate to the car's right / ({k} x 3.5)"),
        (f"ahead{k}_angle", f"track direction there minus the car heading, wrapped, / pi "
                            f"(+ = the track turns left)"),
    )],
    ("wheels_on_grass", "fraction of the 4 wheels touching no road tile"),
    ("visited_ahead", f"fraction of the {VISITED_AHEAD} tiles ahead of the nearest one already "
                      "visited (no reward left there)"),
    ("progress", "fraction of the track's tiles visited (what the tile reward counted)"),
    ("playfield", "max(|x|, |y|) / PLAYFIELD: at 1 the episode ends with -100"),
)
"""The observation of :class:`CarRacingSimulator`, in order: ``(name, meaning)``. "Ahead" is the
direction of increasing track index, the way the car starts; the nearest track point is the
closest centre-line point to the hull (tile ``i`` joins points ``i - 1`` and ``i``)."""
FEATURE_DIM = len(FEATURE_FIELDS)


class CarReplayError(LQVError, RuntimeError):
    """A stored car_racing episode whose replay does not give its stored rewards or states."""


# ----------------------------------------------------------------------------------------------
# Stepping without pixels
# ----------------------------------------------------------------------------------------------


class UnrenderedCarRacing(gym_car_racing.CarRacing):
    """gymnasium's CarRacing that does not draw its ``state_pixels`` frame (``step`` and
    ``reset`` return None as observation). Everything else, physics and rewards included, is the
    parent's code: drawing only reads the simulation (car and track polygons, reward text)."""

    def _render(self, mode):
        if mode == "state_pixels":
            return None
        return super()._render(mode)


def make_unrendered_car_racing(gym_id="CarRacing-v3"):
    """``gymnasium.make(gym_id)`` with :class:`UnrenderedCarRacing` inside: the same registered
    kwargs and wrappers (TimeLimit, OrderEnforcing), without the passive env checker (it would
    inspect the None observations; it only checks, it changes nothing)."""
    spec = dataclasses.replace(gymnasium.spec(gym_id), entry_point=UnrenderedCarRacing)
    return gymnasium.make(spec, disable_env_checker=True)


class CarRacingSimulator(InfoObservation, CarRacingEnv):
    """car_racing stepped like :class:`~lqv_d4rl.envs.CarRacingEnv`, without drawing frames.

    ``reset(seed=None) -> (features, info)``; ``step(action) -> (features, reward, terminated,
    truncated, info)``. ``features`` is the (FEATURE_DIM,) float32 vector of
    :data:`FEATURE_FIELDS`; ``info`` holds ``state`` (the stored 12-value ``car_state``),
    ``discount``, ``features`` (the same vector), ``background_frame``/``video_id`` (-1) and no
    ``physics_state``. Same seeds and actions give the same rewards, flags and states as the live
    env (``seed`` only seeds a ``reset()`` without a seed, as in the live env).
    """

    observation_key = "features"

    def __init__(self, task="car_racing", *, seed=0):
        spec = get_task(task)
        if spec.kind != "gym":
            raise ValueError(f"{task} is not car_racing; use lqv_d4rl.physics.StateSimulator for "
                             "the dm_control tasks")
        super().__init__(spec, seed=seed, size=64)
        self._gym_env.close()
        self._gym_env = make_unrendered_car_racing(spec.gym_id)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (FEATURE_DIM,), np.float32)
        self._track = None

    def _reset_episode(self, seed):
        observation, info = super()._reset_episode(seed)
        self._track = TrackGeometry(self._gym_env.unwrapped.track)
        info["features"] = car_features(self._gym_env.unwrapped, self._track)
        return observation, info

    def _step_episode(self, action):
        observation, reward, terminated, info = super()._step_episode(action)
        info["features"] = car_features(self._gym_env.unwrapped, self._track)
        return observation, reward, terminated, info

    def _resize(self, frame):
        return None  # no frame was drawn


def make_state_simulator(task, *, seed=0):
    """The physics-only simulator of ``task``: :class:`lqv_d4rl.physics.StateSimulator` for the
    dm_control tasks, :class:`CarRacingSimulator` for car_racing. Both return the policy's
    observation first from ``reset``/``step``; only the dm_control one reports ``physics_state``."""
    if get_task(task).kind == "gym":
        return CarRacingSimulator(task, seed=seed)
    from .physics import StateSimulator

    return StateSimulator(task, seed=seed)


# ----------------------------------------------------------------------------------------------
# A speed limit: the medium driver
# ----------------------------------------------------------------------------------------------

FORWARD_SPEED = 0
"""Index of ``forward_speed`` in :data:`FEATURE_FIELDS`."""
GAS, BRAKE = 1, 2
"""Indices of gas and brake in an action of ``car_racing`` ([-1, 1]: -1 = none, 1 = full)."""
SPEED_LIMIT_BRAKE_GAIN = 2.0
"""Brake (CarRacing's [0, 1] scale) per unit of ``forward_speed`` above the limit."""
SPEED_LIMIT_MAX_BRAKE = 0.8
"""The speed limit's brake never reaches 0.9, where CarRacing locks the wheels."""


def speed_limited_action(action, features, limit):
    """``action`` (float32, [-1, 1]^3) under a speed limit: at ``forward_speed >= limit`` (the
    :data:`FEATURE_FIELDS` feature, world units per second / 50) no gas, and at least the brake
    ``min(2 (forward_speed - limit), 0.8)``; below the limit the action is unchanged.

    Cutting the gas alone is not a limit (a coasting car keeps its speed: a snapshot then drove
    at 0.53..0.61 on average under a 0.44 cut), nor is capping the gas (capped at 10 %, a
    snapshot scoring 837 still scored 734); with the brake, snapshots of one run from barely
    medium to strong all averaged the limit, so the distance they cover depends on the limit
    alone."""
    speed = float(features[FORWARD_SPEED])
    if speed < limit:
        return action
    action = np.array(action, np.float32)
    action[GAS] = -1.0
    brake = min(SPEED_LIMIT_BRAKE_GAIN * (speed - float(limit)), SPEED_LIMIT_MAX_BRAKE)
    action[BRAKE] = max(float(action[BRAKE]), 2.0 * brake - 1.0)
    return action


class SpeedLimitedPolicy:
    """A car_racing policy on features (``act(features, deterministic=, generator=)``, e.g. a
    ``collectors.sac.SACPolicy``) driving under a speed limit (:func:`speed_limited_action`):
    the same interface, the policy's own random draws unchanged."""

    def __init__(self, policy, limit):
        self.policy, self.limit = policy, float(limit)
        self.action_dim = getattr(policy, "action_dim", 3)

    def act(self, features, *, deterministic=False, generator=None):
        """The policy's action for ``features``, under the limit."""
        action = self.policy.act(features, deterministic=deterministic, generator=generator)
        return speed_limited_action(action, features, self.limit)


def describe_speed_limit(limit):
    """The speed limit as a JSON-able dict (provenance of the medium level)."""
    return {"transform": "speed_limit", "forward_speed_limit": float(limit),
            "world_units_per_second": float(limit) * SPEED_SCALE,
            "rule": f"at forward_speed >= limit: gas -1 (none) and brake at least "
                    f"min({SPEED_LIMIT_BRAKE_GAIN:g} (forward_speed - limit), "
                    f"{SPEED_LIMIT_MAX_BRAKE:g}) on CarRacing's [0, 1] scale; the stored actions "
                    "are the limited ones"}


# ----------------------------------------------------------------------------------------------
# The features
# ----------------------------------------------------------------------------------------------


class TrackGeometry:
    """The centre line of one track as arrays: points (N, 2), directions (N, 2) and angles."""

    def __init__(self, track):
        track = np.asarray(track, np.float64)  # rows (alpha, beta, x, y)
        self.points = track[:, 2:4].copy()
        beta = track[:, 1]
        self.beta = np.arctan2(np.sin(beta), np.cos(beta))
        # the road runs along (-sin beta, cos beta), the car's "forward" at angle beta;
        # (cos beta, sin beta) points to its right
        self.right = np.stack([np.cos(beta), np.sin(beta)], axis=1)
        self.size = len(track)

    def nearest(self, position):
        """Index of the centre-line point closest to ``position``."""
        delta = self.points - position
        return int(np.argmin(np.einsum("ij,ij->i", delta, delta)))


def _wrap(angle):
    return (angle + math.pi) % (2 * math.pi) - math.pi


def car_features(car_racing, track=None) -> np.ndarray:
    """The :data:`FEATURE_FIELDS` vector (float32) of a gymnasium CarRacing (unwrapped) after
    reset; ``track`` is its :class:`TrackGeometry` (built when not given)."""
    if track is None:
        track = TrackGeometry(car_racing.track)
    car = car_racing.car
    hull = car.hull
    angle = hull.angle
    sin, cos = math.sin(angle), math.cos(angle)
    forward = np.array([-sin, cos])
    right = np.array([cos, sin])
    position = np.array([hull.position[0], hull.position[1]])
    velocity = np.array([hull.linearVelocity[0], hull.linearVelocity[1]])

    features = [float(velocity @ forward) / SPEED_SCALE, float(velocity @ right) / SPEED_SCALE,
                hull.angularVelocity / YAW_RATE_SCALE]
    features += [wheel.omega * WHEEL_RADIUS / SPEED_SCALE for wheel in car.wheels]
    features += [car.wheels[0].joint.angle / STEER_LIMIT, car.wheels[2].gas]

    i = track.nearest(position)
    offset = float((position - track.points[i]) @ track.right[i]) / TRACK_WIDTH
    error = _wrap(angle - track.beta[i])
    features += [min(max(offset, -MAX_CENTRE_OFFSET), MAX_CENTRE_OFFSET), math.sin(error),
                 math.cos(error)]
    for k in LOOKAHEAD:
        j = (i + k) % track.size
        delta = track.points[j] - position
        scale = k * TRACK_STEP
        features += [float(delta @ forward) / scale, float(delta @ right) / scale,
                     _wrap(track.beta[j] - angle) / math.pi]

    road = car_racing.road
    on_grass = sum(1 for wheel in car.wheels if not wheel.tiles)
    visited = sum(road[(i + k) % track.size].road_visited for k in range(1, VISITED_AHEAD + 1))
    features += [on_grass / 4.0, visited / VISITED_AHEAD,
                 car_racing.tile_visited_count / max(track.size, 1),
                 max(abs(position[0]), abs(position[1])) / PLAYFIELD]
    return np.array(features, np.float32)


# ----------------------------------------------------------------------------------------------
# Frames: replaying stored actions in the live environment
# ----------------------------------------------------------------------------------------------


def render_car_episode(actions, seed, expected_rewards, *, expected_states=None, env=None,
                       name=None):
    """The frames of one stored car_racing episode, replayed in the live environment.

    Args:
        actions: the episode's (L, 3) stored actions in the dataset's entry convention (entry 0
            is the reset entry; its action is ignored), i.e. ``steps["action"]``.
        seed: the seed the episode was reset with.
        expected_rewards: its (L,) stored rewards (entry 0 ignored); every replayed reward must
            equal them exactly (compared in their dtype).
        expected_states: optional (L, 12) stored ``car_state`` vectors, compared exactly too.
        env: a live ``CarRacingEnv`` to use (default: a new ``lqv_d4rl.make_env("car_racing")``).
        name: how errors name the episode (default: ``"the episode with seed <seed>"``).

    Returns:
        (L, 64, 64, 3) uint8 frames: what ``env.reset(seed=seed)`` and ``env.step`` of each
        action show.

    Raises CarReplayError when a replayed reward or state differs, or when the replayed episode
    ends before its last entry (it was not played from this seed with these actions).
    """
    from .envs import make_env

    own = env is None
    if own:
        env = make_env("car_racing")
    try:
        return _replay(env, actions, seed, expected_rewards, expected_states,
                       name or f"the episode with seed {int(seed)}")
    finally:
        if own:
            env.close()


def _replay(env, actions, seed, expected_rewards, expected_states, name):
    actions = np.asarray(actions)
    rewards = np.asarray(expected_rewards)
    if actions.ndim != 2 or len(rewards) != len(actions):
        raise ValueError(f"{name}: actions of shape {actions.shape} and {len(rewards)} rewards; "
                         "expected (L, 3) actions and L rewards (entry convention)")
    states = None if expected_states is None else np.asarray(expected_states)
    frame, info = env.reset(seed=int(seed))
    _check_state(states, 0, info, name)
    frames = [frame]
    for t in range(1, len(actions)):
        frame, reward, terminated, truncated, info = env.step(actions[t])
        if np.asarray(reward, rewards.dtype) != rewards[t]:
            raise CarReplayError(
                f"{name}: replaying its actions from seed {int(seed)} gives reward {reward!r} at "
                f"entry {t}, the stored episode has {rewards[t]!r}; it was not played with these "
                "actions from this seed (or by another version of gymnasium/Box2D)")
        _check_state(states, t, info, name)
        frames.append(frame)
        if (terminated or truncated) and t < len(actions) - 1:
            raise CarReplayError(
                f"{name}: the replay from seed {int(seed)} ended at entry {t} "
                f"({'terminated' if terminated else 'truncated'}), the stored episode has "
                f"{len(actions)} entries")
    return np.stack(frames)


def _check_state(states, t, info, name):
    if states is not None and not np.array_equal(
            np.asarray(info["state"], states.dtype), states[t]):
        raise CarReplayError(f"{name}: the replayed car state at entry {t} differs from the "
                             f"stored one ({info['state']} vs {states[t]})")


class CarEpisodeRenderer:
    """Renders stored car_racing episodes by replaying them, in order, with ``workers``
    processes (the interface of :class:`lqv_d4rl.rerender.EpisodeRenderer`).

    ``render(items)`` takes ``(actions, seed, rewards)`` or ``(actions, seed, rewards, states)``
    items (see :func:`render_car_episode`) and yields ``(images (L, 64, 64, 3) uint8,
    video_ids)`` in the same order; ``video_ids`` is always ``[]`` (no distractor). With
    ``workers > 1``, up to ``2 * workers`` episodes are replayed ahead in ``spawn`` processes
    (a script using them needs the ``__main__`` guard); every episode is replayed from its own
    seed, so the number of workers never changes the images. A replay whose rewards differ raises
    :class:`CarReplayError` naming the episode (its position in ``items`` and its seed).
    """

    def __init__(self, task="car_racing", *, video_pool=None, workers=1):
        if get_task(task).kind != "gym":
            raise ValueError(f"{task} is not car_racing; use lqv_d4rl.rerender.EpisodeRenderer")
        if video_pool is not None:
            raise ValueError("car_racing keeps its own scene: it takes no video_pool")
        self.task = task
        self.workers = int(workers)
        self._env = self._pool = None
        if self.workers > 1:
            from .rerender import OrderedPool

            self._pool = OrderedPool(self.workers, _start_worker)
        else:
            from .envs import make_env

            self._env = make_env(task)

    def render(self, items):
        """Yield ``(images, [])`` for each ``(actions, seed, rewards[, states])`` item."""
        if self._pool is None:
            for index, item in enumerate(items):
                yield _render_item(self._env, index, *item), []
            return
        indexed = ((index, *item) for index, item in enumerate(items))
        for images in self._pool.map(_render_in_worker, indexed):
            yield images, []

    def close(self):
        """Stop the worker processes and close the environment."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _render_item(env, index, actions, seed, rewards, states=None):
    return _replay(env, actions, seed, rewards, states,
                   f"episode {index} of this rendering (seed {int(seed)})")


_worker_env = None


def _start_worker():
    import signal

    from .envs import make_env

    global _worker_env
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    _worker_env = make_env("car_racing")


def _render_in_worker(index, *item):
    return _render_item(_worker_env, index, *item)


__all__ = ["CarEpisodeRenderer", "CarRacingSimulator", "CarReplayError", "FEATURE_DIM",
           "FEATURE_FIELDS", "SpeedLimitedPolicy", "TrackGeometry", "UnrenderedCarRacing",
           "car_features", "describe_speed_limit", "make_state_simulator",
           "make_unrendered_car_racing", "render_car_episode", "speed_limited_action"]
