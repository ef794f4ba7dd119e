"""A road seen from a moving car: the scene of the dashcam and in-car clips.

Pseudo-3D rendering. The camera sits ``CAMERA_HEIGHT`` metres above a flat road whose centre line
bends with curvature ``c`` (lateral offset ``c * z**2 / 2`` at distance ``z``). Each ground row of
the image sees one distance, so the road surface (asphalt, lane markings, verge) is computed for all
pixels at once from the lateral position of each pixel. Sky, clouds and the distant skyline are a
panorama that turns with the car's heading. Roadside objects (``roadside.py``) and other cars
(``traffic.py``) are flat shapes projected with the same camera and drawn far to near, so they grow
and slide outward as the car approaches them.
"""

import math

import numpy as np

from .drawing import FRAME_TIME, sky_panorama
from .palette import jittered, sky_colors
from .roadside import RoadsideObjects
from .traffic import Traffic

CAMERA_HEIGHT = 1.3  # metres above the road
LANE_WIDTH = 3.5
DASH_PERIOD = 12.0  # metres: 4 m painted dash + 8 m gap
DASH_LENGTH = 4.0

# ground labels, indices into the palette
GRASS_A, GRASS_B, ROAD, ROAD_TRACK, LINE, CENTER_LINE, WALK_A, WALK_B, KERB, ROAD_PATCH = range(10)

STYLES = ("city", "highway", "country")


