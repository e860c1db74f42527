"""Steps 1-4 of reading tied together, before any model looks: an ink-bright image -> its ink
masks -> ruled lines removed -> marks as blobs, clutter dropped, pieces of a digit merged ->
lines of candidate digits (Segments), each a digit, touching digits, or a mark."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..preprocess import ImageError
from .blobs import Blob, is_edge_like, is_long_line, is_solid, merge_pieces, touches_border
from .ink import ink_image, ink_masks, weighted_median
from .limits import MAX_MARKS, UNBOUNDED, WorkLimits
from .lines import group_lines, line_kinds
from .results import Box
from .ruled_lines import remove_ruled_lines


@dataclass(frozen=True)
class Segment:
    """A candidate digit found on a page, before any model has looked at it.

    kind: 'digit'; 'touching' (much wider than the line's digits: probably several that touch,
    `read` tries cuts); 'mark' (a dash, dot or other stroke too small or too flat to be a digit).
    """

    box: Box  # in the pixels of the image given to segment_digits
    mask: np.ndarray  # (h, w) bool: this segment's ink inside its box
    kind: str = "digit"


def segment_digits(grey: np.ndarray) -> list[list[Segment]]:
    """Candidate digits in a grey image (float [0, 1], either polarity), grouped in lines.

    Lines come top to bottom, segments left to right; boxes are in `grey`'s pixels. Nothing
    is classified: a segment's kind says whether it looks like one digit, several touching
    digits, or a mark that is no digit.
    """
    ink = ink_image(grey)
    return [] if ink is None else segment_ink(ink)


def segment_ink(ink: np.ndarray, work: WorkLimits = UNBOUNDED) -> list[list[Segment]]:
    """segment_digits on an ink-bright map."""
    height, width = ink.shape
    masks = ink_masks(ink)
    work.check()
    mask = remove_ruled_lines(*masks, work)
    work.check()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(4, height * width // 500_000)  # specks of noise and JPEG ringing
    marks = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)
    marks = marks[marks > 0]
    if len(marks) > MAX_MARKS:
        raise ImageError(
            f"the image holds {len(marks):,} separate marks, more than the {MAX_MARKS:,} one image may "
            "have: it looks like noise or texture, not lines of digits; crop it to the writing"
        )
    blobs = [
        Blob([int(i)], *map(int, (x, y, x + w, y + h, area))) for i, (x, y, w, h, area) in zip(marks, stats[marks])
    ]
    blobs = [b for b in blobs if not is_long_line(b, height, width)]
    if not blobs:
        return []
    digit_height = _digit_height(blobs, height, width)
    # Edge-like blobs that are filled, much larger than the digits, or larger and running
    # along the image's edge (a digit the crop cuts only touches it where a stroke crosses
    # it) are no writing. A line's digits differ in size: a cheque's '1' can stand twice as
    # high as its small '0's.
    rim = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    on_border = np.bincount(rim, minlength=count)
    blobs = [
        b
        for b in blobs
        if not (
            is_edge_like(b, height, width)
            and (
                is_solid(b)
                or b.h > 2.5 * digit_height
                or b.w > 4 * digit_height
                or (b.h > 1.5 * digit_height and on_border[b.ids[0]] > 0.1 * max(b.w, b.h))
            )
        )
    ]
    blobs = [b for b in blobs if not (is_solid(b) and min(b.w, b.h) > 1.5 * digit_height)]
    blobs = merge_pieces(blobs, digit_height, work)
    # Specks next to digit-sized ink, and bits of things cut off by the image's edge (line
    # ends, a neighbouring line's tips): a digit there keeps most of its height.
    blobs = [
        b
        for b in blobs
        if max(b.w, b.h) >= 0.2 * digit_height and not (b.h < 0.6 * digit_height and touches_border(b, height, width))
    ]
    segments = []
    for line in group_lines(blobs, digit_height, work):
        work.check()
        segments.append(
            [
                Segment((b.x0, b.y0, b.w, b.h), np.isin(labels[b.y0 : b.y1, b.x0 : b.x1], b.ids), kind)
                for b, kind in zip(line, line_kinds(line, digit_height), strict=True)
            ]
        )
    return segments


def _digit_height(blobs: list[Blob], height: int, width: int) -> float:
    """The typical digit height: a median weighted by ink, so that specks, dots and detached
    bars (many, but small) do not pull it down, and solid blobs (large) do not push it up;
    flat blobs (dashes, what is left of a ruled line) do not count, nor, where there is other
    writing, large blobs at the image's edge (what lies beyond the paper)."""
    strokes = [b for b in blobs if not is_solid(b) and b.h >= 0.3 * b.w]
    edge = [b.h for b in strokes if is_edge_like(b, height, width)]
    inner = [b for b in strokes if not is_edge_like(b, height, width)]
    if edge and not any(b.h >= 0.4 * np.median(edge) for b in inner):
        inner = []  # only specks and dots inside: a tight crop, with every digit at its edge
    strokes = inner or strokes or blobs
    return weighted_median(np.array([b.h for b in strokes], float), np.array([b.area for b in strokes], float))
