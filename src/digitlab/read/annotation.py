"""Showing what was read: the image with each digit's box and reading drawn on it, as an array,
as encoded bytes (PNG, JPEG, WebP, BMP or TIFF: `digitlab read --annotate OUT`), or written to a file."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..files import atomic_write, output_file
from ..preprocess import MAX_PIXELS, load_colour, load_image
from .results import UNSURE, Digit, Reading, scaled_box

SURE_COLOUR = (0, 190, 0)  # RGB green
UNSURE_COLOUR = (255, 140, 0)  # RGB orange
# An annotation's format is its file's extension: cv2's encoder for it, and its settings (JPEG and
# WebP at quality 95: the boxes' edges stay clean). GIF is left out: 256 colours spoil a photo.
FORMATS = {
    ".png": (".png", []),
    ".jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    ".jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    ".webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 95]),
    ".bmp": (".bmp", []),
    ".tif": (".tiff", []),
    ".tiff": (".tiff", []),
}
# A small image (a 16x16 scan, a 28x28 digit) is enlarged before it is drawn on, by a whole factor
# with each pixel a square (what was read stays visible as it was), until its shorter side is at
# least READABLE_SIDE pixels -- with its longer side at most MAX_ENLARGED_SIDE, for long strips.
READABLE_SIDE = 256
MAX_ENLARGED_SIDE = 2000


def annotate(
    image,
    reading: Reading,
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
    confidence: bool = False,
) -> np.ndarray:
    """The image (H, W, 3) uint8 RGB with each digit's box and reading drawn on it: green when
    sure; orange for '?', with the model's best guess after it ('?7') where there is one. With
    `confidence`, each box also gets the model's probability under it, smaller ('98%'; for '?7'
    the guess's). `image` is what was given to `read`: drawn on in colour where it has ordinary
    colours (an RGB uint8 array, a colour file), else on its grey version (transparent, 16-bit,
    float images). Sizes: an image whose shorter side is under READABLE_SIDE pixels is enlarged
    first (a whole factor, pixels as squares) with a white margin above (and, with `confidence`,
    below) for the labels, which such a tight crop has no room for; max_side: a larger image is
    shrunk first, so that its longer side is this many pixels (the service's: a 6300x6300 photo's
    annotation was 33-99 MB). Otherwise the image keeps its size, labels going above each box,
    else below, else inside it."""
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
    scale = drawing_scale(reading.width, reading.height, max_side)
    if scale != 1:
        size = (max(1, round(reading.width * scale)), max(1, round(reading.height * scale)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    elif canvas is colour:
        canvas = colour.copy()  # drawn on: not the caller's array
    thickness = max(1, round(max(canvas.shape[:2]) / 500))
    largest_font = max(0.4, min(canvas.shape[:2]) / 200)  # labels at most ~1/9 of the shorter side high
    top = 0
    if scale > 1:  # enlarged: margins for the labels (the largest a box of this image can get)
        label_h = _text_height("0", largest_font, thickness)
        top, bottom = label_h + 4 * thickness + 4, (round(0.6 * label_h) + 4 * thickness + 4) if confidence else 0
        canvas = cv2.copyMakeBorder(canvas, top, bottom, 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    for line in reading.lines:
        for d in line.digits:
            x, y, w, h = scaled_box(d.box, scale)
            font_scale = max(0.4, min(h / 60, largest_font))
            _draw(canvas, d, (x, y + top, w, h), font_scale, thickness, confidence)
    return canvas


def drawing_scale(width: int, height: int, max_side: int | None = None) -> float:
    """How much `annotate` enlarges (> 1) or shrinks (< 1) a width x height image before drawing."""
    if max_side is not None and max(width, height) > max_side:
        return max_side / max(width, height)
    if min(width, height) >= READABLE_SIDE:
        return 1.0
    longest = min(MAX_ENLARGED_SIDE, max_side or MAX_ENLARGED_SIDE)
    return float(max(1, min(math.ceil(READABLE_SIDE / min(width, height)), longest // max(width, height))))


FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_height(text: str, font_scale: float, thickness: int) -> int:
    (_, height), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    return height + baseline


def _draw(canvas: np.ndarray, d: Digit, box, font_scale: float, thickness: int, confidence: bool) -> None:
    """One digit's box; its label above the box, else below it, else inside its top left corner
    on a band of the box's colour; with `confidence`, the probability under the box (smaller,
    centred), else inside its bottom left corner."""
    x, y, w, h = box
    colour = UNSURE_COLOUR if d.text == UNSURE else SURE_COLOUR
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
    guess = d.text == UNSURE and d.candidates
    label = f"?{d.candidates[0][0]}" if guess else d.text
    (label_w, label_h), base = cv2.getTextSize(label, FONT, font_scale, thickness)
    below_free = True
    if y - 3 - label_h - base >= 0:
        _text(canvas, label, (x, y - 3 - base), font_scale, thickness, colour)
    elif y + h + 3 + label_h + base <= canvas.shape[0]:
        _text(canvas, label, (x, y + h + 3 + label_h), font_scale, thickness, colour)
        below_free = False
    else:
        _text(canvas, label, (x + thickness, y + thickness + label_h), font_scale, thickness, colour, band=True)
    if not confidence or not (d.candidates or d.confidence):  # a mark read as punctuation has no probability
        return
    probability = d.candidates[0][1] if guess else d.confidence
    text, small = f"{probability * 100:.0f}%", max(0.35, 0.6 * font_scale)
    (text_w, text_h), base = cv2.getTextSize(text, FONT, small, thickness)
    if below_free and y + h + 3 + text_h + base <= canvas.shape[0]:
        _text(canvas, text, (x + (w - text_w) // 2, y + h + 3 + text_h), small, thickness, colour)
    else:
        _text(canvas, text, (x + thickness, y + h - thickness - base), small, thickness, colour, band=True)


def _text(canvas, text: str, origin, font_scale: float, thickness: int, colour, band: bool = False) -> None:
    """`text` with its baseline at `origin`: in `colour`, or (band) white on a band of `colour`."""
    if band:
        (w, h), base = cv2.getTextSize(text, FONT, font_scale, thickness)
        x, y = origin
        cv2.rectangle(canvas, (x - 1, y - h - 2), (x + w + 1, y + base), colour, cv2.FILLED)
        colour = (255, 255, 255)
    cv2.putText(canvas, text, origin, FONT, font_scale, colour, thickness, cv2.LINE_AA)


def annotation_bytes(image, reading: Reading, suffix: str = ".png", *, confidence: bool = False) -> bytes:
    """`annotate(image, reading)` encoded in the format of the file extension `suffix` (FORMATS)."""
    if suffix.lower() not in FORMATS:
        raise ConfigError(f"an annotation is written as {', '.join(FORMATS)}, not {suffix!r}")
    extension, parameters = FORMATS[suffix.lower()]
    bgr = cv2.cvtColor(annotate(image, reading, confidence=confidence), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(extension, bgr, parameters)
    if not ok:
        raise ConfigError(f"could not encode the annotation of {reading.width}x{reading.height} as {extension}")
    return data.tobytes()


def annotation_png(image, reading: Reading) -> bytes:
    """`annotate(image, reading)` encoded as PNG."""
    return annotation_bytes(image, reading, ".png")


def annotation_path(path: str | Path) -> Path:
    """`path` checked as an annotation to write (files.output_file): an existing folder, and an
    extension of FORMATS, which is the format it is written in. WriteError otherwise."""
    return output_file(path, tuple(FORMATS), "an annotation")


def save_annotation(path: str | Path, image, reading: Reading, *, confidence: bool = False) -> Path:
    """Write `annotate(image, reading)` atomically (temporary file, then rename), in the format its
    extension names: .png, .jpg/.jpeg, .webp, .bmp or .tif/.tiff (else WriteError, nothing written)."""
    path = annotation_path(path)
    data = annotation_bytes(image, reading, path.suffix, confidence=confidence)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
