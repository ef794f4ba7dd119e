"""Decode a folder (or glob) of real videos, e.g. Kinetics-400 ``train/driving_car``, into a pool.

The recipe follows the published DBC / TIA / SeMOPO code: the video files are shuffled with a seed
(after sorting, so the result does not depend on directory order), whole clips are decoded one
after another and concatenated until the pool holds ``num_frames`` frames (the last clip is cut
short). Every frame is resized to ``size`` x ``size`` with ``cv2.INTER_AREA`` (the whole frame is
squeezed, nothing is cropped) and kept as grayscale or RGB uint8. Files OpenCV cannot decode are
skipped with a warning that names them.
"""

import glob
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from .errors import VideoSourceError, VideoSourceNotFoundError
from .pool import VideoPool

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def load_video_dir(path_or_glob, *, num_frames=1000, size=64, rgb=False, seed=0) -> VideoPool:
    """Decode the videos of a folder, a glob pattern or a single file into a ``VideoPool``.

    A folder contributes its own video files (not those of subfolders; use a glob such as
    ``"kinetics/**/*.mp4"`` for that). ``description["files"]`` lists the clips used, in pool
    order, relative to the folder (or to the fixed part of the glob).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    files, base = find_video_files(path_or_glob)
    order = np.random.default_rng(seed).permutation(len(files))
    clips, used, skipped = _decode_until_full([files[i] for i in order], num_frames, size, rgb)
    if not clips:
        raise VideoSourceError(
            f"none of the {len(files)} video files under {path_or_glob!s} could be decoded by "
            f"OpenCV ({', '.join(_names(skipped, base)[:5])}{' ...' if len(skipped) > 5 else ''}); "
            "check that they are complete video files (re-download them) or convert them to mp4")
    frames = np.concatenate(clips)[:num_frames]
    video_ids = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(clips)])
    if len(frames) < num_frames:
        warnings.warn(f"the videos under {path_or_glob!s} hold only {len(frames)} frames, fewer "
                      f"than num_frames={num_frames}; the pool is shorter and will wrap sooner",
                      stacklevel=2)
    description = {
        "kind": "video_dir", "source": str(path_or_glob), "seed": int(seed),
        "num_frames": int(len(frames)), "size": int(size), "rgb": bool(rgb),
        "files": _names(used, base), "clip_frames": [int(len(c)) for c in clips],
        "skipped": _names(skipped, base),
    }
    return VideoPool(frames, video_ids[:num_frames], description)


def find_video_files(path_or_glob):
    """Return (sorted list of video file paths, base folder) for a folder, glob or single file."""
    text = os.path.expanduser(str(path_or_glob))
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        if not matches:
            raise VideoSourceError(
                f"the pattern {text!r} matches no files; check the path (for Kinetics use e.g. "
                "'/data/kinetics400/train/driving_car/*.mp4')")
        base = _glob_base(text)
    else:
        path = Path(text)
        if not path.exists():
            raise VideoSourceNotFoundError(
                f"background video path {text!r} does not exist; pass a folder of videos (e.g. "
                "Kinetics-400 train/driving_car), a glob, or None for the built-in procedural "
                "video")
        if path.is_file():
            return [path], path.parent
        matches = sorted(p for p in path.iterdir() if p.is_file())
        base = path
        if not matches:
            raise VideoSourceError(f"the folder {text!r} is empty; put video files "
                                   f"({', '.join(VIDEO_SUFFIXES[:3])}, ...) in it")
    videos = [p for p in matches if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    if not videos:
        raise VideoSourceError(
            f"{text!r} holds no video files (looked for {', '.join(VIDEO_SUFFIXES)} among "
            f"{len(matches)} entries); point it at the folder that contains the clips themselves")
    return videos, base


def decode_video(path, *, size=64, rgb=False, max_frames=None):
    """Decode one video file into (F, size, size, C) uint8; F == 0 when OpenCV cannot read it."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while capture.isOpened() and (max_frames is None or len(frames) < max_frames):
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            frames.append(_convert_frame(frame, size, rgb))
    finally:
        capture.release()
    channels = 3 if rgb else 1
    if not frames:
        return np.zeros((0, size, size, channels), np.uint8)
    return np.stack(frames).reshape(len(frames), size, size, channels)


def _convert_frame(frame_bgr, size, rgb):
    """Resize one decoded BGR frame to size x size (INTER_AREA) and convert it to gray or RGB."""
    code = cv2.COLOR_BGR2RGB if rgb else cv2.COLOR_BGR2GRAY
    small = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, code)


def _decode_until_full(files, num_frames, size, rgb):
    """Decode files in order until ``num_frames`` frames are collected; skip unreadable ones."""
    clips, used, skipped = [], [], []
    total = 0
    for path in files:
        if total >= num_frames:
            break
        clip = decode_video(path, size=size, rgb=rgb, max_frames=num_frames - total)
        if len(clip) == 0:
            warnings.warn(f"skipping background video {str(path)!r}: OpenCV could not decode any "
                          "frame (corrupt, truncated or not a video); replace or delete the file",
                          stacklevel=3)
            skipped.append(path)
            continue
        clips.append(clip)
        used.append(path)
        total += len(clip)
    return clips, used, skipped


def _glob_base(pattern):
    """Return the leading folders of a glob pattern that contain no wildcard."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _names(paths, base):
    """Return paths as POSIX strings relative to ``base`` (absolute if outside it)."""
    names = []
    for path in paths:
        relative = Path(os.path.relpath(path, base))
        names.append(str(path) if relative.parts[:1] == ("..",) else relative.as_posix())
    return names
