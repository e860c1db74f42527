"""Step 5 of reading, the segmentation reader's last: every candidate digit (and every way to cut
touching digits into 2 or 3 parts) cropped MNIST-style and classified in one batch, the best cut
chosen, marks read as punctuation, and digits the model is unsure of as UNSURE."""

from __future__ import annotations

import math
import statistics

import cv2
import numpy as np

from ..preprocess import ImageError, center_digit, percentiles
from .limits import MAX_PIECES, WorkLimits
from .results import UNSURE, Box, Digit, Line, scaled_box, union
from .segment import Segment

# [(segment, the ways to read it as lists of pieces (none for a mark), its line's height)]
Plan = list[tuple[Segment, list[list[Segment]], float]]


def read_segments(
    ink: np.ndarray, lines: list[list[Segment]], model, unsure_below: float, scale: float, work: WorkLimits
) -> list[Line]:
    """The lines of segments found in the ink-bright map `ink`, read by `model` (a `digitlab.Model`
    for 28x28 digits): boxes times `scale`, in the original image's pixels. More than MAX_PIECES
    candidate digits are refused (ImageError) before any is classified."""
    plans, pieces = _plans(lines, work)
    if len(pieces) > MAX_PIECES:
        raise ImageError(
            f"the image holds {len(pieces):,} candidate digits, more than the {MAX_PIECES:,} one image "
            "may have: it looks like noise or texture, not lines of digits; crop it to the writing"
        )
    probabilities = np.zeros((len(pieces), len(model.classes)), np.float32)  # stays 0: no stroke to read
    crops = []
    # One by one: each is its own crop and size, and the time is center_digit's work on its pixels
    # (0.26 ms at the median, limits.py), not the loop's; one at a time, the time limit is checked
    # between them.
    for piece in pieces:
        work.check()
        crops.append(_mnist_crop(ink, piece))
    readable = [i for i, crop in enumerate(crops) if crop is not None]
    if readable:
        probabilities[readable] = model.predict_proba(np.stack([crops[i] for i in readable]))
    of_piece = {id(p): probabilities[i] for i, p in enumerate(pieces)}
    result = []
    for line, plan in plans:
        digits = []
        for segment, options, line_height in plan:
            if not options:
                text = _punctuation(segment.box, [s.box for s in line if s.kind != "mark"])
                digits.append(Digit(text, scaled_box(segment.box, scale), 0.0, []))
                continue
            best = max(
                options,
                key=lambda option: _score(option, [of_piece[id(p)] for p in option], segment.box[2], line_height),
            )
            digits += [_digit(scaled_box(p.box, scale), of_piece[id(p)], model.classes, unsure_below) for p in best]
        result.append(Line(digits, union([d.box for d in digits])))
    return result


def candidate_inks(ink: np.ndarray, lines: list[list[Segment]], work: WorkLimits) -> list[np.ndarray]:
    """The ink map (`candidate_ink`) of every candidate digit `read_segments` prepares in these
    lines, in its order: what `digitlab bench prepare` times and compares."""
    _, pieces = _plans(lines, work)
    return [candidate_ink(ink, piece) for piece in pieces]


def _plans(lines: list[list[Segment]], work: WorkLimits) -> tuple[list[tuple[list[Segment], Plan]], list[Segment]]:
    """Every way to read every segment, as lists of pieces, line by line: [(line, its Plan)]; and
    all the pieces, which go through the model in one batch."""
    plans = []
    pieces: list[Segment] = []
    for line in lines:
        heights = [s.box[3] for s in line if s.kind != "mark"] or [s.box[3] for s in line]
        line_height = float(statistics.median(heights))
        plan = []
        for segment in line:
            work.check()
            options = [] if segment.kind == "mark" else [[segment]]
            if segment.kind == "touching":
                # a part much shorter than the line's digits is a tick or tail, not a digit
                options += [o for o in _splits(segment) if all(p.box[3] >= 0.5 * line_height for p in o)]
            plan.append((segment, options, line_height))
            pieces += [p for option in options for p in option]
        plans.append((line, plan))
    return plans, pieces


def _score(option: list[Segment], probabilities: list[np.ndarray], width: int, line_height: float) -> float:
    """How likely reading a segment `width` pixels wide as these parts is right: the product of
    the parts' top probabilities, times a prior on their width. Cut halves of one wide digit often
    look like digits too (a 0 as '6' and '7'), and two touching digits can look like one
    (a 95 as '8'): parts wider than 1.2 line heights count e^-4 less per line height more.
    (On 500 generated pages, with digitnet trained for 2 epochs, this misjudged 5 of 496
    wide blobs as one digit or two; the product alone 11, a geometric mean 17.) A cut can
    also slice a tick off a digit (a 4's tip read as '1'): parts less than 0.8 as high as
    the tallest part count e^-4 less per part height less."""
    sure = float(np.prod([p.max() for p in probabilities]))
    height = max(p.box[3] for p in option)
    short = sum(max(0.0, 0.8 - p.box[3] / height) for p in option)
    return sure * math.exp(-4 * max(0.0, width / (len(option) * line_height) - 1.2) - 4 * short)


