"""A street seen from the kerb: the exterior clips, where cars drive past the camera.

The camera looks across a street: buildings and trees on the far side, a sidewalk, the road with
a dashed centre line, the near kerb. The static street is drawn once into a wide strip; each frame
shows a window of it (moving when the camera pans to follow a car) with side views of passing cars
drawn on top. Near-lane cars drive right, far-lane cars left; far cars are drawn smaller.
"""

from dataclasses import dataclass

import numpy as np

from .drawing import FRAME_TIME, fill_circle, fill_polygons, mix, vertical_gradient
from .palette import car_color, sky_colors

FAR_LANE, NEAR_LANE = 0, 1
SAFE_GAP = 2.5  # metres between a car and the one ahead in its lane


@dataclass
class StreetCar:
    """A car on the street, in metres of street coordinates (x grows to the right)."""

    x: float  # left end of the car
    lane: int  # FAR_LANE or NEAR_LANE
    velocity: float  # m/s, positive: driving right
    color: np.ndarray
    length: float


def rectangle(left, top, right, bottom):
    """The four corners of an axis-aligned rectangle, for ``fill_polygons``."""
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


class StreetScene:
    """Renders consecutive (R, R, 3) uint8 RGB frames of cars passing along a street."""

    def __init__(self, rng, render_size, max_frames):
        self.rng = rng
        self.size = s = render_size
        self.scale = s / rng.uniform(7, 11)  # pixels per metre on the near lane
        self.road_top = rng.uniform(0.55, 0.68) * s
        self.road_bottom = min(self.road_top + 6.3 * self.scale, 0.95 * s)
        self.lane_y = {FAR_LANE: self.road_top + 0.35 * (self.road_bottom - self.road_top),
                       NEAR_LANE: self.road_top + 0.85 * (self.road_bottom - self.road_top)}
        self.pan_speed = rng.uniform(2, 4) if rng.random() < 0.5 else 0.0  # m/s, follows a car
        self.offset = 0.0  # metres the camera has panned
        pan_pixels = int(self.pan_speed * max_frames * FRAME_TIME * self.scale)
        self.strip = self._draw_strip(pan_pixels + 3 * s)
        self.cars = []
        if self.pan_speed:
            self._add_car(NEAR_LANE, self.size / 2 / self.scale - 2.0, self.pan_speed)
        for _ in range(int(rng.integers(1, 3))):
            self._spawn()

    @property
    def view_width(self):
        """Width of the picture in metres of the near lane."""
        return self.size / self.scale

    def _draw_strip(self, width):
        """Sky, far-side buildings and trees, sidewalks and road, as one wide uint8 image."""
        rng, s = self.rng, self.size
        strip = vertical_gradient(s, width, *sky_colors(rng)).astype(np.uint8)
        sidewalk_top = self.road_top - 0.06 * s
        x = -rng.uniform(0, 40)
        while x < width:
            x += self._draw_building(strip, x, sidewalk_top)
        for tree_x in np.arange(rng.uniform(0, 60), width, rng.uniform(40, 90)):
            self._draw_tree(strip, tree_x, sidewalk_top)
        walk = np.full(3, rng.uniform(110, 170))
        strip[int(sidewalk_top):int(self.road_top)] = walk.astype(np.uint8)
        strip[int(self.road_top):int(self.road_bottom) + 1] = np.uint8(rng.uniform(50, 100))
        strip[int(self.road_bottom) + 1:] = (walk * 1.05).clip(0, 255).astype(np.uint8)
        middle = (self.road_top + self.road_bottom) / 2
        dash = 3.0 * self.scale
        dashes = [rectangle(x, middle - 1, x + dash, middle + 1)
                  for x in np.arange(0, width, 3 * dash)]
        fill_polygons(strip, dashes, (225, 225, 215))
        return strip

    def _draw_building(self, strip, x, base):
        """A facade with a grid of windows and a door; returns the width used."""
        rng, s = self.rng, self.size
        width = rng.uniform(0.3, 0.9) * s
        height = rng.uniform(0.3, 0.65) * s
        color = np.clip(rng.uniform(90, 230) + rng.normal(0, 15, 3), 0, 255)
        fill_polygons(strip, [rectangle(x, base - height, x + width, base)], color)
        cell = rng.uniform(0.08, 0.13) * s
        windows = [rectangle(wx, wy, wx + cell * 0.55, wy + cell * 0.6)
                   for wy in np.arange(base - height + cell * 0.4, base - cell, cell)
                   for wx in np.arange(x + cell * 0.3, x + width - cell * 0.6, cell)]
        if windows:
            fill_polygons(strip, windows, color * rng.uniform(0.35, 0.6))
        door = rectangle(x + width * 0.4, base - 0.12 * s, x + width * 0.55, base)
        fill_polygons(strip, [door], color * 0.3)
        return width + rng.uniform(0, 0.08) * s

    def _draw_tree(self, strip, x, base):
        """A trunk and a round crown standing on the far sidewalk."""
        s = self.size
        fill_polygons(strip, [rectangle(x - 0.012 * s, base - 0.25 * s, x + 0.012 * s, base)],
                      (60, 48, 40))
        fill_circle(strip, (x, base - 0.3 * s), self.rng.uniform(0.08, 0.14) * s,
                    np.array([50, 80, 45.0]) * self.rng.uniform(0.7, 1.3))

    def _add_car(self, lane, x, velocity):
        self.cars.append(StreetCar(x, lane, velocity, car_color(self.rng),
                                   self.rng.uniform(4.0, 4.8)))

    def _spawn(self):
        """A new car entering the view from the side it drives in from, if there is room."""
        lane = int(self.rng.integers(2))
        speed = self.rng.uniform(7, 16)
        margin = self.rng.uniform(0, 10)
        if lane == NEAR_LANE:
            x, velocity = self.offset - 6 - margin, speed
        else:
            x, velocity = self.offset + self.view_width + 2 + margin, -speed
        if all(abs(car.x - x) > 8 for car in self.cars if car.lane == lane):
            self._add_car(lane, x, velocity)

    def step(self):
        """Advance cars and the panning camera by one frame."""
        self.offset += self.pan_speed * FRAME_TIME
        self._keep_distance()
        for car in self.cars:
            car.x += car.velocity * FRAME_TIME
        left, right = self.offset - 15, self.offset + self.view_width + 15
        self.cars = [car for car in self.cars if left < car.x < right]
        if len(self.cars) < 4 and self.rng.random() < 0.06:
            self._spawn()

    def _keep_distance(self):
        """A car that catches up with the one ahead in its lane slows to its speed."""
        for lane, direction in ((FAR_LANE, -1.0), (NEAR_LANE, 1.0)):
            queue = sorted((car for car in self.cars if car.lane == lane),
                           key=lambda car: -car.x * direction)  # the leader first
            for leader, follower in zip(queue, queue[1:]):
                if direction > 0:
                    gap = leader.x - (follower.x + follower.length)
                else:
                    gap = follower.x - (leader.x + leader.length)
                if gap < SAFE_GAP and abs(follower.velocity) > abs(leader.velocity):
                    follower.velocity = leader.velocity

    def render(self):
        """Return the current view as an (R, R, 3) uint8 RGB image."""
        start = int(self.offset * self.scale)
        image = self.strip[:, start:start + self.size].copy()
        for car in sorted(self.cars, key=lambda car: car.lane):  # far lane first
            self._draw_car(image, car)
        return image

    def _draw_car(self, image, car):
        """Side view of a car: shadow, body, cabin with two windows, lights, wheels."""
        scale = self.scale * (0.8 if car.lane == FAR_LANE else 1.0)
        ground = self.lane_y[car.lane]
        left = (car.x - self.offset) * self.scale + (self.size * 0.1 if car.lane == FAR_LANE else 0)
        length = car.length
        forward = car.velocity > 0

        def point(along, up):  # metres from the rear end and above the road -> pixels
            return (left + (along if forward else length - along) * scale, ground - up * scale)

        def outline(*corners):
            return [point(along * length, up) for along, up in corners]

        fill_polygons(image, [outline((0.02, 0.05), (0.98, 0.05), (1, -0.05), (0, -0.05))],
                      (25, 25, 25))
        fill_polygons(image, [outline((0, 0.3), (0.01, 0.8), (0.25, 0.95), (0.8, 0.95),
                                      (1, 0.75), (1, 0.3))], car.color)
        fill_polygons(image, [outline((0.25, 0.95), (0.38, 1.42), (0.72, 1.42), (0.82, 0.95))],
                      car.color * 0.92)
        fill_polygons(image, [outline((0.3, 1.0), (0.4, 1.35), (0.53, 1.35), (0.53, 1.0)),
                              outline((0.56, 1.0), (0.56, 1.35), (0.7, 1.35), (0.77, 1.0))],
                      (40, 45, 55))
        fill_polygons(image, [outline((0.97, 0.6), (1, 0.6), (1, 0.75), (0.97, 0.75))],
                      (245, 240, 210))
        fill_polygons(image, [outline((0, 0.6), (0.03, 0.6), (0.03, 0.75), (0, 0.75))],
                      (190, 30, 30))
        for wheel in (0.8, length - 0.85):
            center = point(wheel, 0.33)
            fill_circle(image, center, 0.33 * scale, (20, 20, 20))
            fill_circle(image, center, 0.16 * scale, mix((20, 20, 20), (190, 190, 190), 0.8))
