"""Write observation frames as a preview a person can look at: an animated GIF or a PNG grid."""

import math
from pathlib import Path

import numpy as np
from PIL import Image

PREVIEW_SUFFIXES = (".gif", ".png")
SHEET_GAP = 2
"""Pixels of black between the tiles of a PNG contact sheet."""


def preview_format(path) -> str:
    """Return ``"gif"`` or ``"png"`` from the suffix of ``path``; other suffixes raise ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in PREVIEW_SUFFIXES:
        raise ValueError(f"cannot write a preview to {str(path)!r}: the file name must end in "
                         f"{' or '.join(PREVIEW_SUFFIXES)} (animated GIF or PNG contact sheet)")
    return suffix[1:]


def save_preview(frames, path, *, fps=15, columns=None, scale=2) -> Path:
    """Save ``frames`` ((N, H, W, 3) uint8) as an animated GIF or a PNG contact sheet.

    The suffix of ``path`` picks the format: ``.gif`` plays the frames at ``fps`` frames per second
    in a loop; ``.png`` lays them out row by row in a grid of ``columns`` tiles (default: about
    square). Every frame is enlarged ``scale`` times with nearest-neighbour upscaling, so pixels
    stay sharp. Missing parent folders are created. Returns the path written.
    """
    image_format = preview_format(path)
    frames = _checked_frames(frames)
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")
    frames = upscale_nearest(frames, int(scale))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image_format == "gif":
        _save_gif(frames, path, fps=fps)
    else:
        Image.fromarray(contact_sheet(frames, columns=columns)).save(path, format="PNG")
    return path


def _checked_frames(frames):
    """Return ``frames`` as a uint8 array of shape (N, H, W, 3), or raise ValueError."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be an (N, H, W, 3) uint8 array, got {frames.dtype} "
                         f"{frames.shape}")
    if len(frames) == 0:
        raise ValueError("no frames to preview (got an empty array)")
    return frames


def upscale_nearest(frames, scale):
    """Enlarge (N, H, W, C) frames ``scale`` times by repeating every pixel."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def contact_sheet(frames, *, columns=None):
    """Lay (N, H, W, 3) frames out row by row in one image, with black gaps between tiles."""
    count, height, width, _ = frames.shape
    if columns is None:
        columns = math.ceil(math.sqrt(count))
    if not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be a whole number >= 1, got {columns!r}")
    columns = min(int(columns), count)
    rows = math.ceil(count / columns)
    sheet = np.zeros((rows * (height + SHEET_GAP) - SHEET_GAP,
                      columns * (width + SHEET_GAP) - SHEET_GAP, 3), np.uint8)
    for index, frame in enumerate(frames):
        top = (index // columns) * (height + SHEET_GAP)
        left = (index % columns) * (width + SHEET_GAP)
        sheet[top:top + height, left:left + width] = frame
    return sheet


def _save_gif(frames, path, *, fps):
    """Write an endlessly looping animated GIF."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / fps)), loop=0)
