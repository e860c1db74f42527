"""The sequence reader: each line the segmentation found, read whole by the line recognizer (CTC).

No digit is cut out first: the line's grey crop (with a margin of a quarter of its height above
and below and half of it on either side) is made the recognizer's input (`preprocess.line_ink`,
`line_input`), its frames are decoded (beam search), and each digit read gets

- a confidence: the highest probability its frames give it on the most probable path (ctc.align);
  below `unsure_below` it reads as '?', as the segmentation reader's digits do;
- a box: its frames mark its centre. The digit-sized mark that centre lies in, where no other
  digit's centre lies in it; else (touching digits) it reaches halfway to the digits beside it
  (the line's ends for the first and the last), shrunk to the ink of the line's marks there.

Punctuation is not read by the recognizer (it learnt to pass over `.` `,` `-` and `$`): a line read
this way holds digits and '?' only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.ctc import Char, align, beam_decode
from ..preprocess import LINE_STRIDE, ImageError, line_ink, line_input
from .limits import WorkLimits
from .results import UNSURE, Box, Digit, Line, scaled_box, union
from .segment import Segment

BEAM_WIDTH = 8
MARGIN_Y = 0.25  # of the line's height, above and below its marks
MARGIN_X = 0.5  # of the line's height, left and right
# The recognizer reads lines that run across: it learnt lines whose baseline drifts by a fraction of
# a digit. A line of marks spanning more than this many of its digit heights from top to bottom is
# diagonal writing (lines.py reads it along its slant), which it never saw: no crop is made of it,
# and the segmentation's reading stands.
MAX_SPAN = 2.0


@dataclass(frozen=True)
class LineCrop:
    """One line as the recognizer reads it: its input, and how input columns map to the image."""

    input: np.ndarray  # (LINE_HEIGHT, W) float32
    x0: int  # the crop's left edge in the image
    columns_per_pixel: float  # input columns per image pixel
    segments: list[Segment]  # the line's marks, as the segmentation found them
    height: float  # the line's height (median of its marks'), pixels


@dataclass(frozen=True)
class SequenceReading:
    """A line read by the recognizer: its digits (labels), their frames, and log P(string)."""

    chars: list[Char]
    log_probability: float
    probs: np.ndarray  # (T, K) the frames' probabilities


def line_crops(grey: np.ndarray, lines: list[list[Segment]]) -> list[LineCrop | None]:
    """Each line of segments as a LineCrop of the grey image (None where no ink stands out in it, or
    where the line runs diagonally: MAX_SPAN)."""
    crops: list[LineCrop | None] = []
    for line in lines:
        marks = [s for s in line if s.kind != "mark"] or line
        height = float(np.median([s.box[3] for s in marks]))
        x0 = min(s.box[0] for s in line)
        y0 = min(s.box[1] for s in line)
        x1 = max(s.box[0] + s.box[2] for s in line)
        y1 = max(s.box[1] + s.box[3] for s in line)
        if y1 - y0 > MAX_SPAN * height:
            crops.append(None)
            continue
        left, right = max(0, round(x0 - MARGIN_X * height)), min(grey.shape[1], round(x1 + MARGIN_X * height))
        top, bottom = max(0, round(y0 - MARGIN_Y * height)), min(grey.shape[0], round(y1 + MARGIN_Y * height))
        crop = grey[top:bottom, left:right]
        try:
            line_input_ = line_input(line_ink(crop))
        except ImageError:
            crops.append(None)
            continue
        crops.append(LineCrop(line_input_, left, line_input_.shape[0] / crop.shape[0], line, height))
    return crops


def read_crops(crops: list[LineCrop | None], line_model, work: WorkLimits) -> list[SequenceReading | None]:
    """Each crop read by the line model: beam search, then the best string aligned to its frames."""
    inputs = [c.input for c in crops if c is not None]
    probabilities = iter(line_model.frame_probabilities(inputs) if inputs else [])
    readings: list[SequenceReading | None] = []
    for crop in crops:
        work.check()
        if crop is None:
            readings.append(None)
            continue
        probs = next(probabilities)
        labels, log_p = beam_decode(probs, BEAM_WIDTH)
        readings.append(SequenceReading(align(probs, labels), log_p, probs))
    return readings


def digits_of(crop: LineCrop, chars: list[Char], classes, unsure_below: float, scale: float) -> list[Digit]:
    """The characters of a line read by the recognizer as Digits with boxes in the original image
    (`scale`: original pixels per working pixel)."""
    centres = [crop.x0 + (c.first + c.last + 1) / 2 * LINE_STRIDE / crop.columns_per_pixel for c in chars]
    marks = crop.segments
    left_end = min(s.box[0] for s in marks)
    right_end = max(s.box[0] + s.box[2] for s in marks)
    own = _own_marks(marks, centres)
    digits = []
    for k, (char, centre) in enumerate(zip(chars, centres, strict=True)):
        start = (centres[k - 1] + centre) / 2 if k > 0 else min(left_end, centre - crop.height / 2)
        stop = (centre + centres[k + 1]) / 2 if k + 1 < len(chars) else max(right_end, centre + crop.height / 2)
        box = own.get(k) or _ink_box(marks, start, stop) or _fallback_box(marks, centre, crop.height)
        text = classes[char.label] if char.confidence >= unsure_below else UNSURE
        candidates = [(classes[char.label], round(char.confidence, 4))]
        digits.append(Digit(text, scaled_box(box, scale), char.confidence, candidates))
    return digits


def _own_marks(marks: list[Segment], centres: list[float]) -> dict[int, Box]:
    """character index -> the box of the digit-sized mark its centre lies in, where that mark holds
    no other character's centre (touching digits share a mark: theirs come from the stretch)."""
    holders: dict[int, list[int]] = {}
    for k, centre in enumerate(centres):
        for i, segment in enumerate(marks):
            if segment.kind != "mark" and segment.box[0] <= centre < segment.box[0] + segment.box[2]:
                holders.setdefault(i, []).append(k)
                break
    return {ks[0]: marks[i].box for i, ks in holders.items() if len(ks) == 1}


