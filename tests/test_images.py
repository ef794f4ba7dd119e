"""save_preview: animated GIFs and PNG contact sheets, read back with Pillow."""

import numpy as np
import pytest
from PIL import Image

from lqv_d4rl.images import SHEET_GAP, contact_sheet, save_preview


def distinct_frames(count, height=4, width=6):
    """``count`` frames, each filled with its own flat colour (index * 20 on every channel)."""
    values = (np.arange(count, dtype=np.uint8) * 20)[:, None, None, None]
    return np.broadcast_to(values, (count, height, width, 3)).copy()


def test_gif_holds_every_frame_upscaled(tmp_path):
    frames = distinct_frames(5)
    frames[2, 0, 0] = (255, 0, 0)  # one red pixel, which must become a 3x3 red block
    path = save_preview(frames, tmp_path / "sub" / "clip.gif", fps=10, scale=3)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (18, 12)
        assert gif.info["duration"] == 100 and gif.info["loop"] == 0
        gif.seek(2)
        pixels = np.asarray(gif.convert("RGB"))
    np.testing.assert_array_equal(pixels[:3, :3], np.full((3, 3, 3), (255, 0, 0)))
    np.testing.assert_array_equal(pixels[3:, 3:], np.full((9, 15, 3), 40))


def test_png_is_a_grid_of_tiles(tmp_path):
    frames = distinct_frames(5)
    path = save_preview(frames, tmp_path / "sheet.PNG", columns=3, scale=2)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    tile_h, tile_w = 8, 12
    assert sheet.shape == (2 * tile_h + SHEET_GAP, 3 * tile_w + 2 * SHEET_GAP, 3)
    for index in range(5):
        top = (index // 3) * (tile_h + SHEET_GAP)
        left = (index % 3) * (tile_w + SHEET_GAP)
        np.testing.assert_array_equal(sheet[top:top + tile_h, left:left + tile_w], index * 20)
    assert not sheet[tile_h + SHEET_GAP:, 2 * (tile_w + SHEET_GAP):].any()  # empty sixth cell


def test_default_grid_is_about_square():
    assert contact_sheet(distinct_frames(10, 2, 2)).shape[:2] == (3 * 4 - 2, 4 * 4 - 2)
    assert contact_sheet(distinct_frames(1, 2, 2)).shape[:2] == (2, 2)


def test_other_suffixes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif or \.png"):
        save_preview(distinct_frames(2), tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


@pytest.mark.parametrize("frames", [np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4, 3)),
                                    np.zeros((0, 4, 4, 3), np.uint8)])
def test_bad_frames_are_rejected(tmp_path, frames):
    with pytest.raises(ValueError, match="frames"):
        save_preview(frames, tmp_path / "clip.png")


@pytest.mark.parametrize("options", [{"scale": 0}, {"scale": 1.5}, {"columns": 0}])
def test_bad_layout_options_are_rejected(tmp_path, options):
    with pytest.raises(ValueError, match="whole number"):
        save_preview(distinct_frames(2), tmp_path / "clip.png", **options)
