"""Put a background frame behind a rendered agent.

Two rules, both on (H, W, 3) uint8 images:

* ``composite_segmentation``: exact. The renderer says which pixels are background (sky, floor);
  exactly those are replaced, every agent pixel keeps the render's value.
* ``composite_color``: the published DBC / TIA / SeMOPO rule. A pixel is background when its blue
  channel is strictly larger than both green and red (the DMC skybox and floor are blueish). The
  comparison is done on the uint8 values directly, so nothing can overflow.

Both run once per agent step: one ``np.where`` over the (H, W, 3) uint8 images, no float
conversion, only the output image is allocated (tens of microseconds for 64x64; measured faster
than an in-place ``np.copyto(..., where=)`` or a boolean-index copy).
"""

import numpy as np


def composite_segmentation(render, background_mask, background):
    """Return a new image: ``render`` with the pixels where ``background_mask`` is True taken from
    ``background``.

    ``render`` and ``background`` are (H, W, 3) uint8, ``background_mask`` is (H, W) bool with True
    marking background pixels. The inputs are not modified.
    """
    _check_images(render, background)
    if background_mask.shape != render.shape[:2] or background_mask.dtype != np.bool_:
        raise ValueError(
            f"background_mask must be a bool array of shape {render.shape[:2]}, got "
            f"{background_mask.dtype} {background_mask.shape}; build it from the renderer's "
            "segmentation, e.g. (geom_ids < 0) | (geom_ids == floor_id)")
    return np.where(background_mask[:, :, None], background, render)


def color_background_mask(render):
    """Return the (H, W) bool mask of the published rule: blue > green and blue > red."""
    blue = render[:, :, 2]
    return (blue > render[:, :, 1]) & (blue > render[:, :, 0])


def composite_color(render, background):
    """Replace the pixels of ``render`` whose blue value exceeds green and red by ``background``.

    This is the compositing of the published LQV-D4RL recipe (DBC -> TIA -> SeMOPO). ``render`` and
    ``background`` are (H, W, 3) uint8 RGB images; the result is a new image.
    """
    _check_images(render, background)
    return composite_segmentation(render, color_background_mask(render), background)


def _check_images(render, background):
    """Raise a ValueError unless both images are (H, W, 3) uint8 of the same shape."""
    for name, image in (("render", render), ("background", background)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB image, got "
                             f"{image.dtype} {image.shape}")
    if render.shape != background.shape:
        raise ValueError(f"render {render.shape} and background {background.shape} differ in size; "
                         "build the video pool with size= equal to the render size")
