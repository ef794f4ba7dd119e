"""The built-in background: a seeded synthetic driving video, no files needed.

The video is a sequence of clips of 160-280 frames (about 6-11 s at 25 fps) joined with hard
cuts, like the Kinetics "driving car" clips the published benchmark uses. Three kinds of clip
take turns:

* ``dashcam``: the road ahead from a camera fixed behind the windshield (city, highway or
  country road; curves, lane markings, roadside objects and other cars streaming past),
* ``in_car``: the same kind of drive seen by a hand-held camera inside the car, framed by the
  dashboard, A-pillars, roof, mirror and often the steering wheel,
* ``street``: a camera standing by the road while cars drive past: either looking across the
  street (side view, sometimes panning with a car) or along the road (perspective, style city,
  highway or country).

Frames are drawn at twice the output size and reduced with ``cv2.INTER_AREA`` (anti-aliasing),
shaken a little like a real camera, and exposed by an auto exposure that gives each clip a target
brightness and contrast; the targets are spread over the range measured on real Kinetics clips, so
the pool's statistics match real footage (``stats.REAL_DRIVING_STATISTICS``). Every clip draws
from its own random stream derived from ``seed``: the same seed always gives the same bytes, and
a shorter video is a prefix of a longer one with the same seed.
"""

import cv2
import numpy as np

from .cabin import CabinOverlay, HoodOverlay
from .drawing import smooth_noise
from .pool import VideoPool
from .road_scene import STYLES, RoadScene
from .street_scene import StreetScene

CLIP_KINDS = ("dashcam", "in_car", "street")
CLIP_FRAMES = (160, 280)  # shortest and longest clip
METER_FRAMES = 48  # the camera sets its exposure from the first frames of a clip
# exposure targets (mean gray level, mean per-frame std): (low, median, high), inside the range of
# real Kinetics "driving car" clips at 64x64 (see stats.REAL_DRIVING_STATISTICS)
TARGET_LUMINANCE = (62.0, 109.0, 150.0)
TARGET_CONTRAST = (45.0, 64.0, 82.0)
GENERATOR_VERSION = 1  # bump when the pictures change, so provenance tells versions apart


def procedural_driving_video(*, num_frames=1000, size=64, rgb=False, seed=0) -> VideoPool:
    """Render ``num_frames`` frames of synthetic driving footage into a ``VideoPool``.

    Frames are ``size`` x ``size``, grayscale (C = 1) unless ``rgb``; ``video_ids`` numbers the
    clips 0, 1, 2, ... and ``description["clips"]`` says what each clip shows.
    """
    if num_frames < 1 or size < 8:
        raise ValueError(f"procedural_driving_video needs num_frames >= 1 and size >= 8, got "
                         f"num_frames={num_frames} and size={size}")
    plan = plan_clips(num_frames, seed)
    frames = np.empty((num_frames, size, size, 3 if rgb else 1), np.uint8)
    video_ids = np.empty(num_frames, np.int32)
    position = 0
    for clip_id, clip in enumerate(plan):
        rng = np.random.default_rng([seed, 1, clip_id])
        end = position + clip["frames"]
        frames[position:end] = render_clip(clip, rng, size, rgb)
        video_ids[position:end] = clip_id
        position = end
    description = {"kind": "procedural", "generator_version": GENERATOR_VERSION, "seed": int(seed),
                   "num_frames": int(num_frames), "size": int(size), "rgb": bool(rgb),
                   "clips": plan}
    return VideoPool(frames, video_ids, description)


def plan_clips(num_frames, seed):
    """What each clip shows, how long it is and how the camera exposes it.

    Clip kinds rotate in shuffled rounds of three (never the same kind twice in a row). The
    exposure targets of successive clips follow low-discrepancy sequences over the range measured
    on real clips, so that even a pool of a few clips mixes dark and bright, flat and contrasty
    clips around the real medians. The last clip is cut short. Returns a list of JSON-able dicts
    ``{"kind", "style", "frames", "luminance", "contrast"}`` (targets: mean gray level and mean
    per-frame standard deviation).
    """
    rng = np.random.default_rng([seed, 0])
    light_start, contrast_start = rng.random(2)
    plan, total, previous = [], 0, None
    while total < num_frames:
        kinds = list(rng.permutation(CLIP_KINDS))
        if kinds[0] == previous:  # no two clips of the same kind in a row
            kinds.reverse()
        for kind in kinds:
            if total >= num_frames:
                break
            length = int(min(rng.integers(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1), num_frames - total))
            style = str(rng.choice(STYLES if kind != "street" else ("side",) + STYLES))
            # additive recurrences with irrational steps spread any prefix evenly over [0, 1)
            light = (light_start + len(plan) * 0.6180339887) % 1.0
            contrast = (contrast_start + len(plan) * 0.4142135624) % 1.0
            plan.append({"kind": str(kind), "style": style, "frames": length,
                         "luminance": round(_quantile(TARGET_LUMINANCE, light), 1),
                         "contrast": round(_quantile(TARGET_CONTRAST, contrast), 1)})
            total += length
            previous = kind
    return plan


def _quantile(points, q):
    """Piecewise-linear quantile function through (0, low), (0.5, median), (1, high)."""
    low, median, high = points
    return float(np.interp(q, [0.0, 0.5, 1.0], [low, median, high]))


