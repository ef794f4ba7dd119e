"""lqv-d4rl: the toolkit for the LQV-D4RL offline visual RL benchmark.

The public entry points are imported lazily, so that ``import lqv_d4rl`` stays cheap and does not
start MuJoCo or torch until they are used. It does register the environments with gymnasium::

    import lqv_d4rl
    env = lqv_d4rl.make_env("walker_walk", seed=0)        # or gymnasium.make("lqv_d4rl/walker_walk-v0")
    data = lqv_d4rl.load_dataset("walker_walk-medrep")
"""

import importlib
import os

# MuJoCo needs a headless GL backend on machines without a display; EGL (Mesa) is the default
# here. It must be set before dm_control is first imported. Users may override it.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

# The same seed must give the same bytes on every x86-64 machine: pin the CPU kernels of torch,
# MKL, oneDNN and Mesa to their AVX2 code paths before any of them starts (lqv_d4rl.cpu_kernels).
from .cpu_kernels import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()

__version__ = "0.1.0"

from . import gym_registration  # noqa: E402  (registers lqv_d4rl/<task>-v0 with gymnasium)

# public name -> module that defines it
_LAZY_EXPORTS = {
    "make_env": "lqv_d4rl.envs",
    "TASKS": "lqv_d4rl.tasks",
    "get_task": "lqv_d4rl.tasks",
    "load_dataset": "lqv_d4rl.dataset",
    "Dataset": "lqv_d4rl.dataset",
    "combine": "lqv_d4rl.dataset",
    "verify_dataset": "lqv_d4rl.format",
    "list_datasets": "lqv_d4rl.registry",
    "get_normalized_score": "lqv_d4rl.scores",
    "download_dataset": "lqv_d4rl.hub",
    "upload_dataset": "lqv_d4rl.hub",
    "list_remote_datasets": "lqv_d4rl.hub",
}

__all__ = sorted(_LAZY_EXPORTS) + ["__version__"]


def __getattr__(name):
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lqv_d4rl' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


def __dir__():
    return __all__
