"""Step 2 of reading, the clean-up's first part: ruled and lined-paper lines removed from the ink
mask along their whole axis, except where strokes cross or lie on them. (The rest of the
clean-up, clutter and specks, judges connected components: blobs.py, segment.py.)"""

from __future__ import annotations

import cv2
import numpy as np

from .ink import writing_height
from .limits import UNBOUNDED, WorkLimits


def remove_ruled_lines(mask: np.ndarray, faint: np.ndarray, work: WorkLimits = UNBOUNDED) -> np.ndarray:
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
    cleaned = mask.copy()
    for horizontal in (True, False):
        _remove_lines_along(cleaned, mask, faint, horizontal, work)
    return cleaned


def _kernel(along: int, across: int, horizontal: bool) -> np.ndarray:
    """A structuring element `along` pixels along the lines looked for and `across` across them."""
    return np.ones((across, along) if horizontal else (along, across), np.uint8)


def _remove_lines_along(
    cleaned: np.ndarray, mask: np.ndarray, faint: np.ndarray, horizontal: bool, work: WorkLimits
) -> None:
    """Remove from `cleaned`, in place, the ruled lines that run one way (horizontal or vertical)."""
    height, width = mask.shape
    writing = writing_height(cleaned)
    if writing is not None:
        length = max(25, round(2.5 * writing))
    else:
        length = max(25, width // 5 if horizontal else height // 2)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(_long_runs(faint, length, horizontal), connectivity=8)
    strokes_by_width: dict[int, np.ndarray] = {}  # the opening below, for each line thickness met
    for i in range(1, count):
        work.check()
        x, y, w, h, area = (int(v) for v in stats[i])
        run = w if horizontal else h
        thickness = area / run - 2  # less the pixel added each side
        if run < length or thickness > run / 30:
            continue
        ends = _axis(labels[y : y + h, x : x + w] == i, x, y, 2 * max(height, width))
        line_px = _line_thickness(faint, ends, thickness, horizontal)
        if line_px - 1 > max(2, run / 30):
            continue  # a slanted stroke, of which the opening kept a thin sliver: not a line
        # Ink that reaches further across than the line is thick belongs to a stroke that
        # crosses the line or lies on it: it stays.
        if line_px not in strokes_by_width:
            strokes_by_width[line_px] = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _kernel(1, line_px + 2, horizontal))
        _erase_line(cleaned, strokes_by_width[line_px], ends, line_px, horizontal)


def _long_runs(faint: np.ndarray, length: int, horizontal: bool) -> np.ndarray:
    """The straight runs of ink at least `length` long one way, uint8 0/255.

    Thresholding leaves a line ragged (a pixel up or down, breaks in noise and JPEG blocks):
    thicken it by a pixel each side and bridge gaps before looking for long straight runs --
    short gaps in anything, gaps up to 1/8 of its length where only hairlines (under 4 px
    across) are left, as they are of a faint line."""
    hairlines = cv2.subtract(faint, cv2.morphologyEx(faint, cv2.MORPH_OPEN, _kernel(1, 4, horizontal)))
    opened = np.zeros_like(faint)
    for source, gap in ((faint, length // 20), (hairlines, length // 8)):
        bridged = cv2.morphologyEx(
            cv2.dilate(source, _kernel(1, 3, horizontal)), cv2.MORPH_CLOSE, _kernel(max(5, gap), 1, horizontal)
        )
        opened |= cv2.morphologyEx(bridged, cv2.MORPH_OPEN, _kernel(length, 1, horizontal))
    return opened


def _axis(component: np.ndarray, x: int, y: int, far: int) -> tuple:
    """The axis of a run (its pixels `component`, a bool array whose corner lies at (x, y)), as
    two ends `far` pixels either side of its centre: extended across the whole image, the parts
    of one line that light or noise broke off, or that digits standing on it hid, go with it."""
    ys, xs = np.nonzero(component)
    vx, vy, x0, y0 = cv2.fitLine(
        np.column_stack([xs + x, ys + y]).astype(np.float32), cv2.DIST_L2, 0, 0.01, 0.01
    ).ravel()
    return (round(x0 - far * vx), round(y0 - far * vy)), (round(x0 + far * vx), round(y0 + far * vy))


def _line_thickness(faint: np.ndarray, ends: tuple, thickness: float, horizontal: bool) -> int:
    """A line's thickness in pixels: the median count of ink pixels across it in the sensitive
    mask, in a band twice as wide as its component suggests (`thickness`), plus one for the pixel
    more that JPEG and blur add here and there."""
    (r0, r1, c0, c1), band = _band(ends, 2 * max(1, round(thickness)) + 4, faint.shape)
    counts = np.count_nonzero(cv2.bitwise_and(faint[r0:r1, c0:c1], band), axis=0 if horizontal else 1)
    return round(float(np.median(counts[counts > 0]))) + 1


def _erase_line(cleaned: np.ndarray, strokes: np.ndarray, ends: tuple, line_px: int, horizontal: bool) -> None:
    """Remove one line, `line_px` thick along `ends`, from `cleaned` in place, but not the ink of
    `strokes` (the mask opened across the line: what reaches further across than it is thick).

    The work is done in the band's box, grown by the closing's reach below (the same pixels as on
    the whole image): 330 ruled lines 6 px apart took 12.4 s on the whole image, line by line, and
    take 0.1 s so."""
    (r0, r1, c0, c1), band = _band(ends, line_px + 2, cleaned.shape, pad=line_px + 7)
    removed = cv2.subtract(band, strokes[r0:r1, c0:c1])
    here = cleaned[r0:r1, c0:c1]
    kept = cv2.subtract(here, removed)
    # Strokes that cross the line at a slant are thin across it: re-join them where ink
    # continues on both sides of the line.
    rejoined = cv2.morphologyEx(kept, cv2.MORPH_CLOSE, _kernel(1, line_px + 6, horizontal))
    here[:] = cv2.bitwise_or(kept, cv2.bitwise_and(rejoined, cv2.bitwise_and(removed, here)))


def _band(
    ends: tuple, thickness: int, shape: tuple[int, int], pad: int = 0
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