def render_clip(clip, rng, size, rgb):
    """Render one clip into (frames, size, size, C) uint8."""
    render_size = 2 * size
    scene = _make_scene(clip, rng, render_size)
    # scenes and shake are planned for the longest clip, and exposure is metered on the first
    # METER_FRAMES frames, so that cutting a clip short (the last clip of a pool) does not change
    # its first frames
    shake = CameraShake(rng, clip["kind"], render_size, CLIP_FRAMES[1])
    gamma = rng.uniform(0.85, 1.15)
    count = max(clip["frames"], METER_FRAMES)
    frames = np.empty((count, size, size, 3), np.uint8)
    for index in range(count):
        scene.step()
        image = shake.apply(scene.render(), index)
        frames[index] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(frames.reshape(-1, size, 3), cv2.COLOR_RGB2GRAY).reshape(count, size, size)
    curve = auto_exposure(gray[:METER_FRAMES], clip["luminance"], clip["contrast"], gamma)
    if not rgb:
        return curve[gray[: clip["frames"], :, :, None]]
    return curve[_muted(frames[: clip["frames"]], gray[: clip["frames"]])]


def _muted(rgb_frames, gray_frames, saturation=0.65):
    """Colors pulled toward gray: the flat paint of the drawing is more saturated than footage."""
    gray = gray_frames[..., None].astype(np.int16)
    muted = gray + ((rgb_frames.astype(np.int16) - gray) * saturation).astype(np.int16)
    return np.clip(muted, 0, 255).astype(np.uint8)


def _make_scene(clip, rng, render_size):
    """The scene object of a clip: something with ``step()`` and ``render() -> RGB image``."""
    if clip["kind"] == "street" and clip["style"] == "side":
        return StreetScene(rng, render_size, CLIP_FRAMES[1])
    road = RoadScene(rng, render_size, clip["style"], parked=clip["kind"] == "street")
    if clip["kind"] == "street":
        return road
    if clip["kind"] == "in_car":
        return OverlaidScene(road, CabinOverlay(rng, render_size))
    if rng.random() < 0.5:
        return OverlaidScene(road, HoodOverlay(rng, render_size))
    return road


class OverlaidScene:
    """A road scene with a part of our own car in front of the camera (cabin or bonnet)."""

    def __init__(self, road, overlay):
        self.road = road
        self.overlay = overlay

    def step(self):
        """Advance the drive by one frame."""
        self.road.step()

    def render(self):
        """Return the road view with the overlay drawn over it."""
        return self.overlay.apply(self.road.render())


class CameraShake:
    """Per-frame shift, roll and zoom: road vibration for a dashcam, hand tremor in the car."""

    AMPLITUDE = {"dashcam": (1.5, 2.5, 0.8), "in_car": (3.5, 3.5, 1.8), "street": (3.0, 3.0, 1.2)}

    def __init__(self, rng, kind, size, frames):
        shift_x, shift_y, roll = self.AMPLITUDE[kind]
        scale = size / 128  # amplitudes are given in pixels of a 128-pixel frame
        cells = frames // 12
        self.dx = (smooth_noise(rng, frames, cells) - 0.5) * 2 * shift_x * scale
        self.dy = (smooth_noise(rng, frames, cells) - 0.5) * 2 * shift_y * scale
        self.dy += rng.normal(0, 0.3 * shift_y * scale, frames)  # bumps of the road
        self.roll = (smooth_noise(rng, frames, cells) - 0.5) * 2 * roll
        self.size = size
        # zoom in just enough that shifted and rolled frames still cover the picture
        margin = 2 * max(shift_x, shift_y) * scale + np.radians(roll) * size * 0.71
        self.zoom = 1.0 + margin / (size / 2)

    def apply(self, image, index):
        """Return ``image`` moved by this frame's shake (a slight zoom keeps the edges covered)."""
        center = (self.size / 2, self.size / 2)
        matrix = cv2.getRotationMatrix2D(center, float(self.roll[index]), self.zoom)
        matrix[0, 2] += self.dx[index]
        matrix[1, 2] += self.dy[index]
        return cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


def auto_exposure(gray_frames, luminance, contrast, gamma):
    """A 256-entry uint8 tone curve that gives ``gray_frames`` the target brightness and contrast.

    Like a camera's auto exposure: the curve ``118 + (x**gamma - 118) * gain + offset`` (clipped to
    0..255) is fitted so that the frames' mean gray level is ``luminance`` and their mean per-frame
    standard deviation is ``contrast``, as far as clipping allows.
    """
    levels = 255.0 * (np.arange(256) / 255.0) ** gamma
    per_frame = gray_frames.reshape(len(gray_frames), -1)
    histograms = np.stack([np.bincount(f, minlength=256) for f in per_frame]) / per_frame.shape[1]

    def measure(gain, offset):
        """Mean gray level and mean per-frame std after the curve with this gain and offset."""
        curve = np.clip(118 + (levels - 118) * gain + offset, 0, 255)
        means = histograms @ curve
        spreads = np.sqrt(np.maximum(histograms @ curve**2 - means**2, 0))
        return means.mean(), spreads.mean()

    gain, offset = 1.0, 0.0
    for _ in range(4):
        offset = _bisect(lambda b: measure(gain, b)[0] - luminance, -200.0, 200.0)
        gain = _bisect(lambda g: measure(g, offset)[1] - contrast, 0.3, 4.0)
    offset = _bisect(lambda b: measure(gain, b)[0] - luminance, -200.0, 200.0)
    return np.clip(np.round(118 + (levels - 118) * gain + offset), 0, 255).astype(np.uint8)


def _bisect(function, low, high, steps=30):
    """Root of an increasing function on [low, high] (an end point when there is none inside)."""
    for _ in range(steps):
        middle = (low + high) / 2
        if function(middle) < 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2
