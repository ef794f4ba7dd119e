"""Write observation frames as a preview a person can look at: an animated GIF, a PNG grid, or a
PNG grid with a caption over every row and a label under every tile
(:func:`save_labelled_sheet`)."""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


# ------------------------------------------------------------------------- labelled sheets

LABEL_BACKGROUND = (24, 24, 24)
LABEL_COLOUR = (235, 235, 235)
LABEL_FONT_SIZE = 12
ROW_GAP = 8
"""Pixels between the rows of a labelled sheet (a row: caption, frames, labels)."""


@dataclass
class SheetRow:
    """One row of a labelled contact sheet: ``frames`` (n, H, W, 3) uint8, the ``caption`` written
    above them and one entry of ``labels`` written under each frame."""

    frames: np.ndarray
    caption: str
    labels: list


def save_labelled_sheet(rows, path, *, scale=2) -> Path:
    """Save :class:`SheetRow` rows as one PNG: per row a caption line, then its frames (enlarged
    ``scale`` times, nearest neighbour) side by side with a label under each. Returns the path."""
    if not rows:
        raise ValueError("no rows to draw")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_sheet(rows, scale=int(scale)).save(path, format="PNG")
    return path


def labelled_sheet(rows, *, scale=2) -> Image.Image:
    """The image :func:`save_labelled_sheet` writes."""
    font = _label_font()
    line = _text_height(font) + 4
    tiles = [upscale_nearest(_checked_frames(row.frames), scale) for row in rows]
    tile_h, tile_w = tiles[0].shape[1:3]
    columns = max(len(frames) for frames in tiles)
    width = max(columns * (tile_w + SHEET_GAP) - SHEET_GAP, 1)
    row_height = line + tile_h + line
    sheet = Image.new("RGB", (width, len(rows) * (row_height + ROW_GAP) - ROW_GAP),
                      LABEL_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (row, frames) in enumerate(zip(rows, tiles)):
        top = index * (row_height + ROW_GAP)
        draw.text((2, top + 2), _fit(draw, row.caption, font, width - 4), fill=LABEL_COLOUR,
                  font=font)
        for column, frame in enumerate(frames):
            left = column * (tile_w + SHEET_GAP)
            sheet.paste(Image.fromarray(frame), (left, top + line))
            label = str(row.labels[column]) if column < len(row.labels) else ""
            draw.text((left + 2, top + line + tile_h + 2), _fit(draw, label, font, tile_w - 4),
                      fill=LABEL_COLOUR, font=font)
    return sheet


def _label_font():
    """Pillow's built-in font at :data:`LABEL_FONT_SIZE` (its bitmap font on old Pillow)."""
    try:
        return ImageFont.load_default(size=LABEL_FONT_SIZE)
    except TypeError:  # Pillow < 10.1 has one fixed size
        return ImageFont.load_default()


def _text_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom)


def _fit(draw, text, font, width) -> str:
    """``text`` cut (with an ellipsis) to fit in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""