class RoadScene:
    """Renders consecutive (R, R, 3) uint8 RGB frames of one drive along a road.

    With ``parked=True`` the camera stands still at the roadside, looking along the road while
    cars drive past it (an exterior shot).
    """

    def __init__(self, rng, render_size, style, parked=False):
        self.size = render_size
        self.style = style
        self.focal = 0.65 * render_size
        self.horizon = float(round(render_size * rng.uniform(0.38, 0.48)))
        self.palette = _ground_palette(rng, style)
        self.sky_top, self.sky_low = sky_colors(rng)
        self.fog_color = self.sky_low * 0.85 + 20
        self.fog_distance = rng.uniform(120, 300)
        self.lanes = int(rng.choice([2, 2, 3, 4])) if style != "country" else 2
        self.two_way = self.lanes == 2
        self.center_dashed = rng.random() < 0.6
        self.patch_table = rng.random((97, 8)) < rng.uniform(0.03, 0.15)
        self.half_width = self.lanes * LANE_WIDTH / 2
        self.ego_lane = self.lanes - 1 if self.two_way else int(rng.integers(self.lanes))
        self.speed = rng.uniform(10, 16) if style == "city" else rng.uniform(22, 35)
        self.lateral = self.lane_center(self.ego_lane)
        self.parked = parked
        self.center_u = render_size / 2  # image column straight ahead of the camera
        if parked:  # stand beside the road, turned toward it
            side = rng.choice([-1, 1])
            self.ego_lane, self.speed = None, 0.0
            self.lateral = side * (self.half_width + rng.uniform(0.8, 2.0))
            self.center_u += side * self.focal * np.tan(rng.uniform(0.25, 0.45))
        self.travel = rng.uniform(0, 1000)
        self.heading = 0.0
        self.curve_phase = rng.uniform(0, 2 * np.pi, size=2)
        self.curve_amount = rng.uniform(0.0, 0.012) * (0.4 if style == "city" else 1.0)
        self.curvature = self._curvature_at(self.travel)
        self.panorama = sky_panorama(
            rng, render_size, int(self.horizon), self.sky_top, self.sky_low,
            skyline="city" if style == "city" else "hills",
            skyline_color=self.palette[GRASS_A] * 0.5 + self.sky_low * 0.35)
        self.objects = RoadsideObjects(rng, style, self.half_width, self.travel)
        self.traffic = Traffic(rng, self)
        self._row_geometry()

    def lane_center(self, lane):
        """Lateral position (m) of the middle of lane ``lane`` (0 is the leftmost)."""
        return -self.half_width + (lane + 0.5) * LANE_WIDTH

    def _row_geometry(self):
        """Distance of every ground row; fixed for the clip (camera shake is applied later)."""
        rows = np.arange(self.size) + 0.5
        self.ground_top = int(self.horizon)
        drop = rows[self.ground_top:] - self.horizon
        self.row_z = np.minimum(self.focal * CAMERA_HEIGHT / drop, 1000.0)
        self.columns = np.arange(self.size) + 0.5
        self.fog = (1 - np.exp(-self.row_z / self.fog_distance))[:, None, None]

    def _curvature_at(self, travel):
        """Road curvature (1/m) at ``travel``: a slow mix of two sine waves along the road."""
        return self.curve_amount * (np.sin(travel / 310 + self.curve_phase[0])
                                    + 0.6 * np.sin(travel / 130 + self.curve_phase[1]))

    def step(self):
        """Advance the car by one frame."""
        distance = self.speed * FRAME_TIME
        self.travel += distance
        self.curvature = self._curvature_at(self.travel)
        self.heading += self.curvature * distance
        if not self.parked:  # drifting a little within the lane
            self.lateral = self.lane_center(self.ego_lane) + 0.25 * np.sin(self.travel / 37)
        self.objects.advance(self.travel)
        self.traffic.advance()

    def render(self):
        """Return the current view as an (R, R, 3) uint8 RGB image."""
        image = np.empty((self.size, self.size, 3), np.uint8)
        self._draw_sky(image)
        self._draw_ground(image)
        sprites = self.objects.sprites(self) + self.traffic.sprites()
        for _, draw in sorted(sprites, key=lambda item: -item[0]):
            draw(image, self)
        return image

    def _draw_sky(self, image):
        """The panorama above the horizon, turned by the car's heading."""
        turn = self.heading * self.focal - (self.center_u - self.size / 2)
        offset = int(turn) % self.panorama.shape[1]
        columns = (np.arange(self.size) + offset) % self.panorama.shape[1]
        image[: self.ground_top] = self.panorama[:, columns]

    def _draw_ground(self, image):
        """Road and verge below the horizon, fading into the fog with distance."""
        z = self.row_z[:, None]
        curve = self.curvature
        center = self.center_u + self.focal * (curve * z / 2 - self.lateral / z)
        lateral = (self.columns[None, :] - center) * z / self.focal
        labels = self._ground_labels(lateral, z)
        colors = self.palette[labels]
        colors = colors * (1 - self.fog) + self.fog_color * self.fog
        image[self.ground_top:] = colors.astype(np.uint8)

    def _ground_labels(self, lateral, z):
        """Label every ground pixel from its lateral position and distance."""
        distance = z + self.travel
        stripe = ((distance / 7.0) % 1.0) < 0.5
        dash = ((distance / DASH_PERIOD) % 1.0) < DASH_LENGTH / DASH_PERIOD
        side = np.abs(lateral)
        labels = np.empty(lateral.shape, np.uint8)
        labels[:] = np.where(stripe, GRASS_A, GRASS_B)
        if self.style == "city":
            walk = side < self.half_width + 3.5
            labels[walk] = WALK_A
            labels[walk & ~stripe & (side > self.half_width + 1.0)] = WALK_B
            labels[side < self.half_width + 0.3] = KERB
        road = side < self.half_width
        labels[road] = ROAD
        labels[road & _patches(self.patch_table, distance, lateral)] = ROAD_PATCH
        in_lane = ((lateral + self.half_width) % LANE_WIDTH) - LANE_WIDTH / 2
        labels[road & (np.abs(np.abs(in_lane) - 0.85) < 0.2)] = ROAD_TRACK
        labels[np.abs(side - (self.half_width - 0.3)) < 0.1] = LINE
        for boundary in range(1, self.lanes):
            x = -self.half_width + boundary * LANE_WIDTH
            is_center = self.two_way and boundary == self.lanes // 2
            painted = np.abs(lateral - x) < 0.1
            solid = is_center and not self.center_dashed
            labels[painted if solid else painted & dash] = CENTER_LINE if is_center else LINE
        return labels

    def project(self, x, height, z):
        """Image position (u, v) of world points at lateral ``x``, ``height`` and distance ``z``.

        Works on floats or on numpy arrays (broadcast together).
        """
        u = self.center_u + self.focal * (self.curvature * z * z / 2 + x - self.lateral) / z
        v = self.horizon + self.focal * (CAMERA_HEIGHT - height) / z
        return u, v

    def fogged(self, color, z):
        """Blend a color toward the fog color with distance, as the ground is."""
        amount = 1.0 - math.exp(-z / self.fog_distance)
        return color + (self.fog_color - color) * amount


def _ground_palette(rng, style):
    """Colors of the ground labels (RGB float) for one clip."""
    grass = jittered(rng, [85, 105, 60] if style != "city" else [90, 95, 80], 15)
    road = np.full(3, rng.uniform(55, 110)) + rng.normal(0, 3, 3)
    walk = np.full(3, rng.uniform(120, 170))
    white = np.full(3, rng.uniform(205, 235))
    yellow = rng.random() < 0.5
    return np.array([
        grass, grass * 0.75, road, road * 0.93,
        white,
        jittered(rng, [220, 180, 60], 10) if yellow else white,
        walk, walk * 0.88, walk * 1.1 if walk[0] < 200 else walk * 0.8, road * 0.78,
    ]).clip(0, 255)


def _patches(table, distance, lateral):
    """Repaired asphalt: the cells of a 5 m x 1.75 m grid on the road that ``table`` marks."""
    along = (distance / 5.0).astype(np.int64) % table.shape[0]
    across = (lateral / 1.75).astype(np.int64) + table.shape[1] // 2
    np.clip(across, 0, table.shape[1] - 1, out=across)
    return table[along, across]
