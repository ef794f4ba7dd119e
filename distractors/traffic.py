"""Other cars on the road of a ``RoadScene``: some ahead of us, oncoming ones on two-way roads.

A car is a lane and a distance ahead of our camera that changes with its speed relative to ours.
Cars keep their distance from the car ahead in their lane, and a car in our own lane never gets
closer than a few metres (we brake). When the camera is parked at the roadside, cars overtake it
from behind and oncoming ones drive past it. Each is drawn from behind (or from the front when
oncoming): shadow, body, cabin, rear window, lights.
"""

from dataclasses import dataclass

import numpy as np

from .drawing import FRAME_TIME, fill_polygons
from .palette import car_color
from .roadside import FAR, NEAR

SAFE_GAP = 10.0  # metres kept to the car ahead
HALF_WIDTH = 0.9  # of a car, metres


@dataclass
class Car:
    """One car on the road."""

    lane: int
    distance: float  # metres ahead of the camera
    relative_speed: float  # m/s relative to ours; negative: coming closer
    color: np.ndarray
    oncoming: bool


class Traffic:
    """The other cars around our car."""

    def __init__(self, rng, scene):
        self.rng = rng
        self.scene = scene
        self.cars = []
        for _ in range(int(rng.integers(1, 4))):
            self._spawn(rng.uniform(10, FAR))

    def _spawn(self, distance):
        """A new car at ``distance``, unless another car is already near that spot in its lane."""
        scene, rng = self.scene, self.rng
        oncoming = scene.two_way and rng.random() < 0.5
        if oncoming:
            lane, relative = 0, -(scene.speed + rng.uniform(8, 20))
        else:
            first = scene.lanes // 2 if scene.two_way else 0
            lane, relative = int(rng.integers(first, scene.lanes)), rng.uniform(-4, 3)
            if scene.parked:  # it comes from behind the camera and drives away
                distance, relative = NEAR + 1.5, rng.uniform(8, 20)
        if all(abs(car.distance - distance) > SAFE_GAP for car in self.cars if car.lane == lane):
            self.cars.append(Car(lane, distance, relative, car_color(rng), oncoming))

    def advance(self):
        """Move every car by one frame, drop those that left the view, spawn new ones."""
        self._keep_distance()
        for car in self.cars:
            car.distance += car.relative_speed * FRAME_TIME
        self.cars = [car for car in self.cars if NEAR + 1 <= car.distance < FAR + 20]
        if len(self.cars) < 3 and self.rng.random() < (0.08 if self.scene.parked else 0.02):
            self._spawn(FAR)
        if not self.cars:
            self._spawn(self.rng.uniform(30, FAR))

    def _keep_distance(self):
        """Followers take the speed of the car ahead; nobody runs into our car from the front."""
        for lane in range(self.scene.lanes):
            queue = sorted((car for car in self.cars if car.lane == lane), key=lambda c: c.distance)
            for near, far in zip(queue, queue[1:]):
                if far.distance - near.distance < SAFE_GAP and not near.oncoming:
                    near.relative_speed = min(near.relative_speed, far.relative_speed)
                elif far.distance - near.distance < SAFE_GAP:
                    far.relative_speed = max(far.relative_speed, near.relative_speed)
            if lane == self.scene.ego_lane and queue and queue[0].distance < SAFE_GAP:
                queue[0].relative_speed = max(queue[0].relative_speed, 1.0)

    def sprites(self):
        """(distance, draw function) of every car."""
        return [(car.distance, lambda image, scene, car=car: draw_car_back(image, scene, car))
                for car in self.cars]


def draw_car_back(image, scene, car):
    """A car seen from behind (or from the front when oncoming): shadow, body, glass, lights."""
    z = car.distance
    x = scene.lane_center(car.lane)
    half = HALF_WIDTH

    def box(left, right, bottom, top):
        return [scene.project(x + left, bottom, z), scene.project(x + left, top, z),
                scene.project(x + right, top, z), scene.project(x + right, bottom, z)]

    def trapezoid(bottom_inset, top_inset, bottom, top):
        return [scene.project(x - half + bottom_inset, bottom, z),
                scene.project(x - half + top_inset, top, z),
                scene.project(x + half - top_inset, top, z),
                scene.project(x + half - bottom_inset, bottom, z)]

    fill_polygons(image, [box(-half - 0.1, half + 0.1, -0.05, 0.25)],
                  scene.fogged(np.array([20, 20, 20.0]), z))
    fill_polygons(image, [box(-half, half, 0.2, 0.95)], scene.fogged(car.color, z))
    fill_polygons(image, [trapezoid(0.05, 0.25, 0.95, 1.45)], scene.fogged(car.color * 0.9, z))
    fill_polygons(image, [trapezoid(0.2, 0.32, 1.0, 1.38)],
                  scene.fogged(np.array([35, 40, 50.0]), z))
    light = np.array([250, 245, 220.0]) if car.oncoming else np.array([200, 20, 20.0])
    fill_polygons(image, [box(-half + 0.05, -half + 0.4, 0.6, 0.78),
                          box(half - 0.4, half - 0.05, 0.6, 0.78)], scene.fogged(light, z))
