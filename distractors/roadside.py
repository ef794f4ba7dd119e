"""Buildings, trees, utility poles and street lights along the road of a ``RoadScene``.

Objects are spawned in streams (e.g. "trees on the right"), each with its own spacing, up to
``FAR`` metres ahead of the car, and dropped once the car has passed them. Each is drawn as a few
flat polygons projected by the scene's camera, so it grows and slides outward as the car nears.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from .drawing import SUBPIXEL, SUBPIXEL_BITS, fill_polygons
from .palette import jittered

FAR = 120.0  # metres ahead where objects appear
NEAR = 1.5  # metres; closer than this an object is behind the camera

# the streams of objects of each road style: (kind, side of the road)
STREAMS = {
    "city": [("building", -1), ("building", 1), ("light", 1), ("light", -1), ("tree", 1)],
    "highway": [("light", -1), ("tree", 1), ("tree", -1), ("pole", 1), ("building", 1)],
    "country": [("tree", 1), ("tree", -1), ("pole", 1), ("tree", 1)],
}


@dataclass
class RoadsideObject:
    """One object beside the road, in road coordinates."""

    kind: str  # "building", "tree", "pole" or "light"
    side: int  # -1 left of the road, +1 right
    lateral: float  # metres from the road's centre line (negative: left)
    start: float  # road distance of its near end (m)
    length: float  # extent along the road (m); 0 except for buildings
    height: float  # metres
    color: np.ndarray
    detail: float = 0.0  # crown radius of a tree, window height share of a building


class RoadsideObjects:
    """The objects along both sides of the road, spawned ahead and dropped behind the car."""

    def __init__(self, rng, style, half_width, travel):
        self.rng = rng
        self.style = style
        self.half_width = half_width
        self.items = []
        self.next_start = [travel + rng.uniform(0, 30) for _ in STREAMS[style]]
        self.advance(travel)

    def advance(self, travel):
        """Drop the objects the car has passed and spawn new ones up to FAR ahead."""
        self.items = [item for item in self.items if item.start + item.length - travel > NEAR]
        for stream, (kind, side) in enumerate(STREAMS[self.style]):
            while self.next_start[stream] < travel + FAR:
                item, gap = self._new_object(kind, side, self.next_start[stream])
                if item is not None:
                    self.items.append(item)
                self.next_start[stream] += gap

    def _new_object(self, kind, side, start):
        """A new object of ``kind`` (or None for an empty lot) and the distance to the next one."""
        rng, edge = self.rng, self.half_width
        if kind == "building":
            length = rng.uniform(8, 30)
            if rng.random() < 0.15:  # an empty lot between buildings
                return None, length
            in_city = self.style == "city"
            building = RoadsideObject(
                "building", side, side * (edge + rng.uniform(4, 7) + (0 if in_city else 10)),
                start, length, rng.uniform(6, 28) if in_city else rng.uniform(4, 9),
                jittered(rng, np.full(3, rng.uniform(60, 200)), 15), rng.uniform(0.25, 0.6))
            return building, length + rng.uniform(0, 3)
        if kind == "tree":
            spread = 12 if self.style == "country" else 5
            foliage = jittered(rng, np.array([50, 75, 40.0]) * rng.uniform(0.6, 1.3), 8)
            lateral = side * (edge + rng.uniform(2.5, spread))
            tree = RoadsideObject("tree", side, lateral, start, 0.0, rng.uniform(5, 11), foliage,
                                  rng.uniform(1.6, 3.2))
            return tree, rng.uniform(6, 30 if self.style == "city" else 25)
        if kind == "pole":
            pole = RoadsideObject("pole", side, side * (edge + rng.uniform(2, 4)), start, 0.0,
                                  rng.uniform(7, 9), np.full(3, 70.0))
            return pole, 40.0
        light = RoadsideObject("light", side, side * (edge + 1.0), start, 0.0, 8.5,
                               np.full(3, 110.0))
        return light, rng.uniform(25, 35)

    def sprites(self, scene):
        """(distance, draw function) of every object that is at least partly in view."""
        out = []
        for item in self.items:
            if in_view(scene, item):
                draw = DRAW[item.kind]
                out.append((max(item.start - scene.travel, NEAR),
                            lambda image, scene, item=item, draw=draw: draw(image, scene, item)))
        return out


def in_view(scene, item):
    """False for objects entirely left or right of the picture (they are not drawn).

    Also false for objects right in front of a camera standing at the roadside: a real camera
    would stand beside them, not in them.
    """
    z_near = max(item.start - scene.travel, NEAR)
    if z_near < 20 and abs(item.lateral - scene.lateral) < 2.0:
        return False
    u_near, _ = scene.project(item.lateral, 0, z_near)
    if item.kind == "building":
        z_far = max(item.start + item.length - scene.travel, NEAR)
        u_far, _ = scene.project(item.lateral, 0, z_far)
        return max(u_near, u_far) > 0 and min(u_near, u_far) < scene.size
    reach = scene.focal * 3.5 / z_near  # widest part: a tree crown or a lamp arm
    return -reach < u_near < scene.size + reach


def draw_building(image, scene, item):
    """The side facade along the road, the end face nearest the camera, and windows."""
    z_near = max(item.start - scene.travel, NEAR)
    z_far = item.start + item.length - scene.travel
    if z_far <= z_near:
        return
    x, top, depth = item.lateral, item.height, item.side * 10.0
    facade = [scene.project(x, 0, z_near), scene.project(x, top, z_near),
              scene.project(x, top, z_far), scene.project(x, 0, z_far)]
    end_face = [scene.project(x, 0, z_near), scene.project(x, top, z_near),
                scene.project(x + depth, top, z_near), scene.project(x + depth, 0, z_near)]
    fill_polygons(image, [end_face], scene.fogged(item.color * 0.75, z_near))
    fill_polygons(image, [facade], scene.fogged(item.color, (z_near + z_far) / 2))
    if z_near < 60:  # farther away windows are smaller than a pixel
        _draw_windows(image, scene, item)


def _draw_windows(image, scene, item):
    """A grid of windows on a building's facade, all drawn in one call."""
    floor = 3.2
    bottoms = np.arange(1.0, item.height - 1.0, floor)[:, None]
    along = np.arange(item.start + 1.0, item.start + item.length - 1.0, 3.0)
    near_ends = (along - scene.travel)[along - scene.travel > NEAR][None, :]
    if bottoms.size == 0 or near_ends.size == 0:
        return
    tops = bottoms + floor * item.detail + 0.8
    far_ends = near_ends + 1.6
    corners = [scene.project(item.lateral, bottoms, near_ends),
               scene.project(item.lateral, tops, near_ends),
               scene.project(item.lateral, tops, far_ends),
               scene.project(item.lateral, bottoms, far_ends)]
    polygons = np.stack([np.stack(np.broadcast_arrays(u, v), -1).reshape(-1, 2)
                         for u, v in corners], axis=1)
    fill_polygons(image, polygons, scene.fogged(item.color * 0.45, float(near_ends.mean())))