def _ink_box(marks: list[Segment], start: float, stop: float) -> Box | None:
    """The box of the marks' ink between columns start and stop (image pixels), or None."""
    xs0, ys0, xs1, ys1 = [], [], [], []
    for segment in marks:
        x, y, w, h = segment.box
        lo, hi = max(x, int(np.floor(start))), min(x + w, int(np.ceil(stop)))
        if hi <= lo:
            continue
        part = segment.mask[:, lo - x : hi - x]
        rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
        if rows.size == 0:
            continue
        xs0.append(lo + cols[0])
        xs1.append(lo + cols[-1] + 1)
        ys0.append(y + rows[0])
        ys1.append(y + rows[-1] + 1)
    if not xs0:
        return None
    return (int(min(xs0)), int(min(ys0)), int(max(xs1) - min(xs0)), int(max(ys1) - min(ys0)))


def _fallback_box(marks: list[Segment], centre: float, height: float) -> Box:
    """A digit-wide box at `centre`, as high as the line, where no mark's ink lies near it."""
    top = min(s.box[1] for s in marks)
    bottom = max(s.box[1] + s.box[3] for s in marks)
    width = max(1, round(0.6 * height))
    return (max(0, round(centre - width / 2)), int(top), width, int(bottom - top))


def sequence_lines(
    crops: list[LineCrop | None],
    readings: list[SequenceReading | None],
    classes,
    unsure_below: float,
    scale: float,
) -> list[Line | None]:
    """Each line as the sequence reader reads it, in order; None where the recognizer read nothing."""
    out: list[Line | None] = []
    for crop, reading in zip(crops, readings, strict=True):
        if crop is None or reading is None or not reading.chars:
            out.append(None)
            continue
        digits = digits_of(crop, reading.chars, classes, unsure_below, scale)
        out.append(Line(digits, union([d.box for d in digits])))
    return out
