"""Random colors shared by the procedural scenes (RGB floats in 0..255)."""

import numpy as np

CAR_COLORS = {
    "white": (225, 225, 225), "black": (30, 30, 35), "silver": (160, 165, 170),
    "red": (170, 30, 30), "blue": (40, 60, 140), "dark gray": (70, 75, 80),
}


def sky_colors(rng):
    """Top and horizon colors of a clear, hazy, overcast or dusk sky."""
    kind = rng.choice(["clear", "hazy", "overcast", "dusk"], p=[0.35, 0.25, 0.25, 0.15])
    if kind == "clear":
        return np.array([70, 120, 200.0]) + rng.normal(0, 10, 3), np.array([175, 200, 230.0])
    if kind == "hazy":
        return np.array([150, 175, 205.0]) + rng.normal(0, 8, 3), np.array([215, 220, 225.0])
    if kind == "overcast":
        gray = rng.uniform(170, 225)
        return np.full(3, gray - 25), np.full(3, gray)
    return np.array([60, 70, 120.0]), np.array([235, 160, 90.0]) + rng.normal(0, 10, 3)


def car_color(rng):
    """The paint of a car, drawn from the common colors."""
    return np.array(CAR_COLORS[rng.choice(list(CAR_COLORS))], float)


def jittered(rng, base, spread):
    """``base`` color with independent normal noise of ``spread`` on each channel."""
    return np.clip(np.asarray(base, float) + rng.normal(0, spread, 3), 0, 255)
