"""Moving backgrounds ("distractors") for LQV-D4RL observations.

The package depends only on numpy and OpenCV. Its parts, in the order data flows through them:

* **Sources** turn something into a ``VideoPool`` (decoded (F, H, W, C) uint8 frames in RAM, the
  source clip of each frame, and a JSON-able ``description`` for dataset provenance):

  - ``procedural_driving_video``: the built-in default, a seeded synthetic driving video (dashcam
    road views, in-car views through the windshield, a fixed camera watching cars pass) whose
    brightness, contrast and motion match real Kinetics "driving car" clips at 64x64.
  - ``load_video_dir``: a folder, glob or file of real videos (e.g. Kinetics-400
    ``train/driving_car``), decoded with OpenCV following the published recipe: files shuffled with
    a seed, whole clips concatenated up to ``num_frames`` frames, resized with INTER_AREA.
  - ``make_video_pool``: one entry point for both (``None`` / ``"procedural"`` / a path or glob).

* **Playback**: ``BackgroundPlayer`` starts each episode at a random (seeded) frame of the pool and
  returns one frame per agent step, wrapping around at the end.

* **Compositing** puts the background behind the rendered agent: ``composite_segmentation`` (exact,
  from the renderer's background mask) and ``composite_color`` (the published rule: pixels where
  blue > green and blue > red).

* **Statistics**: ``video_statistics`` measures brightness, contrast and motion per clip, to compare
  a pool with ``REAL_DRIVING_STATISTICS``.

Modules: ``pool`` (VideoPool, BackgroundPlayer), ``sources`` (make_video_pool), ``video_dir``
(real videos), ``procedural`` (clip plan, camera shake, auto exposure) drawing its clips with
``road_scene`` (perspective road, sky), ``roadside`` (buildings, trees, poles, lights), ``traffic``
(other cars), ``cabin`` (car interior and bonnet overlays), ``street_scene`` (cars passing a kerb
camera), ``palette`` and ``drawing`` (colors and OpenCV drawing helpers); ``composite``, ``stats``
and ``errors``.

Example::

    from distractors import make_video_pool, BackgroundPlayer, composite_segmentation
    pool = make_video_pool(None, seed=0)            # or "/data/kinetics400/train/driving_car"
    player = BackgroundPlayer(pool, seed=0)
    player.reset()
    background, index = player.next_frame()
    observation = composite_segmentation(render, background_mask, background)
"""

from .composite import color_background_mask, composite_color, composite_segmentation
from .errors import VideoSourceError, VideoSourceNotFoundError
from .pool import BackgroundPlayer, VideoPool
from .procedural import procedural_driving_video
from .sources import make_video_pool
from .stats import REAL_DRIVING_STATISTICS, video_statistics
from .video_dir import VIDEO_SUFFIXES, decode_video, find_video_files, load_video_dir

__all__ = [
    "BackgroundPlayer",
    "REAL_DRIVING_STATISTICS",
    "VIDEO_SUFFIXES",
    "VideoPool",
    "VideoSourceError",
    "VideoSourceNotFoundError",
    "color_background_mask",
    "composite_color",
    "composite_segmentation",
    "decode_video",
    "find_video_files",
    "load_video_dir",
    "make_video_pool",
    "procedural_driving_video",
    "video_statistics",
]
