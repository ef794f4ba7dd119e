"""The benchmark's environments: 64x64 pixel observations with driving-video backgrounds.

``make_env(task)`` returns a gymnasium-style environment for any of the five tasks:

* the four dm_control tasks render camera 0 and put one frame of a driving video behind the agent at
  every agent step. ``composite="segmentation"`` (default) is exact: MuJoCo's segmentation render
  says which pixels show the skybox or the floor (the agent's shadow and reflection lie on the
  floor), exactly those take the video, every agent pixel keeps its rendered value.
  ``composite="color"`` is the published DBC / TIA / SeMOPO rule (blue > green and blue > red).
* ``car_racing`` keeps its own scene (no distractor); its 96x96 frames are resized to 64x64.

Every task repeats each action twice (rewards summed) and truncates after 500 agent steps.

Rendering speed. ``render_quality="fast"`` (default) turns multisampling off, shrinks the shadow map
and tessellates spheres and capsules more coarsely (``FAST_RENDER_SETTINGS``). Software rendering of
64x64 frames is bound by the shadow map and by geometry, so this is ~4-7x faster than dm_control's
defaults; a pixel differs by 1/255 on average (coarser tessellation alone: ~0.1-0.2/255, invisible
at 64x64). Without anti-aliasing every pixel belongs to exactly one geom, so the RGB image and the
segmentation line up.
With a segmentation composite, the colour pass leaves out the skybox and the floor reflection: they
only ever paint background pixels, which the video replaces anyway, and skipping them pays for the
extra segmentation pass (``tests/test_envs.py`` checks that every agent pixel still equals a full
render). Both passes draw one MuJoCo scene, updated once per frame.
"""

import cv2
import gymnasium
import mujoco
import numpy as np

import distractors

from .errors import LQVError
from .states import car_state, flatten_observation
from .tasks import TaskSpec, get_task

COMPOSITE_MODES = ("segmentation", "color")
RENDER_QUALITIES = ("fast", "default")
FAST_RENDER_SETTINGS = {"offsamples": 0, "shadowsize": 512, "numslices": 16, "numstacks": 10}
"""``model.vis.quality`` values used by ``render_quality="fast"`` (dm_control: 4, 2048, 28, 16)."""

_MAX_SCENE_GEOMS = 1000
_MAX_SEED = 2**32 - 1  # numpy's RandomState (dm_control's task random) takes seeds up to this
_BACKGROUND_SEED_STREAM = 1  # keeps background starts independent of the physics initial state


class EnvConfigError(LQVError, ValueError):
    """An argument of :func:`make_env` that is not one of the accepted values."""


class InvalidActionError(LQVError, ValueError):
    """An action of the wrong shape, or with NaN or infinite entries."""


class EpisodeOverError(LQVError, RuntimeError):
    """``step()`` called before ``reset()`` or after the episode ended."""


