"""Read the digit strings in a page or photo: lines of digits with boxes and confidences.

    model = digitlab.load_model(run_dir)
    reading = read("page.jpg", model)
    reading.text                    # '4071\\n93', one line of writing per text line
    reading.lines[0].digits[0]      # Digit(text='4', box=(31, 40, 22, 35), confidence=0.97, ...)
    save_annotation("seen.png", "page.jpg", reading)

The pipeline, in the order of the code below:

1. Ink. `preprocess.ink_map` turns the grey image ink-bright (it decides the polarity and
   flattens the lighting). An adaptive threshold (cv2.adaptiveThreshold, block a quarter of
   the shorter side and at least 10 stroke widths, offset from the measured noise and ink
   contrast; Otsu as the fallback when it finds nothing or floods the image) marks ink under
   uneven light and shadows; a twice as sensitive mask joins in by hysteresis, so faint
   strokes stay whole.
2. Clean-up. Ruled lines -- straight runs 2.5 times longer than the writing is high and thin
   for their length, found by opening with long kernels -- are removed along their whole
   axis, except where strokes cross or lie on them; paper edges and clutter (large components
   along the image's edge, long thin lines, solid blobs larger than digits) and specks go. A
   tight crop of a line (a cheque's amount box), whose digits the edge cuts, keeps them.
3. Digits. Connected components; the pieces of one digit are merged: stacked close together,
   one inside the other's box, a small piece beside a larger one, a 5's detached bar, a tick
   off a digit's upper part.
4. Lines. Digit-sized components are chained left to right by vertical overlap, so a line may
   drift up or down; a column of digits gives one line per digit, top to bottom; digits on one
   straight line tilted 10-60 degrees (diagonal writing) become one line read along it.
5. Reading. A component wider than high is also cut at minima of its column ink projection
   into 2 (or 3) parts; every candidate is cropped from the ink map with a margin, made
   MNIST-style by `preprocess.center_digit` and classified in one batch per image; the cut (or
   no cut) with the best product of the parts' probabilities, times priors against parts
   wider than a digit or much shorter than each other, wins. Marks too small or flat for a
   digit read as '.', ',' or '-' by their size and place in the line, else as '?'; digits
   whose top probability is below `unsure_below` read as '?'.

How well it reads (USPS digits, cheque amounts, photos, generated pages), beside Tesseract:
`digitlab bench read`, whose table is in BENCHMARKS.md.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_write
from ..errors import ConfigError
from ..preprocess import MAX_PIXELS, ImageError, center_digit, ink_map, load_colour, load_image

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels

UNSURE = "?"
PUNCTUATION = (".", ",", "-")  # what a mark may read as, besides UNSURE
UNSURE_BELOW = 0.6  # default: a digit whose top probability is lower reads as UNSURE
MAX_SIDE = 2000  # larger images are read at this size (boxes are mapped back): a phone photo's
# 4000 px add nothing to digits that are tens of pixels high, and cost seconds of morphology
# Candidate digits (cut parts included) one image may have: each costs 4-6 ms (center_digit at 8x),
# and noise read as specks made thousands (`digitlab bench fuzz` found a 300x304 image with 2,261:
# 14 s). The most in `bench read`'s real images and generated pages is 30.
MAX_PIECES = 500
# Marks (connected components above the speck size) one image may have, counted before any is
# merged, grouped or cut: merging compares each with its neighbours, and 62,500 dots (a 307 KB PNG)
# took 41-48 s there before MAX_PIECES refused them. The most in `bench read`'s 340 real images and
# generated pages is 39; 2,000 merge, group and split in under 0.5 s (2-core AMD EPYC).
MAX_MARKS = 2000


class ReadingStopped(ImageError):
    """A reading stopped before its end: it took longer than its time limit (the image is too
    hard or too large to read in that time: crop it), or its caller cancelled it."""


class _Work:
    """The bounds on one reading's work, checked between stages and in every loop whose length
    the image decides: a time limit (seconds from the start of `read`, decoding included) and a
    `cancelled` callable another thread may turn true (the service does, when the client hangs up)."""

    def __init__(self, time_limit: float | None = None, cancelled: Callable[[], bool] | None = None):
        self.time_limit = time_limit
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.cancelled = cancelled

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise ReadingStopped("the reading was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ReadingStopped(f"reading the image took more than {self.time_limit:g} s, the limit: crop it to "
                                 "the writing, or make it smaller")


UNBOUNDED = _Work()


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digit:
    """One digit read: '0'-'9'; '.', ',' or '-' for punctuation (a mark too small or flat to be a
    digit, told by its size and place in the line; its confidence is 0); or '?' for any other
    mark and for a digit the model is unsure of."""

    text: str
    box: Box  # in the original image's pixels
    confidence: float  # the model's top probability (0 for a mark that was not classified)
    candidates: list[tuple[str, float]] = field(default_factory=list)  # top 3 (digit, probability)


@dataclass(frozen=True)
class Line:
    """One line of writing, its digits left to right (or along the line when it is slanted)."""

    digits: list[Digit]
    box: Box

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.digits)


@dataclass(frozen=True)
class Reading:
    """Everything read in one image: its lines top to bottom and the image's size."""

    lines: list[Line]
    width: int
    height: int

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_json(self) -> dict:
        """A JSON-serialisable dict: text, image size, and every line and digit with box and confidence."""
        return {
            "text": self.text,
            "width": self.width,
            "height": self.height,
            "lines": [
                {
                    "text": line.text,
                    "box": list(line.box),
                    "digits": [
                        {"text": d.text, "box": list(d.box), "confidence": round(d.confidence, 4),
                         "candidates": [[c, round(p, 4)] for c, p in d.candidates]}
                        for d in line.digits
                    ],
                }
                for line in self.lines
            ],
        }