def _digit(box: Box, p: np.ndarray, classes, unsure_below: float) -> Digit:
    """A piece read: its class probabilities `p` -> its top 3, UNSURE below `unsure_below`."""
    top = np.argsort(p)[::-1][:3]
    candidates = [(classes[k], round(float(p[k]), 4)) for k in top]
    text = candidates[0][0] if p[top[0]] >= unsure_below else UNSURE
    return Digit(text, box, float(p[top[0]]), candidates)


def _cut(segment: Segment, start: int, stop: int) -> Segment | None:
    """The part of a segment between two columns, its box shrunk to its ink (None if empty)."""
    mask = segment.mask[:, start:stop]
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    x, y, _, _ = segment.box
    return Segment(
        (x + start, y + int(rows[0]), stop - start, int(rows[-1] - rows[0] + 1)), mask[rows[0] : rows[-1] + 1], "digit"
    )


def _splits(segment: Segment) -> list[list[Segment]]:
    """Ways to cut a blob of touching digits: into 2 parts, and into 3 when it is at least
    1.5 times as wide as high, each cut at one of the two lowest minima of the column ink
    projection within the middle of its stretch."""
    _, _, w, h = segment.box
    profile = cv2.GaussianBlur(segment.mask.sum(0).astype(np.float32)[None], (0, 0), max(1.0, w / 60))[0]
    options = []
    for parts in (2, 3) if w >= 1.5 * h else (2,):
        cuts_per_place = []
        for k in range(1, parts):
            lo, hi = round((k - 0.45) * w / parts), round((k + 0.45) * w / parts)
            window = profile[lo:hi]
            minima = [
                lo + i for i in range(1, len(window) - 1) if window[i] <= window[i - 1] and window[i] <= window[i + 1]
            ]
            cuts_per_place.append(sorted(minima, key=lambda i: profile[i])[:2] or [round(k * w / parts)])
        for cuts in _products(cuts_per_place):
            bounds = [0, *cuts, w]
            pieces = [_cut(segment, a, b) for a, b in zip(bounds, bounds[1:])]
            if all(p is not None for p in pieces):
                options.append(pieces)
    return options


def _products(choices: list[list[int]]) -> list[list[int]]:
    """Every increasing choice of one cut per place."""
    combos: list[list[int]] = [[]]
    for options in choices:
        combos = [c + [o] for c in combos for o in options if not c or o > c[-1]]
    return combos


def _mnist_crop(ink: np.ndarray, segment: Segment) -> np.ndarray | None:
    """The segment's ink, with a margin, as a (28, 28) uint8 MNIST-style image (None when
    `center_digit` finds no stroke in it)."""
    try:
        return center_digit(candidate_ink(ink, segment))
    except ImageError:
        return None


def candidate_ink(ink: np.ndarray, segment: Segment) -> np.ndarray:
    """The segment's own ink, with a margin, stretched to its own contrast: float32, what
    `center_digit` prepares."""
    x, y, w, h = segment.box
    margin = max(2, round(0.1 * max(w, h)))
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(ink.shape[1], x + w + margin), min(ink.shape[0], y + h + margin)
    region = ink[y0:y1, x0:x1]
    keep = np.zeros(region.shape, np.uint8)
    keep[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = segment.mask
    # Grow the mask a little to take in the soft edges of strokes, but never another digit's
    # ink: a cut part stays within its own columns.
    grow = max(1, round(0.03 * h))
    keep = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    keep[:, : x - x0] = 0
    keep[:, x - x0 + w :] = 0
    inside = keep.astype(bool)
    # Stretch to the ink's own contrast: paper level (median outside the strokes) to 0, the
    # strokes' 95th percentile to 1, so that a digit in a fainter part of the page looks like
    # MNIST's full-strength ink (ink_map's stretch is one for the whole image).
    # (`percentiles`, not np.median and np.percentile: 0.11 of the 0.14 ms this took a candidate)
    paper = float(percentiles(region[~inside], [50])[0]) if (~inside).any() else float(region.min())
    full = float(percentiles(region[inside], [95])[0]) if inside.any() else paper + 1
    strength = np.clip((region - paper) / max(full - paper, 1e-3), 0, 1) * inside
    return strength.astype(np.float32)


def _punctuation(box: Box, digit_boxes: list[Box]) -> str:
    """What a mark (a segment too small or flat to be a digit) is, judged against the nearest
    digit of its line: '.' (a small dot low in the line), ',' (the same, taller than wide),
    '-' (a short flat stroke), else UNSURE."""
    if not digit_boxes:
        return UNSURE
    x, y, w, h = box
    _, top, _, height = min(digit_boxes, key=lambda b: abs(b[0] + b[2] / 2 - x - w / 2))
    if max(w, h) <= 0.35 * height and y >= top + 0.55 * height:
        return "," if h >= 1.6 * w else "."
    if w >= 2 * h and h <= 0.25 * height and w <= 1.5 * height:
        return "-"
    return UNSURE
