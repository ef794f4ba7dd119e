"""dm_control physics outside the live environment: stepped without a camera, or rendered from
stored physics states.

* :class:`StateSimulator` steps a task exactly as :class:`lqv_d4rl.envs.DMCEnv` does (same seeding,
  action clipping, action repeat and rewards) but renders nothing, so a state-based behaviour
  policy runs at physics speed.
* :class:`FrameRenderer` turns an episode's stored ``physics`` states back into its observations:
  it sets each state, recomputes the kinematics (``mj_forward``) and renders and composites the
  frame exactly as DMCEnv does live, with the episode's background frames (the background player is
  seeded from the episode seed, as in DMCEnv). Same states, same background -> the same bytes as
  the live environment (``tests/test_rerender.py`` checks it).

Both are DMCEnv subclasses, so they cannot drift from the live environment's code.
"""

import numpy as np

import distractors

from .envs import _BACKGROUND_SEED_STREAM, DMCEnv, InfoObservation, derive_seed
from .tasks import get_task


class StateSimulator(InfoObservation, DMCEnv):
    """A dm_control task stepped like DMCEnv, without rendering.

    ``reset(seed=) -> (state, info)`` and ``step(action) -> (state, reward, terminated,
    truncated, info)``; ``info`` holds ``state``, ``physics_state`` and ``discount``. Same seeds and
    actions give the same states, physics states and rewards as DMCEnv.
    """

    def __init__(self, task, *, seed=0):
        spec = get_task(task)
        if spec.kind != "dmc":
            raise ValueError(f"{task} is not a dm_control task; only those have a physics-only "
                             "simulator (step lqv_d4rl.make_env instead)")
        super().__init__(spec, video_pool=None, composite="segmentation", seed=seed, size=64,
                         render_quality="fast")

    def _observe(self, *, discount):
        return None, {"discount": discount, "physics_state": self.physics.get_state()}


class FrameRenderer(DMCEnv):
    """Renders stored physics states of a dm_control task as DMCEnv renders them live.

    Args:
        task: dm_control task name.
        video_pool: the background ``distractors.VideoPool`` (None: the plain scene).
        composite, render_quality, size: as for :func:`lqv_d4rl.make_env`.
    """

    def __init__(self, task, *, video_pool, composite="segmentation", render_quality="fast",
                 size=64):
        spec = get_task(task)
        if spec.kind != "dmc":
            raise ValueError(f"{task} stores no physics states to render (only the dm_control "
                             "tasks do)")
        super().__init__(spec, video_pool=video_pool, composite=composite, seed=0, size=size,
                         render_quality=render_quality)

    def render_episode(self, physics_states, episode_seed):
        """The observations of one episode from its (L, P) physics states.

        ``episode_seed`` is the seed the episode was reset with (it seeds the background start).
        Returns ``(images (L, size, size, 3) uint8, video_ids)``, video ids in order of first
        appearance, as the recorders note them.
        """
        physics_states = np.asarray(physics_states, np.float64)
        if self._player is not None:
            self._player.reset(derive_seed(int(episode_seed), _BACKGROUND_SEED_STREAM))
        physics = self.physics
        images, video_ids = [], []
        for state in physics_states:
            physics.set_state(state)
            physics.forward()
            image, info = self._observe(discount=1.0)
            images.append(image)
            if info["video_id"] >= 0 and info["video_id"] not in video_ids:
                video_ids.append(info["video_id"])
        return np.stack(images), video_ids

    def background_mask(self, physics_state):
        """(size, size) bool: True where the frame of ``physics_state`` shows background (skybox
        or floor), i.e. where a segmentation composite puts the video."""
        self.physics.set_state(np.asarray(physics_state, np.float64))
        self.physics.forward()
        return self._renderer.render_agent_and_background_mask()[1]


def make_frame_renderer(task, *, video_dir=None, video_pool=None, num_video_frames=1000,
                        pool_seed=0, rgb_background=False, composite="segmentation",
                        render_quality="fast"):
    """A :class:`FrameRenderer` whose background pool is built like ``generate`` builds it.

    ``video_pool`` if given, else ``distractors.make_video_pool(video_dir, num_frames=
    num_video_frames, seed=pool_seed, rgb=rgb_background)`` (``video_dir`` None: the procedural
    driving video).
    """
    if video_pool is None:
        video_pool = distractors.make_video_pool(video_dir, num_frames=num_video_frames,
                                                 seed=pool_seed, rgb=rgb_background)
    return FrameRenderer(task, video_pool=video_pool, composite=composite,
                         render_quality=render_quality)