@dataclass(frozen=True)
class Segment:
    """A candidate digit found on a page, before any model has looked at it.

    kind: 'digit'; 'touching' (much wider than the line's digits: probably several that touch,
    `read` tries cuts); 'mark' (a dash, dot or other stroke too small or too flat to be a digit).
    """

    box: Box  # in the pixels of the image given to segment_digits
    mask: np.ndarray  # (h, w) bool: this segment's ink inside its box
    kind: str = "digit"


# --- 1. ink -------------------------------------------------------------------------------


def _odd(n: float) -> int:
    return int(n) // 2 * 2 + 1


def _stroke_width(ink8: np.ndarray) -> float:
    """The typical stroke width of the ink (Otsu's mask) in pixels: four times the mean distance
    of its pixels from the ground (a band of width w has mean distance w/4)."""
    _, strokes = cv2.threshold(ink8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    inside = strokes > 0
    if not inside.any():
        return 1.0
    return 4 * float(cv2.distanceTransform(strokes, cv2.DIST_L2, 3)[inside].mean())


def _ink_masks(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 0/255 masks of ink in an ink-bright float image, robust to uneven light:
    the ink itself, and a twice as sensitive one (in which faint ruled lines stay whole)."""
    height, width = ink.shape
    ink8 = np.clip(ink * 255, 0, 255).astype(np.uint8)
    # A block a quarter of the shorter side: lighting gradients and vignetting change little
    # within it; and at least 10 stroke widths, so that the local mean stays near the paper's
    # even among the loops of a digit that fills a small image (a cheque's amount box).
    block = _odd(max(15, min(height, width) // 4, 10 * _stroke_width(ink8)))
    residual = ink8.astype(np.float32) - cv2.blur(ink8, (block, block)).astype(np.float32)
    # The offset above the local mean: 4 noise sigmas (median absolute deviation, which the few
    # ink pixels do not move) or 30% of the ink contrast (the 99.9th percentile), whichever is
    # larger -- faint pencil and bold marker both keep their cores, paper texture does not.
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    contrast = float(np.percentile(residual, 99.9))
    offset = max(4 * noise, 0.3 * contrast, 4.0)
    masks = []
    for c in (offset, max(3 * noise, offset / 2, 3.0)):
        mask = cv2.adaptiveThreshold(ink8, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -c)
        coverage = np.count_nonzero(mask) / mask.size
        if coverage == 0 or coverage > 0.3:  # nothing stands out locally, or the block was too small
            _, mask = cv2.threshold(ink8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        masks.append(mask)
    strong, faint = masks
    # Hysteresis, as in Canny: the faint mask's components that hold strong ink. A faint or
    # thin stroke then stays whole instead of breaking into specks, and faint noise alone goes.
    _, labels = cv2.connectedComponents(faint, connectivity=8)
    held = np.zeros(labels.max() + 1, bool)
    held[labels[strong > 0]] = True
    held[0] = False
    return held[labels].astype(np.uint8) * 255, faint


# --- 2. clean-up --------------------------------------------------------------------------


def _band(ends: tuple, thickness: int, shape: tuple[int, int], pad: int = 0
          ) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A straight band of `thickness` pixels along the line through `ends`, drawn only in its box
    within an image of `shape` (grown by `pad` pixels each side): (rows r0:r1, columns c0:c1), and
    the band in that box, uint8 0/255 -- the pixels cv2.line draws on the whole image (a thick
    line is a filled polygon, which a whole-pixel shift moves unchanged)."""
    height, width = shape
    inside, (xa, ya), (xb, yb) = cv2.clipLine((0, 0, width, height), *ends)
    reach = thickness // 2 + 2 + pad
    if not inside:  # the axis misses the image (it cannot: it was fitted to pixels in it)
        xa, ya, xb, yb = 0, 0, width - 1, height - 1
    r0, r1 = max(0, min(ya, yb) - reach), min(height, max(ya, yb) + reach + 1)
    c0, c1 = max(0, min(xa, xb) - reach), min(width, max(xa, xb) + reach + 1)
    shifted = [(ex - c0, ey - r0) for ex, ey in ends]
    return (r0, r1, c0, c1), cv2.line(np.zeros((r1 - r0, c1 - c0), np.uint8), *shifted, 255, thickness)


def _remove_ruled_lines(mask: np.ndarray, faint: np.ndarray, work: _Work = UNBOUNDED) -> np.ndarray:
    """The mask without ruled or lined-paper lines (found in the more sensitive mask `faint`),
    keeping the strokes that cross or touch them.

    A line is a straight run at least 2.5 times as long as the writing is high (when the
    writing's height can be told: from the ink components less than half the image wide and
    not flat, the digits' sizes) -- else at least a fifth of the image long (horizontal) or half
    of it high (vertical, so that a tall '1' in a tight crop survives) -- and at most 1/30 as
    thick as long: a dash or a bold '1' is far thicker for its length. Horizontal lines go
    first; the writing's height is then measured again, for digits that stood on a line, or
    hung from one, only stand apart once it is gone.
    """
    height, width = mask.shape
    cleaned = mask.copy()
    for horizontal in (True, False):
        writing_height = _writing_height(cleaned)
        if writing_height is not None:
            length = max(25, round(2.5 * writing_height))
        else:
            length = max(25, width // 5 if horizontal else height // 2)

        def kernel(along: int, across: int) -> np.ndarray:
            return np.ones((across, along) if horizontal else (along, across), np.uint8)

        # Thresholding leaves a line ragged (a pixel up or down, breaks in noise and JPEG
        # blocks): thicken it by a pixel each side and bridge gaps before looking for long
        # straight runs -- short gaps in anything, gaps up to 1/8 of its length where only
        # hairlines (under 4 px across) are left, as they are of a faint line.
        hairlines = cv2.subtract(faint, cv2.morphologyEx(faint, cv2.MORPH_OPEN, kernel(1, 4)))
        opened = np.zeros_like(mask)
        for source, gap in ((faint, length // 20), (hairlines, length // 8)):
            bridged = cv2.morphologyEx(cv2.dilate(source, kernel(1, 3)), cv2.MORPH_CLOSE, kernel(max(5, gap), 1))
            opened |= cv2.morphologyEx(bridged, cv2.MORPH_OPEN, kernel(length, 1))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        strokes_by_width: dict[int, np.ndarray] = {}  # the opening below, for each line thickness met
        for i in range(1, count):
            work.check()
            x, y, w, h, area = (int(v) for v in stats[i])
            run = w if horizontal else h
            thickness = area / run - 2  # less the pixel added each side
            if run < length or thickness > run / 30:
                continue
            # The line's axis, extended across the whole image: the parts of one line that
            # light or noise broke off, or that digits standing on it hid, go with it.
            ys, xs = np.nonzero(labels[y:y + h, x:x + w] == i)
            vx, vy, x0, y0 = cv2.fitLine(np.column_stack([xs + x, ys + y]).astype(np.float32), cv2.DIST_L2, 0, 0.01,
                                         0.01).ravel()
            far = 2 * max(height, width)
            ends = ((round(x0 - far * vx), round(y0 - far * vy)), (round(x0 + far * vx), round(y0 + far * vy)))
            # Its thickness: the median count of ink pixels across it in the sensitive mask,
            # in a band twice as wide as the component suggests, plus one for the pixel more
            # that JPEG and blur add here and there.
            (r0, r1, c0, c1), band = _band(ends, 2 * max(1, round(thickness)) + 4, mask.shape)
            counts = np.count_nonzero(cv2.bitwise_and(faint[r0:r1, c0:c1], band), axis=0 if horizontal else 1)
            line_px = round(float(np.median(counts[counts > 0]))) + 1
            if line_px - 1 > max(2, run / 30):
                continue  # a slanted stroke, of which the opening kept a thin sliver: not a line
            # The rest is done in the band's box, grown by the closing's reach below (the same
            # pixels as on the whole image): 330 ruled lines 6 px apart took 12.4 s on the whole
            # image, line by line, and take 0.1 s so.
            (r0, r1, c0, c1), band = _band(ends, line_px + 2, mask.shape, pad=line_px + 7)
            # Ink that reaches further across than the line is thick belongs to a stroke that
            # crosses the line or lies on it: it stays.
            if line_px not in strokes_by_width:
                strokes_by_width[line_px] = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel(1, line_px + 2))
            removed = cv2.subtract(band, strokes_by_width[line_px][r0:r1, c0:c1])
            here = cleaned[r0:r1, c0:c1]
            kept = cv2.subtract(here, removed)
            # Strokes that cross the line at a slant are thin across it: re-join them where ink
            # continues on both sides of the line.
            rejoined = cv2.morphologyEx(kept, cv2.MORPH_CLOSE, kernel(1, line_px + 6))
            here[:] = cv2.bitwise_or(kept, cv2.bitwise_and(rejoined, cv2.bitwise_and(removed, here)))
    return cleaned


@dataclass
class _Blob:
    """Connected components taken as one digit while segmenting: their ids and joint box."""

    ids: list[int]
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int
    area: int

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    def joined(self, other: _Blob) -> _Blob:
        return _Blob(self.ids + other.ids, min(self.x0, other.x0), min(self.y0, other.y0),
                     max(self.x1, other.x1), max(self.y1, other.y1), self.area + other.area)


def _touches_border(blob: _Blob, height: int, width: int) -> bool:
    return blob.x0 == 0 or blob.y0 == 0 or blob.x1 == width or blob.y1 == height


def _is_edge_like(blob: _Blob, height: int, width: int) -> bool:
    """Touching the image's edge and more than half as wide or high as the image: the paper's
    edge, the table beyond it, a vignetted corner -- or, in a tight crop of a line of digits (a
    cheque's amount box), a digit that the crop cuts. `_segment_ink` tells them apart by size."""
    return _touches_border(blob, height, width) and (blob.w > width / 2 or blob.h > height / 2)


def _is_long_line(blob: _Blob, height: int, width: int) -> bool:
    """A long thin line (a fold, a stray pen line, what ruled-line removal left): not writing."""
    length = math.hypot(blob.w, blob.h)
    return length > 0.4 * max(height, width) and length / (blob.area / length) > 40


def _is_solid(blob: _Blob) -> bool:
    """Filled more than 60% of its box and not thin: a blot, shadow or object (a bold 0 or 8
    drawn with a marker can be too; only solid blobs larger than the digits are dropped)."""
    return blob.area > 0.6 * blob.w * blob.h and min(blob.w, blob.h) > 0.3 * max(blob.w, blob.h)


def _writing_height(mask: np.ndarray) -> float | None:
    """The height of the writing in a mask, or None where nothing looks like writing: the
    median height, weighted by area, of the components less than half the image wide and not
    flat (ruled lines, dashes), nor as thin for their height as a vertical line -- but as high
    as the image, for a tight crop of a line of digits (a cheque's amount box) has digits that
    fill it."""
    height, width = mask.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    w, h, area = (stats[1:, k].astype(float) for k in (cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA))
    writing = (w < width / 2) & (h >= 0.3 * w) & ~((h > height / 2) & (area / h < h / 30))
    return _weighted_median(h[writing], area[writing]) if writing.any() else None


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


# --- 3. digits ----------------------------------------------------------------------------


def _merge_pieces(blobs: list[_Blob], digit_height: float, work: _Work = UNBOUNDED) -> list[_Blob]:
    """Join the pieces of one digit, as long as together they are no taller than a digit and
    not much wider than the larger piece or than tall: pieces stacked close together, one
    inside the other's box (a broken stroke), a small piece right beside a larger one, or a
    flat bar at the top of a digit (a 5 whose bar was written apart, often off to the right)."""
    near = 0.1 * digit_height
    tallest = 1.35 * digit_height  # no two pieces make one digit higher than this

    def belong_together(a: _Blob, b: _Blob) -> bool:
        joint = a.joined(b)
        if joint.h > tallest:
            return False
        small, big = sorted((a, b), key=lambda blob: blob.w * blob.h)
        x_overlap = min(a.x1, b.x1) - max(a.x0, b.x0)  # negative: the gap between them
        y_overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
        close = min(x_overlap, y_overlap) >= -near
        # A 5's bar: flat, over the upper half of the digit's right side, up to 0.2 digit
        # heights away (MNIST's 5s show all of these).
        bar = (small.h < 0.35 * digit_height and small.w >= 2 * small.h and big.h >= 0.5 * digit_height
               and small.cy < big.y0 + 0.5 * big.h and small.x0 >= big.x0 + 0.3 * big.w
               and min(x_overlap, y_overlap) >= -2 * near and joint.w <= 1.3 * joint.h)
        # A speck or tick off a digit's upper part (an MNIST 4's broken-off tip, a pen's
        # stray touch), that with it stays no wider than 1.5 times its height: low beside a
        # digit it may be a decimal point instead.
        tick = (max(small.w, small.h) < 0.4 * digit_height and big.h >= 0.5 * digit_height and close
                and small.cy < big.y0 + 0.6 * big.h and joint.w <= 1.5 * joint.h)
        if joint.w > max(big.w, joint.h, 0.6 * digit_height):
            return bar or tick
        # One above the other, apart or overlapping a little (a 7's bar reaching down over its
        # stem); digits side by side share most of their height instead.
        stacked = x_overlap >= 0.5 * min(a.w, b.w) and -0.15 * digit_height <= y_overlap <= 0.6 * min(a.h, b.h)
        inside = x_overlap > 0 and y_overlap > 0 and x_overlap * y_overlap >= 0.5 * small.w * small.h
        shorter = min(a, b, key=lambda blob: max(blob.w, blob.h))
        beside = max(shorter.w, shorter.h) < 0.65 * digit_height and close
        return bar or stacked or (inside and small.h < 0.7 * digit_height) or beside

    merged = True
    while merged:  # repeat until stable: a joined blob is larger and may now meet another piece
        merged = False
        blobs.sort(key=lambda b: b.x0)
        for i in range(len(blobs)):
            work.check()
            j = i + 1
            while i < len(blobs) and j < len(blobs) and blobs[j].x0 <= blobs[i].x1 + 2 * near:  # x ranges meet
                a, b = blobs[i], blobs[j]
                # belong_together's first test, without building the joint blob: a grid of
                # 44x44 dots made 41,624 pairs, and merging took 0.59 s under cProfile, 0.28 s so
                if max(a.y1, b.y1) - min(a.y0, b.y0) > tallest:
                    j += 1
                elif belong_together(a, b):
                    blobs[i] = blobs[i].joined(blobs.pop(j))
                    merged, j = True, i + 1
                else:
                    j += 1
    return blobs


# --- 4. lines -----------------------------------------------------------------------------


def _group_lines(blobs: list[_Blob], digit_height: float, work: _Work = UNBOUNDED) -> list[list[_Blob]]:
    """Lines top to bottom, each left to right (or along a slanted line).

    Digit-sized blobs (at least half the typical height) make the lines: each joins the line
    whose last digit shares at least 30% of its height and lies within 4 digit heights to
    the left, so a line may drift up or down one digit at a time. Smaller blobs (dots, dashes,
    a stray speck) then join the line they overlap most, or go if they overlap none.
    """
    # Each blob is compared only with the lines that numpy finds may take it (the exact test is
    # the loop's, in the lines' order): 1,900 specks made 1,750 lines, and testing every line for
    # each took 8.7 s of 15 under cProfile.
    reach = 4 * digit_height + 1  # the tests' reach, and a pixel more
    lines: list[list[_Blob]] = []
    full = sorted((b for b in blobs if b.h >= 0.5 * digit_height), key=lambda b: b.cx)
    last = np.zeros((len(full), 3))  # x1, y0, y1 of each line's last blob
    for blob in full:
        work.check()
        best, best_overlap = None, 0.3
        n = len(lines)
        for k in np.flatnonzero((blob.x0 - last[:n, 0] <= reach) & (last[:n, 1] < blob.y1) & (last[:n, 2] > blob.y0)):
            end = lines[k][-1]
            overlap = (min(blob.y1, end.y1) - max(blob.y0, end.y0)) / min(blob.h, end.h)
            if blob.x0 - end.x1 <= 4 * digit_height and overlap >= best_overlap:
                best, best_overlap = k, overlap
        if best is None:
            lines.append([blob])
            best = n
        else:
            lines[best].append(blob)
        last[best] = blob.x1, blob.y0, blob.y1
    extent = np.array([[min(b.cx for b in line), max(b.cx for b in line), min(b.y0 for b in line),
                        max(b.y1 for b in line)] for line in lines]).reshape(-1, 4)  # cx0, cx1, y0, y1
    for blob in (b for b in blobs if b.h < 0.5 * digit_height):
        work.check()
        best, best_overlap = None, 0.0
        for k in np.flatnonzero((extent[:, 0] - reach <= blob.cx) & (extent[:, 1] + reach >= blob.cx)
                                & (extent[:, 2] < blob.y1) & (extent[:, 3] > blob.y0)):
            # the line's vertical extent near the blob: its nearest digit's
            nearest = min(lines[k], key=lambda b: abs(b.cx - blob.cx))
            overlap = (min(blob.y1, nearest.y1) - max(blob.y0, nearest.y0)) / blob.h
            if abs(nearest.cx - blob.cx) <= 4 * digit_height and overlap > best_overlap:
                best, best_overlap = k, overlap
        if best is not None:
            lines[best].append(blob)
            lines[best].sort(key=lambda b: b.cx)
            cx0, cx1, y0, y1 = extent[best]
            extent[best] = min(cx0, blob.cx), max(cx1, blob.cx), min(y0, blob.y0), max(y1, blob.y1)
    lines.sort(key=lambda line: (min(b.y0 for b in line), line[0].x0))
    return _join_slanted(lines, digit_height)


def _join_slanted(lines: list[list[_Blob]], digit_height: float) -> list[list[_Blob]]:
    """Diagonal writing falls apart into short lines; when all digits lie on one straight line
    tilted 10-60 degrees, read them as one line along it.

    A column of digits (one per line, written top to bottom) is steeper and stays one line per
    digit, which already reads in the right order.
    """
    blobs = [b for line in lines for b in line if b.h >= 0.5 * digit_height]
    if len(lines) < 2 or len(blobs) < 3:
        return lines
    centres = np.array([(b.cx, b.cy) for b in blobs])
    centred = centres - centres.mean(0)
    _, spread, directions = np.linalg.svd(centred, full_matrices=False)
    major = directions[0] if directions[0][0] >= 0 else -directions[0]  # point rightwards
    angle = math.degrees(math.atan2(abs(major[1]), major[0]))
    # Straight: the spread across the line is a fraction of a digit height.
    across = spread[1] / math.sqrt(len(blobs))
    if not (10 <= angle <= 60 and across < 0.35 * digit_height):
        return lines
    everything = [b for line in lines for b in line]
    return [sorted(everything, key=lambda b: (b.cx - centres[:, 0].mean()) * major[0]
                   + (b.cy - centres[:, 1].mean()) * major[1])]


def _line_kinds(line: list[_Blob], digit_height: float) -> list[str]:
    """'digit', 'touching' or 'mark' for each blob, judged against the line's own digits."""
    tall = [b for b in line if b.h >= 0.5 * digit_height and b.w < 3.5 * b.h] or line
    line_height = float(statistics.median([b.h for b in tall]))  # np.median costs 0.15 ms a call: lines
    kinds = []
    for b in line:
        if b.h < 0.4 * line_height or b.w > 3.5 * b.h:
            kinds.append("mark")  # a dot, comma, dash or underline
        elif b.w > max(b.h, line_height):
            # Few single digits are wider than high (MNIST test digits, ink above 127: median
            # width 0.75 of the height, 11% wider than high), but two narrow digits that touch
            # (a 6 and a 1) can be barely wider than high; `read` lets the model judge the cuts.
            kinds.append("touching")
        else:
            kinds.append("digit")
    return kinds


def segment_digits(grey: np.ndarray) -> list[list[Segment]]:
    """Candidate digits in a grey image (float [0, 1], either polarity), grouped in lines.

    Lines come top to bottom, segments left to right; boxes are in `grey`'s pixels. Nothing
    is classified: a segment's kind says whether it looks like one digit, several touching
    digits, or a mark that is no digit.
    """
    ink = _ink(grey)
    return [] if ink is None else _segment_ink(ink)


def _ink(grey: np.ndarray) -> np.ndarray | None:
    """preprocess.ink_map's ink-bright map, or None for an image where no ink stands out."""
    try:
        ink, _ = ink_map(grey)
    except ImageError:  # a blank page: nothing to read
        return None
    return np.asarray(ink, np.float32)


def _segment_ink(ink: np.ndarray, work: _Work = UNBOUNDED) -> list[list[Segment]]:
    """segment_digits on an ink-bright map."""
    height, width = ink.shape
    masks = _ink_masks(ink)
    work.check()
    mask = _remove_ruled_lines(*masks, work)
    work.check()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(4, height * width // 500_000)  # specks of noise and JPEG ringing
    marks = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)
    marks = marks[marks > 0]
    if len(marks) > MAX_MARKS:
        raise ImageError(f"the image holds {len(marks):,} separate marks, more than the {MAX_MARKS:,} one image may "
                         "have: it looks like noise or texture, not lines of digits; crop it to the writing")
    blobs = [_Blob([int(i)], *map(int, (x, y, x + w, y + h, area)))
             for i, (x, y, w, h, area) in zip(marks, stats[marks])]
    blobs = [b for b in blobs if not _is_long_line(b, height, width)]
    if not blobs:
        return []
    # The typical digit height: a median weighted by ink, so that specks, dots and detached
    # bars (many, but small) do not pull it down, and solid blobs (large) do not push it up;
    # flat blobs (dashes, what is left of a ruled line) do not count, nor, where there is other
    # writing, large blobs at the image's edge (what lies beyond the paper).
    strokes = [b for b in blobs if not _is_solid(b) and b.h >= 0.3 * b.w]
    edge = [b.h for b in strokes if _is_edge_like(b, height, width)]
    inner = [b for b in strokes if not _is_edge_like(b, height, width)]
    if edge and not any(b.h >= 0.4 * np.median(edge) for b in inner):
        inner = []  # only specks and dots inside: a tight crop, with every digit at its edge
    strokes = inner or strokes or blobs
    digit_height = _weighted_median(np.array([b.h for b in strokes], float),
                                    np.array([b.area for b in strokes], float))
    # Edge-like blobs that are filled, much larger than the digits, or larger and running
    # along the image's edge (a digit the crop cuts only touches it where a stroke crosses
    # it) are no writing. A line's digits differ in size: a cheque's '1' can stand twice as
    # high as its small '0's.
    rim = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    on_border = np.bincount(rim, minlength=count)
    blobs = [b for b in blobs if not (
        _is_edge_like(b, height, width)
        and (_is_solid(b) or b.h > 2.5 * digit_height or b.w > 4 * digit_height
             or (b.h > 1.5 * digit_height and on_border[b.ids[0]] > 0.1 * max(b.w, b.h))))]
    blobs = [b for b in blobs if not (_is_solid(b) and min(b.w, b.h) > 1.5 * digit_height)]
    blobs = _merge_pieces(blobs, digit_height, work)
    # Specks next to digit-sized ink, and bits of things cut off by the image's edge (line
    # ends, a neighbouring line's tips): a digit there keeps most of its height.
    blobs = [b for b in blobs if max(b.w, b.h) >= 0.2 * digit_height
             and not (b.h < 0.6 * digit_height and _touches_border(b, height, width))]
    segments = []
    for line in _group_lines(blobs, digit_height, work):
        work.check()
        segments.append([
            Segment((b.x0, b.y0, b.w, b.h), np.isin(labels[b.y0:b.y1, b.x0:b.x1], b.ids), kind)
            for b, kind in zip(line, _line_kinds(line, digit_height), strict=True)
        ])
    return segments


# --- 5. reading ---------------------------------------------------------------------------


def _cut(segment: Segment, start: int, stop: int) -> Segment | None:
    """The part of a segment between two columns, its box shrunk to its ink (None if empty)."""
    mask = segment.mask[:, start:stop]
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    x, y, _, _ = segment.box
    return Segment((x + start, y + int(rows[0]), stop - start, int(rows[-1] - rows[0] + 1)),
                   mask[rows[0]:rows[-1] + 1], "digit")


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
            minima = [lo + i for i in range(1, len(window) - 1)
                      if window[i] <= window[i - 1] and window[i] <= window[i + 1]]
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
    x, y, w, h = segment.box
    margin = max(2, round(0.1 * max(w, h)))
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(ink.shape[1], x + w + margin), min(ink.shape[0], y + h + margin)
    region = ink[y0:y1, x0:x1]
    keep = np.zeros(region.shape, np.uint8)
    keep[y - y0:y - y0 + h, x - x0:x - x0 + w] = segment.mask
    # Grow the mask a little to take in the soft edges of strokes, but never another digit's
    # ink: a cut part stays within its own columns.
    grow = max(1, round(0.03 * h))
    keep = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    keep[:, : x - x0] = 0
    keep[:, x - x0 + w:] = 0
    inside = keep.astype(bool)
    # Stretch to the ink's own contrast: paper level (median outside the strokes) to 0, the
    # strokes' 95th percentile to 1, so that a digit in a fainter part of the page looks like
    # MNIST's full-strength ink (ink_map's stretch is one for the whole image).
    paper = float(np.median(region[~inside])) if (~inside).any() else float(region.min())
    full = float(np.percentile(region[inside], 95)) if inside.any() else paper + 1
    strength = np.clip((region - paper) / max(full - paper, 1e-3), 0, 1) * inside
    try:
        return center_digit(strength.astype(np.float32))
    except ImageError:
        return None


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


def _scaled_box(box: Box, scale: float) -> Box:
    x, y, w, h = box
    return (round(x * scale), round(y * scale), max(1, round(w * scale)), max(1, round(h * scale)))


def _union(boxes: list[Box]) -> Box:
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _plans(lines: list[list[Segment]], work: _Work
           ) -> tuple[list[tuple[list[Segment], list[tuple[Segment, list[list[Segment]], float]]]], list[Segment]]:
    """Every way to read every segment, as lists of pieces, line by line: [(line, [(segment, its
    options, the line's height)])]; and all the pieces, which go through the model in one batch."""
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


def read(image, model, *, unsure_below: float = UNSURE_BELOW, max_pixels: int = MAX_PIXELS,
         time_limit: float | None = None, cancelled: Callable[[], bool] | None = None) -> Reading:
    """Read every line of digits in an image.

    image: anything `preprocess.load_image` takes (a path, bytes, a PIL image, an array: grey
    float in [0, 1], uint8 grey or RGB); model: a `digitlab.Model` for 28x28 digits (its classes are the digit texts);
    unsure_below: a digit whose top probability is lower reads as '?' (its candidates stay);
    max_pixels: a larger image is refused (preprocess.ImageTooLargeError) from its header;
    time_limit: seconds the whole reading may take (None: no limit), else ReadingStopped;
    cancelled: a callable, polled while reading, whose True stops it with ReadingStopped (the
    service's, once the client has hung up). An image with more than MAX_MARKS separate marks or
    MAX_PIECES candidate digits is refused (ImageError) before they are merged or classified.
    """
    if not 0 <= unsure_below <= 1:
        raise ConfigError(f"unsure_below must lie in [0, 1], got {unsure_below}")
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"time_limit must be positive seconds, got {time_limit}")
    work = _Work(time_limit, cancelled)
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
    ink = _ink(grey)
    if ink is None:
        return Reading([], width, height)
    work.check()
    plans, pieces = _plans(_segment_ink(ink, work), work)
    if len(pieces) > MAX_PIECES:
        raise ImageError(f"the image holds {len(pieces):,} candidate digits, more than the {MAX_PIECES:,} one image "
                         "may have: it looks like noise or texture, not lines of digits; crop it to the writing")
    index = {id(p): i for i, p in enumerate(pieces)}
    probabilities = np.zeros((len(pieces), len(model.classes)), np.float32)  # stays 0: no stroke to read
    crops = []
    for piece in pieces:  # 4-6 ms each
        work.check()
        crops.append(_mnist_crop(ink, piece))
    readable = [i for i, crop in enumerate(crops) if crop is not None]
    if readable:
        probabilities[readable] = model.predict_proba(np.stack([crops[i] for i in readable]))

    def digit(piece: Segment) -> Digit:
        p = probabilities[index[id(piece)]]
        top = np.argsort(p)[::-1][:3]
        candidates = [(model.classes[k], round(float(p[k]), 4)) for k in top]
        text = candidates[0][0] if p[top[0]] >= unsure_below else UNSURE
        return Digit(text, _scaled_box(piece.box, scale), float(p[top[0]]), candidates)

    def score(option: list[Segment], width: int, line_height: float) -> float:
        """How likely reading the segment as these parts is right: the product of the parts'
        top probabilities, times a prior on their width. Cut halves of one wide digit often
        look like digits too (a 0 as '6' and '7'), and two touching digits can look like one
        (a 95 as '8'): parts wider than 1.2 line heights count e^-4 less per line height more.
        (On 500 generated pages, with digitnet trained for 2 epochs, this misjudged 5 of 496
        wide blobs as one digit or two; the product alone 11, a geometric mean 17.) A cut can
        also slice a tick off a digit (a 4's tip read as '1'): parts less than 0.8 as high as
        the tallest part count e^-4 less per part height less."""
        sure = float(np.prod([probabilities[index[id(p)]].max() for p in option]))
        height = max(p.box[3] for p in option)
        short = sum(max(0.0, 0.8 - p.box[3] / height) for p in option)
        return sure * math.exp(-4 * max(0.0, width / (len(option) * line_height) - 1.2) - 4 * short)

    result = []
    for line, plan in plans:
        digits = []
        for segment, options, line_height in plan:
            if not options:
                text = _punctuation(segment.box, [s.box for s in line if s.kind != "mark"])
                digits.append(Digit(text, _scaled_box(segment.box, scale), 0.0, []))
                continue
            best = max(options, key=lambda option: score(option, segment.box[2], line_height))
            digits += [digit(p) for p in best]
        result.append(Line(digits, _union([d.box for d in digits])))
    return Reading(result, width, height)


# --- showing what was read ----------------------------------------------------------------

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
        raise ConfigError(f"the image is {canvas.shape[1]}x{canvas.shape[0]}, the reading is of a "
                          f"{reading.width}x{reading.height} image")
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
            x, y, w, h = _scaled_box(d.box, scale)
            colour = UNSURE_COLOUR if d.text == UNSURE else SURE_COLOUR
            cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
            label = d.text if d.text != UNSURE or not d.candidates else f"?{d.candidates[0][0]}"
            font_scale = max(0.4, h / 60)
            (_, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            baseline_y = y - 3 if y - 3 - text_h >= 0 else y + h + text_h + 3
            cv2.putText(canvas, label, (x, baseline_y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, thickness,
                        cv2.LINE_AA)
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
