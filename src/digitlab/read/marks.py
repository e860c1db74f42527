"""Does an image hold several digits? Asked of what `digitlab predict` is given: it reads one digit
per image, and a photo of "13540" gets one answer (a '2' at 84%). The reader's own segmentation
(segment.py, steps 1-4, no model) finds the candidate digits; marks that stand side by side in one
line, each digit-sized, say the image is a string of digits, for `digitlab read`.

Digit-sized, side by side: in one line, at least 10 pixels high (half an MNIST digit's 20), at
least 0.6 of the line's tallest mark high and with a quarter of its ink, overlapping the mark before
it by no more than a fifth of the narrower one's width. That keeps apart the pieces one digit
falls into (a 4's stroke beside its loop, a 5's bar above its bowl) and the specks beside it.
Measured: 1 of the 10,000 MNIST test digits counts 2 marks (as they are, 28x28; none of the first
2,000 drawn dark on white at 280x280), none of the 2,007 USPS test digits and of the 1,000 HwD-1000
drawings; each of the 8 photos of digit strings written in one line in real-digits/photos counts
exactly its digits (the photo of one digit: none; 27-68 ms a photo on 2 cores), and 988 of the
1,066 ORAND-CAR-A cheque amounts count 2 or more. A column of digits, one per line, does not
count: one digit's pieces stack the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..preprocess import ImageError
from .ink import ink_image
from .segment import Segment, segment_ink

MIN_HEIGHT = 10  # pixels: half the height of an MNIST digit
MIN_HEIGHT_SHARE = 0.6  # of the line's tallest mark
MIN_INK_SHARE = 0.25  # of the line's mark with the most ink
MAX_OVERLAP = 0.2  # of the narrower mark's width, horizontally, with the mark before it


def digit_marks(grey: np.ndarray, max_side: int) -> int:
    """How many digit-sized marks stand side by side in `grey` (float [0, 1], either polarity):
    0 when no line holds two (one digit, a blank image, an image the reader refuses as noise),
    else their count over every line that holds two or more. max_side: a larger image is looked
    at shrunk to this longer side, as `read` does."""
    height, width = grey.shape
    scale = max(height, width) / max_side
    if scale > 1:
        grey = cv2.resize(
            grey, (max(1, round(width / scale)), max(1, round(height / scale))), interpolation=cv2.INTER_AREA
        )
    ink = ink_image(grey)
    if ink is None:
        return 0
    try:
        lines = segment_ink(ink)
    except ImageError:  # more marks than any page of digits has: noise, not a string of digits
        return 0
    counts = [len(_side_by_side(line)) for line in lines]
    return sum(n for n in counts if n >= 2)


def _side_by_side(line: list[Segment]) -> list[Segment]:
    """The digit-sized marks of one line that stand side by side, left to right."""
    marks = [s for s in line if s.kind in ("digit", "touching") and s.box[3] >= MIN_HEIGHT]
    if len(marks) < 2:
        return marks
    tallest = max(s.box[3] for s in marks)
    most_ink = max(int(s.mask.sum()) for s in marks)
    marks = sorted(
        (s for s in marks if s.box[3] >= MIN_HEIGHT_SHARE * tallest and s.mask.sum() >= MIN_INK_SHARE * most_ink),
        key=lambda s: s.box[0],
    )
    kept: list[Segment] = []
    for mark in marks:
        if kept:
            before = kept[-1]
            overlap = before.box[0] + before.box[2] - mark.box[0]
            if overlap > MAX_OVERLAP * min(before.box[2], mark.box[2]):
                continue
        kept.append(mark)
    return kept
