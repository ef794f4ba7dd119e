"""Summary statistics of a background video, to compare it with real driving footage.

Three numbers describe how a background looks to a 64x64 agent: how bright it is (mean
luminance), how much contrast a frame has (spatial standard deviation of one frame) and how much
it moves (mean absolute difference between consecutive frames). Each is first averaged over the
frames of one clip; ``video_statistics`` then reports the minimum, median and maximum over clips.
Differences are taken only inside a clip, never across the hard cut where two clips join.
"""

import numpy as np

# Real Kinetics-400 "driving car" clips, decoded at 64x64 grayscale: range over clips and median
# (measured for the project on Kinetics-400 train/driving_car, decoded as load_video_dir does).
REAL_DRIVING_STATISTICS = {
    "mean_luminance": {"min": 49.0, "median": 109.0, "max": 161.0},
    "spatial_std": {"min": 39.0, "median": 64.0, "max": 87.0},
    "frame_difference": {"min": 1.8, "median": 10.3, "max": 21.5},
}

_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY


def video_statistics(frames, video_ids=None):
    """Return brightness, contrast and motion statistics of ``frames`` per clip.

    ``frames`` is (F, H, W) or (F, H, W, C) uint8 with C = 1 (gray) or 3 (RGB); ``video_ids`` (F,)
    splits it into clips (the whole array is one clip when omitted). The result is a JSON-able
    dict::

        {"num_frames": F, "num_clips": K,
         "mean_luminance": {"min", "median", "max", "per_clip": [...]},
         "spatial_std": {...}, "frame_difference": {...}}
    """
    gray = _to_gray_float(frames)
    ids = np.zeros(len(gray), np.int64) if video_ids is None else np.asarray(video_ids)
    if ids.shape != (len(gray),):
        raise ValueError(f"video_ids must have shape ({len(gray)},), got {ids.shape}")
    clips = _clip_slices(ids)
    per_clip = {"mean_luminance": [], "spatial_std": [], "frame_difference": []}
    for clip in clips:
        clip_frames = gray[clip]
        per_clip["mean_luminance"].append(float(clip_frames.mean()))
        per_clip["spatial_std"].append(float(clip_frames.std(axis=(1, 2)).mean()))
        if len(clip_frames) > 1:
            per_clip["frame_difference"].append(float(np.abs(np.diff(clip_frames, axis=0)).mean()))
    result = {"num_frames": int(len(gray)), "num_clips": len(clips)}
    for name, values in per_clip.items():
        result[name] = _summary(values)
    return result


def _to_gray_float(frames):
    """Return (F, H, W) float32 luminance of uint8 gray or RGB frames."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"frames must be uint8 (F, H, W) or (F, H, W, C), got "
                         f"{frames.dtype} {frames.shape}")
    if frames.ndim == 3:
        return frames.astype(np.float32)
    if frames.shape[3] == 1:
        return frames[..., 0].astype(np.float32)
    if frames.shape[3] == 3:
        return (frames @ _GRAY_WEIGHTS).astype(np.float32)
    raise ValueError(f"frames must have 1 or 3 channels, got {frames.shape[3]}")


def _clip_slices(video_ids):
    """Split frame indices into runs of equal video id (a clip may appear more than once)."""
    if len(video_ids) == 0:
        return []
    starts = np.flatnonzero(np.diff(video_ids)) + 1
    bounds = [0, *starts.tolist(), len(video_ids)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _summary(values):
    """Return min / median / max of a list of per-clip values (None when there are none)."""
    if not values:
        return {"min": None, "median": None, "max": None, "per_clip": []}
    array = np.asarray(values)
    return {"min": float(array.min()), "median": float(np.median(array)),
            "max": float(array.max()), "per_clip": [round(v, 3) for v in values]}
