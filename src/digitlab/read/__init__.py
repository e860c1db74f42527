"""Read the digit strings in a page or photo: lines of digits with boxes and confidences.

    model = digitlab.load_model(run_dir)
    reading = read("page.jpg", model)
    reading.text                    # '4071\\n93', one line of writing per text line
    reading.lines[0].digits[0]      # Digit(text='4', box=(31, 40, 22, 35), confidence=0.97, ...)
    save_annotation("seen.png", "page.jpg", reading)

The pipeline, one module per step, in order (`read` below ties them together; segment.py does
steps 1-4, which need no model):

1. Ink (ink.py). `preprocess.ink_map` turns the grey image ink-bright (it decides the polarity
   and flattens the lighting). An adaptive threshold (cv2.adaptiveThreshold, block a quarter of
   the shorter side and at least 10 stroke widths, offset from the measured noise and ink
   contrast; Otsu as the fallback when it finds nothing or floods the image) marks ink under
   uneven light and shadows; a twice as sensitive mask joins in by hysteresis, so faint
   strokes stay whole.
2. Clean-up (ruled_lines.py, then blobs.py's tests in segment.py). Ruled lines -- straight runs
   2.5 times longer than the writing is high and thin for their length, found by opening with
   long kernels -- are removed along their whole axis, except where strokes cross or lie on
   them; paper edges and clutter (large components along the image's edge, long thin lines,
   solid blobs larger than digits) and specks go. A tight crop of a line (a cheque's amount
   box), whose digits the edge cuts, keeps them.
3. Digits (blobs.py). Connected components; the pieces of one digit are merged: stacked close
   together, one inside the other's box, a small piece beside a larger one, a 5's detached bar,
   a tick off a digit's upper part.
4. Lines (lines.py). Digit-sized components are chained left to right by vertical overlap, so a
   line may drift up or down; a column of digits gives one line per digit, top to bottom; digits
   on one straight line tilted 10-60 degrees (diagonal writing) become one line read along it.
5. Reading (classify.py). A component wider than high is also cut at minima of its column ink
   projection into 2 (or 3) parts; every candidate is cropped from the ink map with a margin,
   made MNIST-style by `preprocess.center_digit` and classified in one batch per image; the cut
   (or no cut) with the best product of the parts' probabilities, times priors against parts
   wider than a digit or much shorter than each other, wins. Marks too small or flat for a
   digit read as '.', ',' or '-' by their size and place in the line, else as '?'; digits
   whose top probability is below `unsure_below` read as '?'.

Beside them: results.py (Digit, Line, Reading and its JSON), limits.py (MAX_MARKS, MAX_PIECES,
the time limit and cancellation: ReadingStopped), annotation.py (the boxes and readings drawn).

How well it reads (USPS digits, cheque amounts, photos, generated pages), beside Tesseract:
`digitlab bench read`, whose table is in BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ..errors import ConfigError
from ..preprocess import MAX_PIXELS, load_image
from .annotation import SURE_COLOUR, UNSURE_COLOUR, annotate, annotation_png, save_annotation
from .classify import read_segments
from .combine import choose
from .ink import ink_image, on_paper
from .limits import MAX_MARKS, MAX_PIECES, ReadingStopped, WorkLimits
from .results import PUNCTUATION, UNSURE, UNSURE_BELOW, Box, Digit, Line, Reading, shifted, union
from .segment import Segment, segment_digits, segment_ink
from .sequence import line_crops, read_crops, sequence_lines

__all__ = [
    "MAX_MARKS",
    "MAX_PIECES",
    "MAX_SIDE",
    "METHODS",
    "PUNCTUATION",
    "SURE_COLOUR",
    "UNSURE",
    "UNSURE_BELOW",
    "UNSURE_COLOUR",
    "Box",
    "Digit",
    "Line",
    "Reading",
    "ReadingStopped",
    "Segment",
    "annotate",
    "annotation_png",
    "read",
    "save_annotation",
    "segment_digits",
]

MAX_SIDE = 2000  # larger images are read at this size (boxes are mapped back): a phone photo's
# 4000 px add nothing to digits that are tens of pixels high, and cost seconds of morphology


METHODS = ("auto", "segment", "sequence")  # how `read` reads each line (see the module docstring)
# An image no larger than this on either side is a digit tile (MNIST's 28x28, USPS's 16x16, Optdigits'
# 32x32): all its ink is one digit, read by the digit model whatever the method, as `predict` reads
# it (a USPS 6 whose loop stands apart from its stem read as '60').
DIGIT_TILE = 32


def read(
    image,
    model,
    *,
    unsure_below: float = UNSURE_BELOW,
    max_pixels: int = MAX_PIXELS,
    time_limit: float | None = None,
    cancelled: Callable[[], bool] | None = None,
    method: str = "auto",
    line_model=None,
) -> Reading:
    """Read every line of digits in an image.

    image: anything `preprocess.load_image` takes (a path, bytes, a PIL image, an array: grey
    float in [0, 1], uint8 grey or RGB); model: a `digitlab.Model` for 28x28 digits (its classes are the digit texts);
    unsure_below: a digit whose top probability is lower reads as '?' (its candidates stay);
    max_pixels: a larger image is refused (preprocess.ImageTooLargeError) from its header;
    time_limit: seconds the whole reading may take (None: no limit), else ReadingStopped;
    cancelled: a callable, polled while reading, whose True stops it with ReadingStopped (the
    service's, once the client has hung up). An image with more than MAX_MARKS separate marks or
    MAX_PIECES candidate digits is refused (ImageError) before they are merged or classified.
    method: "segment" (each line cut into digits, each classified by `model`), "sequence" (each
    line read whole by `line_model`, a `LineModel`; diagonal writing, which it cannot read, as
    "segment" reads it), "auto" (both, combined line by line:
    combine.py; with no `line_model`, the segmentation alone -- `digitlab.read` passes the
    bundled one); line_model: needed by "sequence".
    """
    if method not in METHODS:
        raise ConfigError(f"unknown reading method {method!r}; use {', '.join(METHODS)}")
    if method == "sequence" and line_model is None:
        raise ConfigError("method 'sequence' reads lines with a line model: pass line_model (or use 'segment')")
    if not 0 <= unsure_below <= 1:
        raise ConfigError(f"unsure_below must lie in [0, 1], got {unsure_below}")
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"time_limit must be positive seconds, got {time_limit}")
    work = WorkLimits(time_limit, cancelled)
    work.check()  # cancelled while it waited for a thread: not even decoded
    grey = load_image(image, max_pixels=max_pixels)
    work.check()
    height, width = grey.shape
    scale = max(height, width) / MAX_SIDE
    if scale > 1:  # at least 1 pixel across: a 4x34464 strip is 0 pixels high at 1/17 (`bench fuzz` found one)
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    else:
        scale = 1.0
    grey, (x0, y0) = on_paper(grey)  # a sheet that does not fill the photo: only the sheet is read
    return Reading(
        shifted(
            _read_lines(grey, model, line_model, method, unsure_below, scale, work),
            round(x0 * scale),
            round(y0 * scale),
        ),
        width,
        height,
    )


def _read_lines(
    grey, model, line_model, method: str, unsure_below: float, scale: float, work: WorkLimits
) -> list[Line]:
    """The lines of digits in `grey` (the image as read: shrunk by `scale`, cut to its sheet), by `method`."""
    ink = ink_image(grey)
    if ink is None:
        return []
    work.check()
    lines = segment_ink(ink, work)
    if max(grey.shape) <= DIGIT_TILE and lines:
        tile = [[_one_segment([s for line in lines for s in line])]]
        return read_segments(ink, tile, model, unsure_below, scale, work)
    if method == "segment" or line_model is None:
        return read_segments(ink, lines, model, unsure_below, scale, work)
    crops = line_crops(grey, lines)
    readings = read_crops(crops, line_model, work)
    sequence = sequence_lines(crops, readings, line_model.classes, unsure_below, scale)
    if method == "sequence":  # a line it makes no crop of (diagonal writing) as the segmentation reads it
        uncropped = [line for line, crop in zip(lines, crops, strict=True) if crop is None]
        fallback = iter(read_segments(ink, uncropped, model, unsure_below, scale, work) if uncropped else [])
        read = [next(fallback) if crop is None else line for crop, line in zip(crops, sequence, strict=True)]
        return [line for line in read if line is not None]
    segmented = read_segments(ink, lines, model, unsure_below, scale, work)
    return [choose(*parts, line_model.classes) for parts in zip(segmented, sequence, readings, strict=True)]


def _one_segment(segments: list[Segment]) -> Segment:
    """Segments taken as the pieces of one digit: their union box holding all their ink."""
    box = union([s.box for s in segments])
    mask = np.zeros((box[3], box[2]), bool)
    for s in segments:
        x, y = s.box[0] - box[0], s.box[1] - box[1]
        mask[y : y + s.box[3], x : x + s.box[2]] |= s.mask
    return Segment(box, mask, "digit")
