"""The inside of a car, drawn over a road view for the in-car clips.

A camera held inside the car sees the road through the windshield, framed by the dark dashboard
at the bottom, the A-pillars at the sides, the roof lining at the top and the rear-view mirror;
from the driver's seat the steering wheel too. The interior is darker than the road outside, which
the camera exposes brighter, so the windshield is a bright window in a dark frame.
"""

import cv2
import numpy as np

from .drawing import fill_circle, fill_polygons, mix


class CabinOverlay:
    """A fixed interior picture and the mask of the pixels it covers (the rest is windshield)."""

    def __init__(self, rng, size):
        self.size = size
        shade = rng.uniform(30, 85)
        self.base = np.array([shade, shade * 0.97, shade * 0.95]) + rng.normal(0, 4, 3)
        canvas = np.zeros((size, size, 3), np.uint8)
        cover = np.zeros((size, size), np.uint8)
        driver_side = rng.random() < 0.6
        self._draw_roof(rng, canvas, cover)
        self._draw_pillars(rng, canvas, cover)
        self._draw_dashboard(rng, canvas, cover, driver_side)
        self._draw_mirror(rng, canvas, cover)
        if driver_side:
            self._draw_steering_wheel(rng, canvas, cover)
        self.image = canvas
        self.mask = cover.astype(bool)
        self.exposure = rng.uniform(1.05, 1.3)  # the road outside looks brighter than the cabin
        self.exposure_lut = np.clip(np.arange(256) * self.exposure + 10, 0, 255).astype(np.uint8)

    def apply(self, road_view):
        """Brighten the road view (exposed for the dark cabin) and draw the cabin over it."""
        out = cv2.LUT(road_view, self.exposure_lut)
        np.copyto(out, self.image, where=self.mask[:, :, None])
        return out

    def _paint(self, canvas, cover, polygon, color):
        fill_polygons(canvas, [polygon], color)
        fill_polygons(cover, [polygon], (1,))

    def _draw_roof(self, rng, canvas, cover):
        s = self.size
        depth = rng.uniform(0.04, 0.14) * s
        sag = rng.uniform(0.0, 0.05) * s
        xs = np.linspace(0, s, 9)
        edge = depth + sag * np.sin(np.pi * xs / s)
        polygon = [(0, 0), (s, 0)] + [(x, y) for x, y in zip(xs[::-1], edge[::-1])]
        self._paint(canvas, cover, polygon, self.base * 0.8)

    def _draw_pillars(self, rng, canvas, cover):
        s = self.size
        for side in (0, 1):
            top_x = rng.uniform(0.03, 0.15) * s
            bottom_x = rng.uniform(-0.06, 0.03) * s
            width = rng.uniform(0.05, 0.11) * s
            bottom_y = rng.uniform(0.55, 0.8) * s
            polygon = [(-5, -5), (top_x + width, -5), (bottom_x + width, bottom_y),
                       (-5, bottom_y + 10)]
            if side:
                polygon = [(s - x, y) for x, y in polygon]
            self._paint(canvas, cover, polygon, self.base * rng.uniform(0.6, 0.9))

    def _draw_dashboard(self, rng, canvas, cover, driver_side):
        s = self.size
        top = rng.uniform(0.68, 0.82) * s
        bulge = rng.uniform(0.02, 0.08) * s
        xs = np.linspace(0, s, 17)
        edge = top + bulge * ((2 * xs / s - 1) ** 2)
        polygon = [(x, y) for x, y in zip(xs, edge)] + [(s + 5, s + 5), (-5, s + 5)]
        self._paint(canvas, cover, polygon, self.base)
        fill_polygons(canvas, [_band(xs, edge, 0.025 * s)], mix(self.base, [200, 200, 200], 0.25))
        if driver_side:  # instrument cluster hood
            center = rng.uniform(0.2, 0.35) * s
            hood = [(center - 0.15 * s, top + 0.01 * s), (center - 0.11 * s, top - 0.05 * s),
                    (center + 0.11 * s, top - 0.05 * s), (center + 0.15 * s, top + 0.01 * s)]
            self._paint(canvas, cover, hood, self.base * 0.7)

    def _draw_mirror(self, rng, canvas, cover):
        s = self.size
        x = rng.uniform(0.4, 0.65) * s
        y = rng.uniform(0.1, 0.2) * s
        w, h = rng.uniform(0.14, 0.22) * s, rng.uniform(0.05, 0.08) * s
        self._paint(canvas, cover, [(x - 0.01 * s, 0), (x + 0.01 * s, 0), (x + 0.01 * s, y),
                                    (x - 0.01 * s, y)], self.base * 0.7)
        frame = [(x - w / 2, y), (x + w / 2, y), (x + w / 2, y + h), (x - w / 2, y + h)]
        self._paint(canvas, cover, frame, self.base * 0.6)
        glass = [(x - w / 2 + 2, y + 2), (x + w / 2 - 2, y + 2), (x + w / 2 - 2, y + h - 2),
                 (x - w / 2 + 2, y + h - 2)]
        fill_polygons(canvas, [glass], np.full(3, rng.uniform(90, 170)))

    def _draw_steering_wheel(self, rng, canvas, cover):
        s = self.size
        center = (rng.uniform(0.15, 0.35) * s, rng.uniform(0.95, 1.05) * s)
        outer = rng.uniform(0.28, 0.36) * s
        ring = np.zeros((s, s), np.uint8)
        fill_circle(ring, center, outer, (1,))
        fill_circle(ring, center, outer * 0.82, (0,))
        color = (self.base * 0.5).clip(0, 255).astype(np.uint8)
        canvas[ring.astype(bool)] = color
        cover |= ring
        hub = np.zeros((s, s), np.uint8)
        fill_circle(hub, (center[0], center[1] + 0.05 * s), outer * 0.3, (1,))
        canvas[hub.astype(bool)] = color
        cover |= hub


class HoodOverlay:
    """The bonnet of our car at the bottom of a dashcam view, with a sky reflection on its edge."""

    def __init__(self, rng, size):
        s = size
        paint = np.clip(rng.choice([30, 60, 120, 200]) + rng.normal(0, 10, 3), 0, 255)
        top = rng.uniform(0.86, 0.94) * s
        drop = rng.uniform(0.03, 0.08) * s
        xs = np.linspace(-5, s + 5, 17)
        edge = top + drop * ((2 * xs / s - 1) ** 2)
        outline = [(x, y) for x, y in zip(xs, edge)] + [(s + 5, s + 5), (-5, s + 5)]
        self.image = np.zeros((s, s, 3), np.uint8)
        cover = np.zeros((s, s), np.uint8)
        fill_polygons(self.image, [outline], paint)
        fill_polygons(cover, [outline], (1,))
        fill_polygons(self.image, [_band(xs, edge, 0.03 * s)], mix(paint, [235, 235, 235], 0.45))
        self.mask = cover.astype(bool)

    def apply(self, road_view):
        """Draw the bonnet over the road view (in place) and return it."""
        np.copyto(road_view, self.image, where=self.mask[:, :, None])
        return road_view


def _band(xs, edge, thickness):
    """A polygon following the curve (xs, edge) with the given thickness below it."""
    upper = list(zip(xs, edge))
    lower = [(x, y + thickness) for x, y in zip(xs[::-1], edge[::-1])]
    return upper + lower
