"""The five LQV-D4RL tasks and the facts every part of the toolkit shares about them."""

from dataclasses import dataclass

from .errors import UnknownTaskError


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one benchmark task."""

    name: str
    """Benchmark name, e.g. ``"walker_walk"``."""
    kind: str
    """``"dmc"`` for dm_control suite tasks, ``"gym"`` for gymnasium tasks."""
    domain: str = ""
    """dm_control domain (``"walker"``); empty for gymnasium tasks."""
    task: str = ""
    """dm_control task (``"walk"``); empty for gymnasium tasks."""
    gym_id: str = ""
    """gymnasium environment id; empty for dm_control tasks."""
    action_dim: int = 0
    """Size of the action vector. Every task's actions live in [-1, 1]."""
    action_repeat: int = 2
    """Environment steps per agent step."""
    episode_steps: int = 500
    """Agent steps in a full (untruncated) episode: 1000 env steps / action repeat 2."""
    camera_id: int = 0
    """dm_control camera used for rendering."""
    has_distractor: bool = True
    """Whether the driving-video background replaces the scene's background (locomotion only)."""


TASKS = {
    "walker_walk": TaskSpec("walker_walk", "dmc", "walker", "walk", action_dim=6),
    "cheetah_run": TaskSpec("cheetah_run", "dmc", "cheetah", "run", action_dim=6),
    "hopper_hop": TaskSpec("hopper_hop", "dmc", "hopper", "hop", action_dim=4),
    "humanoid_walk": TaskSpec("humanoid_walk", "dmc", "humanoid", "walk", action_dim=21),
    "car_racing": TaskSpec(
        "car_racing", "gym", gym_id="CarRacing-v3", action_dim=3, has_distractor=False
    ),
}

LEVELS = ("random", "medrep", "medium")
"""Dataset quality levels, from worst to best behaviour policy."""


def get_task(name: str) -> TaskSpec:
    """Return the :class:`TaskSpec` of ``name``, or raise a clear error listing the valid tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}; the LQV-D4RL tasks are: {', '.join(TASKS)}"
        ) from None
