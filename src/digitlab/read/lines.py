"""Step 4 of reading, the lines: digit-sized blobs chained left to right into lines of writing
(marks joining the line they overlap), diagonal writing read along its slant, and each blob's
kind judged against its line's digits."""

from __future__ import annotations

import math
import statistics

import numpy as np

from .blobs import Blob
from .limits import UNBOUNDED, WorkLimits


def group_lines(blobs: list[Blob], digit_height: float, work: WorkLimits = UNBOUNDED) -> list[list[Blob]]:
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
    lines: list[list[Blob]] = []
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
    extent = np.array(
        [
            [min(b.cx for b in line), max(b.cx for b in line), min(b.y0 for b in line), max(b.y1 for b in line)]
            for line in lines
        ]
    ).reshape(-1, 4)  # cx0, cx1, y0, y1
    for blob in (b for b in blobs if b.h < 0.5 * digit_height):
        work.check()
        best, best_overlap = None, 0.0
        for k in np.flatnonzero(
            (extent[:, 0] - reach <= blob.cx)
            & (extent[:, 1] + reach >= blob.cx)
            & (extent[:, 2] < blob.y1)
            & (extent[:, 3] > blob.y0)
        ):
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


def _join_slanted(lines: list[list[Blob]], digit_height: float) -> list[list[Blob]]:
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
    return [
        sorted(
            everything,
            key=lambda b: (b.cx - centres[:, 0].mean()) * major[0] + (b.cy - centres[:, 1].mean()) * major[1],
        )
    ]


def line_kinds(line: list[Blob], digit_height: float) -> list[str]:
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
