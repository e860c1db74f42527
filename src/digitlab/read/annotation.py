"""Showing what was read: the image with each digit's box and reading drawn on it, as an array,
as PNG bytes (`digitlab read --annotate`), or written to a file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..files import atomic_write
from ..preprocess import MAX_PIXELS, load_colour, load_image
from .results import UNSURE, Reading, scaled_box

SURE_COLOUR = (0, 190, 0)  # RGB green
UNSURE_COLOUR = (255, 140, 0)  # RGB orange


def annotate(image, reading: Reading, *, max_pixels: int = MAX_PIXELS, max_side: int | None = None) -> np.ndarray:
    """The image (H, W, 3) uint8 RGB with each digit's box and reading drawn on it: green when
    sure; orange for '?', with the model's best guess after it ('?7') where there is one.
    `image` is what was given to `read`: drawn on in colour where it has ordinary colours (an RGB
    uint8 array, a colour file), else on its grey version (transparent, 16-bit, float images).
    max_side: a larger image is shrunk first, so that its longer side is this many pixels, and
    drawn on at that size (the service's: a 6300x6300 photo's annotation was 33-99 MB)."""
    colour = load_colour(image, max_pixels=max_pixels)
    if colour is not None:
        canvas = colour
    else:
        grey = np.clip(load_image(image, max_pixels=max_pixels) * 255, 0, 255).astype(np.uint8)
        canvas = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if canvas.shape[:2] != (reading.height, reading.width):
        raise ConfigError(
            f"the image is {canvas.shape[1]}x{canvas.shape[0]}, the reading is of a "
            f"{reading.width}x{reading.height} image"
        )
    scale = 1.0
    if max_side is not None and max(reading.width, reading.height) > max_side:
        scale = max_side / max(reading.width, reading.height)
        size = (max(1, round(reading.width * scale)), max(1, round(reading.height * scale)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
    elif canvas is colour:
        canvas = colour.copy()  # drawn on: not the caller's array
    thickness = max(1, round(max(canvas.shape[:2]) / 500))
    for line in reading.lines:
        for d in line.digits:
            x, y, w, h = scaled_box(d.box, scale)
            colour = UNSURE_COLOUR if d.text == UNSURE else SURE_COLOUR
            cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
            label = d.text if d.text != UNSURE or not d.candidates else f"?{d.candidates[0][0]}"
            font_scale = max(0.4, h / 60)
            (_, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            baseline_y = y - 3 if y - 3 - text_h >= 0 else y + h + text_h + 3
            cv2.putText(
                canvas, label, (x, baseline_y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, thickness, cv2.LINE_AA
            )
    return canvas


def annotation_png(image, reading: Reading) -> bytes:
    """`annotate(image, reading)` encoded as PNG."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(annotate(image, reading), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ConfigError(f"could not encode the annotation of {reading.width}x{reading.height} as PNG")
    return png.tobytes()


def save_annotation(path: str | Path, image, reading: Reading) -> Path:
    """Write `annotate(image, reading)` as a PNG, atomically (temporary file, then rename)."""
    data = annotation_png(image, reading)
    return atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
