"""A pool of decoded background frames in RAM, and a player that walks through it.

``VideoPool`` holds the frames of one or more clips concatenated, which clip each frame came from,
and a JSON-able description of where the frames came from (kept in dataset provenance).
``BackgroundPlayer`` plays a pool the way the published recipe does: every episode starts at a
random frame, each agent step shows the next frame, and the end of the pool wraps to its start.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class VideoPool:
    """Decoded background frames.

    Attributes:
        frames: (F, H, W, C) uint8, C == 1 (grayscale) or 3 (RGB); (F, H, W) is taken as gray.
        video_ids: (F,) int32, the source clip of each frame (0, 1, 2, ... in pool order).
        description: JSON-able provenance, at least ``{"kind": "procedural" | "video_dir", ...}``.
    """

    frames: np.ndarray
    video_ids: np.ndarray
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        self.frames = np.ascontiguousarray(self.frames)
        if self.frames.ndim == 3:
            self.frames = self.frames[..., None]
        self.video_ids = np.asarray(self.video_ids, dtype=np.int32)
        frames = self.frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] not in (1, 3):
            raise ValueError(f"VideoPool.frames must be (F, H, W, C) uint8 with C 1 or 3, got "
                             f"{frames.dtype} {frames.shape}")
        if len(frames) == 0:
            raise ValueError("VideoPool needs at least one frame")
        if self.video_ids.shape != (len(frames),):
            raise ValueError(f"VideoPool.video_ids must have shape ({len(frames)},), got "
                             f"{self.video_ids.shape}")

    def __len__(self):
        """Number of frames in the pool."""
        return len(self.frames)

    @property
    def rgb(self):
        """True when the frames have three color channels."""
        return self.frames.shape[3] == 3

    @property
    def size(self):
        """(height, width) of a frame."""
        return self.frames.shape[1], self.frames.shape[2]

    @property
    def num_videos(self):
        """Number of distinct source clips."""
        return len(np.unique(self.video_ids))

    def frame_rgb(self, index):
        """Return frame ``index`` as a new (H, W, 3) uint8 array (gray repeated on 3 channels)."""
        frame = self.frames[index]
        if frame.shape[2] == 3:
            return frame.copy()
        return np.repeat(frame, 3, axis=2)


class BackgroundPlayer:
    """Plays a ``VideoPool``: a random start per episode, then one frame per agent step.

    With ``seed=None`` the starts are unseeded (the published recipe); with an int they are
    reproducible. ``reset(seed)`` re-seeds, so ``BackgroundPlayer(pool, 3).reset()`` and
    ``BackgroundPlayer(pool, None).reset(seed=3)`` pick the same start.
    """

    def __init__(self, pool: VideoPool, seed: int | None = None):
        self.pool = pool
        self._rng = np.random.default_rng(seed)
        self._next_index = None
        self.index = -1  # pool index of the frame returned last, -1 before the first

    def reset(self, seed=None) -> int:
        """Pick a random start frame (re-seeding first when ``seed`` is given) and return it."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        start = int(self._rng.integers(len(self.pool)))
        self._next_index = start
        self.index = -1
        return start

    def next_frame(self) -> tuple[np.ndarray, int]:
        """Return the next (H, W, 3) uint8 frame and its pool index (wrapping at the pool's end)."""
        if self._next_index is None:
            raise RuntimeError("BackgroundPlayer.next_frame() called before reset(); "
                               "call reset() at the start of every episode")
        index = self._next_index
        self._next_index = (index + 1) % len(self.pool)
        self.index = index
        return self.pool.frame_rgb(index), index

    @property
    def video_id(self) -> int:
        """Source clip of the frame returned last (-1 before the first frame of an episode)."""
        return -1 if self.index < 0 else int(self.pool.video_ids[self.index])
