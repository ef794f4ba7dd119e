"""One entry point that turns any supported background source into a ``VideoPool``."""

from .pool import VideoPool
from .procedural import procedural_driving_video
from .video_dir import load_video_dir


def make_video_pool(source=None, *, num_frames=1000, size=64, rgb=False, seed=0) -> VideoPool:
    """Build the background pool for ``source``.

    ``source`` is ``None`` or ``"procedural"`` for the built-in procedural driving video; a folder
    of videos, a glob pattern or a single video file for real footage (see ``load_video_dir``); or
    an existing ``VideoPool``, which is returned unchanged (the other arguments are then ignored).
    """
    if isinstance(source, VideoPool):
        return source
    if source is None or (isinstance(source, str) and source == "procedural"):
        return procedural_driving_video(num_frames=num_frames, size=size, rgb=rgb, seed=seed)
    return load_video_dir(source, num_frames=num_frames, size=size, rgb=rgb, seed=seed)
