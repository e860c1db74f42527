"""Step 3 of reading, the digits: connected components of the ink as blobs, the tests that tell
clutter from writing (paper edges, long thin lines, solid blobs), and the merging of the pieces
of one digit."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .limits import UNBOUNDED, WorkLimits


@dataclass
class Blob:
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

    def joined(self, other: Blob) -> Blob:
        return Blob(
            self.ids + other.ids,
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
            self.area + other.area,
        )


def touches_border(blob: Blob, height: int, width: int) -> bool:
    return blob.x0 == 0 or blob.y0 == 0 or blob.x1 == width or blob.y1 == height


def is_edge_like(blob: Blob, height: int, width: int) -> bool:
    """Touching the image's edge and more than half as wide or high as the image: the paper's
    edge, the table beyond it, a vignetted corner -- or, in a tight crop of a line of digits (a
    cheque's amount box), a digit that the crop cuts. `segment_ink` tells them apart by size."""
    return touches_border(blob, height, width) and (blob.w > width / 2 or blob.h > height / 2)


def is_long_line(blob: Blob, height: int, width: int) -> bool:
    """A long thin line (a fold, a stray pen line, what ruled-line removal left): not writing."""
    length = math.hypot(blob.w, blob.h)
    return length > 0.4 * max(height, width) and length / (blob.area / length) > 40


def is_solid(blob: Blob) -> bool:
    """Filled more than 60% of its box and not thin: a blot, shadow or object (a bold 0 or 8
    drawn with a marker can be too; only solid blobs larger than the digits are dropped)."""
    return blob.area > 0.6 * blob.w * blob.h and min(blob.w, blob.h) > 0.3 * max(blob.w, blob.h)


def merge_pieces(blobs: list[Blob], digit_height: float, work: WorkLimits = UNBOUNDED) -> list[Blob]:
    """Join the pieces of one digit, as long as together they are no taller than a digit and
    not much wider than the larger piece or than tall: pieces stacked close together, one
    inside the other's box (a broken stroke), a small piece right beside a larger one, or a
    flat bar at the top of a digit (a 5 whose bar was written apart, often off to the right)."""
    near = 0.1 * digit_height
    tallest = 1.35 * digit_height  # no two pieces make one digit higher than this
    merged = True
    while merged:  # repeat until stable: a joined blob is larger and may now meet another piece
        merged = False
        blobs.sort(key=lambda b: b.x0)
        for i in range(len(blobs)):
            work.check()
            j = i + 1
            while i < len(blobs) and j < len(blobs) and blobs[j].x0 <= blobs[i].x1 + 2 * near:  # x ranges meet
                a, b = blobs[i], blobs[j]
                # _belong_together's first test, without building the joint blob: a grid of
                # 44x44 dots made 41,624 pairs, and merging took 0.59 s under cProfile, 0.28 s so
                if max(a.y1, b.y1) - min(a.y0, b.y0) > tallest:
                    j += 1
                elif _belong_together(a, b, digit_height):
                    blobs[i] = blobs[i].joined(blobs.pop(j))
                    merged, j = True, i + 1
                else:
                    j += 1
    return blobs


def _belong_together(a: Blob, b: Blob, digit_height: float) -> bool:
    """Whether two pieces are parts of one digit (merge_pieces' rules)."""
    near = 0.1 * digit_height
    joint = a.joined(b)
    if joint.h > 1.35 * digit_height:
        return False
    small, big = sorted((a, b), key=lambda blob: blob.w * blob.h)
    x_overlap = min(a.x1, b.x1) - max(a.x0, b.x0)  # negative: the gap between them
    y_overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
    close = min(x_overlap, y_overlap) >= -near
    # A 5's bar: flat, over the upper half of the digit's right side, up to 0.2 digit
    # heights away (MNIST's 5s show all of these).
    bar = (
        small.h < 0.35 * digit_height
        and small.w >= 2 * small.h
        and big.h >= 0.5 * digit_height
        and small.cy < big.y0 + 0.5 * big.h
        and small.x0 >= big.x0 + 0.3 * big.w
        and min(x_overlap, y_overlap) >= -2 * near
        and joint.w <= 1.3 * joint.h
    )
    # A speck or tick off a digit's upper part (an MNIST 4's broken-off tip, a pen's
    # stray touch), that with it stays no wider than 1.5 times its height: low beside a
    # digit it may be a decimal point instead.
    tick = (
        max(small.w, small.h) < 0.4 * digit_height
        and big.h >= 0.5 * digit_height
        and close
        and small.cy < big.y0 + 0.6 * big.h
        and joint.w <= 1.5 * joint.h
    )
    if joint.w > max(big.w, joint.h, 0.6 * digit_height):
        return bar or tick
    # One above the other, apart or overlapping a little (a 7's bar reaching down over its
    # stem); digits side by side share most of their height instead.
    stacked = x_overlap >= 0.5 * min(a.w, b.w) and -0.15 * digit_height <= y_overlap <= 0.6 * min(a.h, b.h)
    inside = x_overlap > 0 and y_overlap > 0 and x_overlap * y_overlap >= 0.5 * small.w * small.h
    shorter = min(a, b, key=lambda blob: max(blob.w, blob.h))
    beside = max(shorter.w, shorter.h) < 0.65 * digit_height and close
    return bar or stacked or (inside and small.h < 0.7 * digit_height) or beside
