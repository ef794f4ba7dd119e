"""The ``state`` and ``physics`` vectors stored with every step, and their layouts.

Every step of a dataset stores two vectors besides its image (format version 2, DATASETS.md):

* ``state`` (float32): what a state-based policy sees. For the dm_control tasks it is the task's
  observation dict flattened in the dict's own order (the order dm_control's task returns it, the
  way V-D4RL's SAC behaviour policies flattened it), each entry raveled in C order;
  :func:`state_fields` names the parts, e.g. walker ``orientations`` (14), ``height`` (1),
  ``velocity`` (9). For ``car_racing`` it is the car's state, :data:`CAR_STATE_FIELDS`.
* ``physics`` (float64): the exact simulator state, dm_control's ``physics.get_state()``
  (``qpos``, ``qvel``, ``act``; :func:`physics_fields`). Setting it back and rendering gives the
  frame again (:mod:`lqv_d4rl.rerender`). CarRacing's Box2D world has no such state: none is stored.

:mod:`lqv_d4rl.physics` steps a task without rendering and renders stored physics states.
"""

from functools import lru_cache

import numpy as np

from .tasks import get_task

CAR_STATE_FIELDS = (
    ("hull_position", 2), ("hull_angle", 1), ("hull_linear_velocity", 2),
    ("hull_angular_velocity", 1), ("wheel_angular_speed", 4), ("steering_angle", 1),
    ("track_progress", 1),
)
"""The ``state`` of ``car_racing``, in order: hull position (x, y) and angle (rad), hull linear
velocity (x, y) and angular velocity, the angular speed of the four wheels (front left, front
right, rear left, rear right), the front wheels' steering joint angle, and the fraction of the
track's tiles visited so far (what the reward counts)."""


def flatten_observation(observation) -> np.ndarray:
    """A dm_control observation dict as one float32 vector, parts in the dict's order."""
    return np.concatenate([np.asarray(value, np.float64).ravel() for value in
                           observation.values()]).astype(np.float32)


@lru_cache(maxsize=None)
def state_fields(task) -> tuple:
    """``((name, size), ...)`` of the ``state`` vector of ``task``, in order."""
    spec = get_task(task)
    if spec.kind == "gym":
        return CAR_STATE_FIELDS
    from dm_control import suite

    env = suite.load(spec.domain, spec.task)
    fields = tuple((name, int(np.prod(array.shape, dtype=np.int64)))
                   for name, array in env.observation_spec().items())
    env.close()
    return fields


@lru_cache(maxsize=None)
def physics_fields(task) -> tuple | None:
    """``((name, size), ...)`` of the ``physics`` vector of ``task`` (None for car_racing)."""
    spec = get_task(task)
    if spec.kind == "gym":
        return None
    from dm_control import suite

    env = suite.load(spec.domain, spec.task)
    model = env.physics.model
    if model.nplugin:
        raise NotImplementedError(f"{task}: MuJoCo plugins are not supported")
    fields = (("qpos", int(model.nq)), ("qvel", int(model.nv)), ("act", int(model.na)))
    env.close()
    return fields


def fields_size(fields) -> int:
    """Total size of a ``((name, size), ...)`` layout."""
    return int(sum(size for _, size in fields))


def car_state(car_racing) -> np.ndarray:
    """The :data:`CAR_STATE_FIELDS` vector of a gymnasium CarRacing env (the unwrapped env)."""
    car = car_racing.car
    hull = car.hull
    wheels = [wheel.omega for wheel in car.wheels]
    progress = car_racing.tile_visited_count / max(len(car_racing.track), 1)
    return np.array([hull.position[0], hull.position[1], hull.angle,
                     hull.linearVelocity[0], hull.linearVelocity[1], hull.angularVelocity,
                     *wheels, car.wheels[0].joint.angle, progress], np.float32)