def make_env(task, *, distractor="procedural", composite="segmentation", rgb_background=False,
             seed=0, size=64, render_quality="fast", num_video_frames=1000, video_seed=None):
    """Create the environment of benchmark ``task`` (see ``lqv_d4rl.tasks.TASKS``).

    Args:
        task: task name, e.g. ``"walker_walk"``; unknown names raise ``UnknownTaskError``.
        distractor: background video behind the agent: ``"procedural"`` (the built-in driving
            video, seeded by ``seed``), a folder / glob / file of real videos, a
            ``distractors.VideoPool``, or ``None`` for the plain scene. Ignored by tasks without a
            distractor (``car_racing`` keeps its own scene).
        composite: ``"segmentation"`` (exact, from MuJoCo's segmentation) or ``"color"`` (the
            published blue-dominance rule).
        rgb_background: colour backgrounds instead of grayscale (the paper's Table 2 variant).
        seed: seeds the task's initial states, the procedural video, the video file order and the
            background start of each episode (an integer in [0, 2**32 - 1]). Same seed, same
            actions -> same observations.
        size: observation height and width in pixels.
        render_quality: ``"fast"`` (no multisampling, 512 shadow map, coarser spheres and
            capsules: ``FAST_RENDER_SETTINGS``) or ``"default"`` (dm_control's own settings).
        num_video_frames: frames in the background pool (``rgb_background`` and
            ``num_video_frames`` are ignored when ``distractor`` is a ready ``VideoPool``).
        video_seed: seeds the background pool instead of ``seed`` (the procedural video, the
            video file order). The gymnasium ids fix it (``lqv_d4rl.gym_registration``), so that
            ``reset(seed=)`` alone decides an episode.

    Returns:
        an :class:`LQVEnv`: ``reset(seed=None) -> (obs, info)``,
        ``step(action) -> (obs, reward, terminated, truncated, info)``; obs is (size, size, 3) uint8;
        ``metadata["render_fps"]`` is the agent steps per simulated second. ``info`` holds
        ``background_frame`` (index into ``env.video_pool`` of the video frame behind this
        observation; -1 without a background), ``video_id`` (the clip that frame belongs to, -1
        without), ``discount`` (0.0 when the episode truly ended), ``state`` (the low-dimensional
        observation of the same moment) and, for dm_control tasks, ``physics_state``
        (``physics.get_state()``, enough to restore the simulator).
    """
    spec = get_task(task)
    seed = _checked_seed(seed)
    _check_choice("composite", composite, COMPOSITE_MODES)
    _check_choice("render_quality", render_quality, RENDER_QUALITIES)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise EnvConfigError(f"size must be a positive number of pixels, got {size!r}")
    if spec.kind == "gym":
        return CarRacingEnv(spec, seed=seed, size=size)
    pool = None
    if spec.has_distractor and distractor is not None:
        video_seed = seed if video_seed is None else _checked_seed(video_seed)
        pool = _load_video_pool(distractor, num_frames=num_video_frames, size=size,
                                rgb=rgb_background, seed=video_seed)
    return DMCEnv(spec, video_pool=pool, composite=composite, seed=seed, size=size,
                  render_quality=render_quality)


def _check_choice(name, value, choices):
    """Raise EnvConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise EnvConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; "
                             f"got {value!r}")


def _checked_seed(seed):
    """Return ``seed`` as an int, or raise EnvConfigError unless it is an integer in
    [0, 2**32 - 1] (what the task's and the background's random generators accept)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= seed <= _MAX_SEED:
        raise EnvConfigError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    return int(seed)


def _load_video_pool(distractor, *, num_frames, size, rgb, seed):
    """Turn the ``distractor`` argument of make_env into a VideoPool."""
    if isinstance(distractor, distractors.VideoPool):
        if distractor.size != (size, size):
            raise EnvConfigError(f"the VideoPool's frames are {distractor.size}, the observations "
                                 f"{(size, size)}; build the pool with size={size}")
        return distractor
    if not (isinstance(distractor, str) or hasattr(distractor, "__fspath__")):
        raise EnvConfigError(f"distractor must be 'procedural', a video folder or glob, a "
                             f"VideoPool or None; got {type(distractor).__name__}")
    return distractors.make_video_pool(distractor, num_frames=num_frames, size=size, rgb=rgb,
                                       seed=seed)


def _steps_per_second(agent_step_seconds):
    """Frames per second of a video that shows every agent step (``metadata["render_fps"]``)."""
    return round(1.0 / agent_step_seconds, 6)


def derive_seed(seed, stream):
    """A 32-bit seed for random ``stream`` of ``seed`` (independent of the other streams)."""
    return int(np.random.SeedSequence([int(seed), stream]).generate_state(1)[0])


