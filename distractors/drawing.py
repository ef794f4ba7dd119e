"""Small drawing helpers shared by the procedural scenes (numpy + OpenCV primitives)."""

import cv2
import numpy as np

FRAME_TIME = 1.0 / 25.0  # seconds: the procedural videos play at 25 frames per second
SUBPIXEL_BITS = 4
SUBPIXEL = 1 << SUBPIXEL_BITS  # OpenCV fixed-point drawing: coordinates in 1/16 pixel


def fill_polygons(image, polygons, color):
    """Fill polygons given as (N, K, 2) float pixel positions, with sub-pixel precision."""
    height, width = image.shape[:2]
    points = np.asarray(polygons, np.float64) * SUBPIXEL
    # keep huge coordinates (points just in front of the camera) inside OpenCV's fixed-point range
    np.minimum(points, 3 * SUBPIXEL * max(height, width), out=points)
    np.maximum(points, -2 * SUBPIXEL * max(height, width), out=points)
    cv2.fillPoly(image, points.astype(np.int32), np.asarray(color, np.float64).tolist(),
                 cv2.LINE_8, SUBPIXEL_BITS)


def fill_circle(image, center, radius, color):
    """Fill a circle at a float center and radius (pixels)."""
    if radius < 0.2:
        return
    cv2.circle(image, (int(center[0] * SUBPIXEL), int(center[1] * SUBPIXEL)),
               max(int(radius * SUBPIXEL), 1), np.asarray(color, np.float64).tolist(), -1,
               cv2.LINE_8, SUBPIXEL_BITS)


def mix(color_a, color_b, amount):
    """Linear blend of two RGB colors: ``amount`` 0 gives a, 1 gives b."""
    color_a = np.asarray(color_a, float)
    return color_a + (np.asarray(color_b, float) - color_a) * amount


def vertical_gradient(height, width, top, bottom):
    """An (height, width, 3) float image fading from color ``top`` to ``bottom``."""
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    return np.ascontiguousarray(np.broadcast_to(mix(top, bottom, t), (height, width, 3)))


def smooth_noise(rng, length, cells):
    """A 1-D smooth random curve of ``length`` samples through ``cells + 1`` random knots in [0, 1].

    Cubic interpolation may overshoot the knots slightly; the result is clipped to [0, 1].
    """
    knots = rng.random(cells + 1).astype(np.float32)
    curve = cv2.resize(knots[None, :], (length, 1), interpolation=cv2.INTER_CUBIC)[0]
    return np.clip(curve, 0.0, 1.0)


def sky_panorama(rng, size, horizon, top, low, *, skyline, skyline_color, width_factor=6):
    """A wide (horizon, width_factor * size, 3) uint8 strip: sky, clouds and a distant skyline.

    ``skyline`` is "city" (blocks of towers) or "hills" (rolling hills with a tree line). The strip
    wraps around without a seam (its ends are cross-faded), so it can turn with the car forever.
    """
    width = width_factor * size
    overlap = size // 2
    sky = vertical_gradient(horizon, width + overlap, top, low)
    clouds = _cloud_layer(rng, horizon, width + overlap)
    sky = mix(sky, np.array([240, 240, 242.0]), clouds[:, :, None] * rng.uniform(0.3, 0.9))
    heights = _skyline_heights(rng, width + overlap, size, skyline)
    rows = np.arange(horizon)[:, None]
    sky[rows >= horizon - heights[None, :]] = skyline_color
    fade = np.linspace(0.0, 1.0, overlap)[None, :, None]
    sky[:, :overlap] = sky[:, width:] * (1 - fade) + sky[:, :overlap] * fade
    return np.clip(sky[:, :width], 0, 255).astype(np.uint8)


def _cloud_layer(rng, height, width):
    """Soft cloud cover in [0, 1]: thresholded smooth noise, stronger near the top."""
    cells = rng.random((max(height // 12, 2), width // 24)).astype(np.float32)
    noise = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    cover = rng.uniform(0.35, 0.75)
    clouds = np.clip((noise - cover) * 4, 0, 1)
    return clouds * np.linspace(1.0, 0.4, height)[:, None]


def _skyline_heights(rng, width, size, skyline):
    """Heights (pixels above the horizon) of the distant skyline for every panorama column."""
    if skyline == "city":
        heights = np.zeros(width)
        x = 0
        while x < width:
            block = int(rng.integers(size // 16, size // 5))
            heights[x:x + block] = rng.uniform(0.02, 0.22) * size
            x += block
        return heights
    hills = smooth_noise(rng, width, 12) * rng.uniform(0.03, 0.12) * size
    treeline = rng.random(width) * 0.015 * size
    return hills + treeline