def draw_tree(image, scene, item):
    """A trunk and a round crown with a sunlit side."""
    z = item.start - scene.travel
    if z < NEAR:
        return
    radius = item.detail
    left, _ = scene.project(item.lateral - 0.17, 0, z)
    right, ground = scene.project(item.lateral + 0.17, 0, z)
    center = scene.project(item.lateral, item.height - radius, z)
    fill_polygons(image, [[(left, ground), (left, center[1]), (right, center[1]), (right, ground)]],
                  scene.fogged(np.array([60, 48, 40.0]), z))
    pixels = scene.focal * radius / z
    _fill_ellipse(image, center, (pixels, pixels * 1.15), scene.fogged(item.color, z))
    if pixels > 3:
        lit = (center[0] - 0.3 * pixels, center[1] - 0.3 * pixels)
        _fill_ellipse(image, lit, (pixels * 0.5, pixels * 0.55),
                      scene.fogged(item.color * 1.45 + 10, z))


def draw_pole(image, scene, item):
    """A utility pole with a cross arm."""
    z = item.start - scene.travel
    if z < NEAR:
        return
    _box(image, scene, item.lateral - 0.12, item.lateral + 0.12, 0, item.height, z, item.color)
    _box(image, scene, item.lateral - 1.2, item.lateral + 1.2, item.height - 0.8,
         item.height - 0.65, z, item.color)


def draw_light(image, scene, item):
    """A street light: a mast and an arm reaching over the road, ending in a lamp."""
    z = item.start - scene.travel
    if z < NEAR:
        return
    x, top = item.lateral, item.height
    tip = x - item.side * 2.2
    _box(image, scene, x - 0.09, x + 0.09, 0, top, z, item.color)
    _box(image, scene, min(x, tip), max(x, tip), top, top + 0.14, z, item.color)
    _box(image, scene, tip - 0.35, tip + 0.35, top - 0.2, top, z, np.array([230, 230, 215.0]))


DRAW = {"building": draw_building, "tree": draw_tree, "pole": draw_pole, "light": draw_light}


def _box(image, scene, left, right, bottom, top, z, color):
    """A flat rectangle facing the camera at distance ``z`` (lateral and height extents in m)."""
    corners = [scene.project(left, bottom, z), scene.project(left, top, z),
               scene.project(right, top, z), scene.project(right, bottom, z)]
    fill_polygons(image, [corners], scene.fogged(color, z))


def _fill_ellipse(image, center, axes, color):
    """A filled ellipse at float pixel positions (skipped when tiny or absurdly large)."""
    if max(axes) < 0.3 or max(axes) > 4 * image.shape[0]:
        return
    cv2.ellipse(image, (int(center[0] * SUBPIXEL), int(center[1] * SUBPIXEL)),
                (max(int(axes[0] * SUBPIXEL), 1), max(int(axes[1] * SUBPIXEL), 1)), 0, 0, 360,
                np.asarray(color, np.float64).tolist(), -1, cv2.LINE_8, SUBPIXEL_BITS)