class LQVEnv(gymnasium.Env):
    """What all benchmark environments share: spaces, action checks, episode bookkeeping.

    Attributes:
        spec_task: the task's :class:`~lqv_d4rl.tasks.TaskSpec`.
        video_pool: the background ``VideoPool``, or None when the scene is not distracted.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, spec_task: TaskSpec, *, seed, size, video_pool=None):
        self.spec_task = spec_task
        self.video_pool = video_pool
        self.render_mode = "rgb_array"
        self.observation_space = gymnasium.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (spec_task.action_dim,), np.float32,
                                                 seed=int(seed))
        self._seed = int(seed)
        self._agent_steps = None  # None: no episode running
        self._last_observation = None

    def reset(self, *, seed=None, options=None):
        """Start an episode; ``seed`` re-seeds it (None continues the env's random streams)."""
        seed = None if seed is None else _checked_seed(seed)
        super().reset(seed=seed)
        observation, info = self._reset_episode(seed)
        self._agent_steps = 0
        self._last_observation = observation
        return observation, info

    def step(self, action):
        """Apply ``action`` (clipped to [-1, 1]) for ``action_repeat`` environment steps."""
        if self._agent_steps is None:
            raise EpisodeOverError("no episode is running: call reset() first, and again after "
                                   "terminated or truncated")
        action = self._checked_action(action)
        observation, reward, terminated, info = self._step_episode(action)
        self._agent_steps += 1
        truncated = not terminated and self._agent_steps >= self.spec_task.episode_steps
        if terminated or truncated:
            self._agent_steps = None
        self._last_observation = observation
        return observation, float(reward), bool(terminated), bool(truncated), info

    def render(self):
        """Return a copy of the latest observation (gymnasium's ``rgb_array`` render mode)."""
        return None if self._last_observation is None else self._last_observation.copy()

    def _checked_action(self, action):
        """Return ``action`` as a clipped float64 vector, or raise InvalidActionError."""
        expected = (self.spec_task.action_dim,)
        array = np.asarray(action, dtype=np.float64)
        if array.shape != expected:
            raise InvalidActionError(f"{self.spec_task.name} takes actions of shape {expected}, "
                                     f"got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise InvalidActionError(f"action contains NaN or infinite values: {array}")
        return np.clip(array, -1.0, 1.0)

    def _reset_episode(self, seed):
        """Subclasses: start an episode (re-seeded when ``seed`` is given); return (obs, info)."""
        raise NotImplementedError

    def _step_episode(self, action):
        """Subclasses: apply a checked action; return (obs, summed reward, terminated, info)."""
        raise NotImplementedError


class DMCEnv(LQVEnv):
    """A dm_control suite task rendered from camera 0, optionally over a driving video."""

    def __init__(self, spec_task, *, video_pool, composite, seed, size, render_quality):
        from dm_control import suite

        super().__init__(spec_task, seed=seed, size=size, video_pool=video_pool)
        self._dm_env = suite.load(spec_task.domain, spec_task.task,
                                  task_kwargs={"random": int(seed)})
        self.metadata = {**self.metadata, "render_fps": _steps_per_second(
            self._dm_env.control_timestep() * spec_task.action_repeat)}
        if render_quality == "fast":
            apply_fast_render_settings(self._dm_env.physics.model)
        self._renderer = SceneRenderer(self._dm_env.physics, size=size,
                                       camera_id=spec_task.camera_id)
        self._composite = composite
        self._player = None
        if video_pool is not None:
            self._player = distractors.BackgroundPlayer(
                video_pool, seed=derive_seed(seed, _BACKGROUND_SEED_STREAM))

    @property
    def physics(self):
        """The dm_control ``Physics`` of the task (e.g. to render it yourself)."""
        return self._dm_env.physics

    def close(self):
        """Free the renderer's OpenGL resources; the env cannot be used afterwards."""
        self._dm_env.physics.free()

    def _reset_episode(self, seed):
        if seed is not None:
            self._dm_env.task.random.seed(int(seed))
        if self._player is not None:
            self._player.reset(None if seed is None else derive_seed(seed, _BACKGROUND_SEED_STREAM))
        time_step = self._dm_env.reset()
        observation, info = self._observe(discount=1.0)
        info["state"] = flatten_observation(time_step.observation)
        return observation, info

    def _step_episode(self, action):
        reward = 0.0
        for _ in range(self.spec_task.action_repeat):
            time_step = self._dm_env.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        discount = float(time_step.discount)
        terminated = time_step.last() and discount == 0.0
        observation, info = self._observe(discount=discount)
        info["state"] = flatten_observation(time_step.observation)
        return observation, reward, terminated, info

    def _observe(self, *, discount):
        """Render the current state (over the next background frame) and build the info dict."""
        info = {"background_frame": -1, "video_id": -1, "discount": discount,
                "physics_state": self._dm_env.physics.get_state()}
        if self._player is None:
            return self._renderer.render(), info
        background, index = self._player.next_frame()
        info["background_frame"] = index
        info["video_id"] = int(self.video_pool.video_ids[index])
        if self._composite == "segmentation":
            agent, background_mask = self._renderer.render_agent_and_background_mask()
            observation = distractors.composite_segmentation(agent, background_mask, background)
        else:
            observation = distractors.composite_color(self._renderer.render(), background)
        return observation, info


def apply_fast_render_settings(model):
    """Set ``model.vis.quality`` to :data:`FAST_RENDER_SETTINGS` (before the first render)."""
    for name, value in FAST_RENDER_SETTINGS.items():
        setattr(model.vis.quality, name, value)


class InfoObservation:
    """Mixin for an unrendered simulator: ``reset`` and ``step`` return the info entry
    ``observation_key`` as the observation, in place of the image the environment does not draw."""

    observation_key = "state"

    def reset(self, *, seed=None, options=None):
        """Start an episode (re-seeded when ``seed`` is given); return (observation, info)."""
        _, info = super().reset(seed=seed, options=options)
        return info[self.observation_key], info

    def step(self, action):
        """One agent step (action repeat included); return (observation, reward, terminated,
        truncated, info)."""
        _, reward, terminated, truncated, info = super().step(action)
        return info[self.observation_key], reward, terminated, truncated, info


class SceneRenderer:
    """Renders one fixed camera of a dm_control ``Physics`` into (size, size, 3) uint8 images.

    Unlike ``physics.render``, which builds a new MuJoCo scene for every image, it keeps one scene
    and updates it once per frame, and can draw the colour and the segmentation pass from it.
    """

    def __init__(self, physics, *, size, camera_id):
        model = physics.model
        if size > model.vis.global_.offwidth or size > model.vis.global_.offheight:
            raise EnvConfigError(f"size {size} exceeds the model's offscreen buffer "
                                 f"({model.vis.global_.offwidth}x{model.vis.global_.offheight})")
        self._physics = physics
        self._scene = mujoco.MjvScene(model.ptr, maxgeom=_MAX_SCENE_GEOMS)
        self._full_flags = self._scene.flags.copy()
        self._agent_flags = self._full_flags.copy()
        if model.vis.quality.offsamples == 0:
            # The skybox and the floor reflection only ever paint background pixels. (With
            # multisampling they also tint the anti-aliased edges of the agent, so keep them.)
            self._agent_flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            self._agent_flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._segmentation_flags = self._full_flags.copy()
        self._segmentation_flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        self._segmentation_flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = camera_id
        self._rect = mujoco.MjrRect(0, 0, size, size)
        self._pixels = np.empty((size, size, 3), np.uint8)
        self._labels = np.empty((size, size, 3), np.uint8)
        self._floor_geoms = set(np.flatnonzero(model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE))
        self._floor_scene_index = 0  # where the floor sat in the scene last frame

    def render(self):
        """The full RGB image of the current state (new array)."""
        with self._physics.contexts.gl.make_current():
            self._update_scene()
            self._draw(self._full_flags, self._pixels)
        return np.flipud(self._pixels).copy()

    def render_agent_and_background_mask(self):
        """The RGB image for the agent's pixels and the (size, size) bool background mask.

        Without multisampling the image leaves out the skybox and the floor reflection (background
        pixels are replaced anyway); agent pixels are exactly those of :meth:`render`.

        The mask is True on pixels that show the skybox or a plane geom (the floor, including the
        shadows and reflections drawn on it); every other pixel shows the agent.
        """
        with self._physics.contexts.gl.make_current():
            self._update_scene()
            self._draw(self._agent_flags, self._pixels)
            self._draw(self._segmentation_flags, self._labels)
        return np.flipud(self._pixels).copy(), self._background_mask(np.flipud(self._labels))

    def _update_scene(self):
        mujoco.mjv_updateScene(self._physics.model.ptr, self._physics.data.ptr, self._option,
                               self._perturb, self._camera, mujoco.mjtCatBit.mjCAT_ALL,
                               self._scene)

    def _draw(self, flags, out):
        """Render the scene with render ``flags`` and read the pixels (bottom row first)."""
        context = self._physics.contexts.mujoco.ptr  # not kept: dm_control frees it at exit
        np.copyto(self._scene.flags, flags)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, context)
        mujoco.mjr_render(self._rect, self._scene, context)
        mujoco.mjr_readPixels(out, None, self._rect, context)

    def _background_mask(self, labels):
        """Decode the segmentation colours: label 0 is the skybox, label k is scene geom k - 1."""
        if self._scene.ngeom < 255:
            label = labels[:, :, 0]  # higher bytes are always 0
        else:
            label = labels.astype(np.int32) @ np.array([1, 1 << 8, 1 << 16], np.int32)
        mask = label == 0
        for floor_label in self._floor_labels():
            mask |= label == floor_label
        return mask

    def _floor_labels(self):
        """Segmentation labels of the plane geoms in the current scene (usually just the floor)."""
        geoms = self._scene.geoms
        if len(self._floor_geoms) == 1 and self._floor_scene_index < self._scene.ngeom:
            cached = geoms[self._floor_scene_index]
            if cached.objtype == mujoco.mjtObj.mjOBJ_GEOM and cached.objid in self._floor_geoms:
                return [cached.segid + 1]
        labels = []
        for index in range(self._scene.ngeom):
            geom = geoms[index]
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM and geom.objid in self._floor_geoms:
                self._floor_scene_index = index
                labels.append(geom.segid + 1)
        return labels


class CarRacingEnv(LQVEnv):
    """gymnasium's CarRacing with actions in [-1, 1]^3, action repeat 2 and 64x64 frames."""

    def __init__(self, spec_task, *, seed, size):
        super().__init__(spec_task, seed=seed, size=size)
        self._gym_env = gymnasium.make(spec_task.gym_id)
        self.metadata = {**self.metadata, "render_fps": _steps_per_second(
            spec_task.action_repeat / self._gym_env.metadata["render_fps"])}
        self._size = size
        self._seeded = False

    def close(self):
        """Close the underlying gymnasium environment."""
        self._gym_env.close()

    @staticmethod
    def to_car_action(action):
        """Map [-1, 1]^3 to CarRacing's (steering in [-1, 1], gas in [0, 1], brake in [0, 1])."""
        steering, gas, brake = action
        return np.array([steering, (gas + 1.0) / 2.0, (brake + 1.0) / 2.0], np.float32)

    def _reset_episode(self, seed):
        if seed is None and not self._seeded:
            seed = self._seed
        self._seeded = True
        frame, _ = self._gym_env.reset(seed=None if seed is None else int(seed))
        return self._resize(frame), self._info(discount=1.0)

    def _step_episode(self, action):
        car_action = self.to_car_action(action)
        reward, terminated = 0.0, False
        for _ in range(self.spec_task.action_repeat):
            frame, step_reward, terminated, truncated, _ = self._gym_env.step(car_action)
            reward += step_reward
            if terminated or truncated:
                break
        discount = 0.0 if terminated else 1.0
        return self._resize(frame), reward, terminated, self._info(discount=discount)

    def _resize(self, frame):
        if frame.shape[:2] == (self._size, self._size):
            return np.ascontiguousarray(frame)
        return cv2.resize(frame, (self._size, self._size), interpolation=cv2.INTER_AREA)

    def _info(self, *, discount):
        return {"background_frame": -1, "video_id": -1, "discount": discount,
                "state": car_state(self._gym_env.unwrapped)}
