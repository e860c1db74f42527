"""Step 1 of reading, the ink: the ink-bright map of a grey image, masks of its ink robust to
uneven light, and the measures of the writing the later steps scale their tests by (stroke
width, writing height)."""

from __future__ import annotations

import cv2
import numpy as np

from ..preprocess import ImageError, ink_map


def ink_image(grey: np.ndarray) -> np.ndarray | None:
    """preprocess.ink_map's ink-bright map, or None for an image where no ink stands out."""
    try:
        ink, _ = ink_map(grey)
    except ImageError:  # a blank page: nothing to read
        return None
    return np.asarray(ink, np.float32)


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


def ink_masks(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def writing_height(mask: np.ndarray) -> float | None:
    """The height of the writing in a mask, or None where nothing looks like writing: the
    median height, weighted by area, of the components less than half the image wide and not
    flat (ruled lines, dashes), nor as thin for their height as a vertical line -- but as high
    as the image, for a tight crop of a line of digits (a cheque's amount box) has digits that
    fill it."""
    height, width = mask.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    w, h, area = (stats[1:, k].astype(float) for k in (cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA))
    writing = (w < width / 2) & (h >= 0.3 * w) & ~((h > height / 2) & (area / h < h / 30))
    return weighted_median(h[writing], area[writing]) if writing.any() else None


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


# Where the sheet of paper does not fill the photo (a webcam's view of a desk, a dark band of
# clothing above the page), what lies around it is no ground to measure ink against: its edges
# read as strokes and its darkness decides the polarity. PAPER_* bound when a sheet is taken to be
# there: brighter than its surroundings by this much (of black to white), this share of the photo.
PAPER_CONTRAST = 0.2
PAPER_AREA = (0.06, 0.9)
PAPER_WORK = 256  # the sheet is looked for at most this many pixels across
# Smaller images are crops, not photos with a sheet in them: the closing that takes the writing away
# spans 4% of the image, under 13 px below this, narrower than the strokes of writing that fills a
# crop (a 50x110 cheque amount's are 5-6 px), so the writing itself would pass for the surroundings
# and be painted over (7 of 95 held-out ORAND-CAR-A training strings read nothing).
PAPER_MIN_SIDE = 320


def paper_mask(grey: np.ndarray) -> np.ndarray | None:
    """The sheet of paper in a photo where it does not fill the frame, as a bool mask (H, W), kept
    a little inside the sheet's edge; None where no sheet stands out (a scan, a cheque, a photo
    filled by its page, chalk on a board).

    The writing is taken away first (a closing brightens over strokes narrower than 4% of the
    photo), then Otsu splits the brighter surface from its surroundings; the sheet is the largest
    bright region, its holes filled, when it covers PAPER_AREA of the photo, is PAPER_CONTRAST
    brighter than the rest and ends in a step (an edge, not light falling off)."""
    height, width = grey.shape
    if max(height, width) < PAPER_MIN_SIDE:
        return None
    shrink = min(1.0, PAPER_WORK / max(height, width))
    small = cv2.resize(
        np.asarray(grey, np.float32), (max(1, round(width * shrink)), max(1, round(height * shrink))), cv2.INTER_AREA
    )
    if min(small.shape) < 16:
        return None
    window = _odd(0.04 * max(small.shape))
    surface = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (window, window)))
    levels = np.clip(surface * 255, 0, 255).astype(np.uint8)
    region = _brightest_surface(levels, np.ones(levels.shape, bool))
    if region is None or not _stands_out(surface, region, ~region):
        return None
    # Three surfaces (a dark band, a grey desk, the white sheet): Otsu's first split takes the desk
    # with the sheet, and the step between them would be read as a stroke. The brighter part of the
    # region, where it stands out of the rest as a sheet does, is the sheet.
    inner = _brightest_surface(levels, region)
    if inner is not None and _stands_out(surface, inner, region & ~inner):
        region = inner
    # Its holes filled (the larger marks on it, which the closing left), not its hull: a tilted
    # sheet's hull would take in the dark corners of the desk beside its edges.
    # Only holes as small as marks (under 1% of the photo): a dark object enclosed by bright ones is
    # no part of the sheet.
    count, outside, stats, _ = cv2.connectedComponentsWithStats((~region).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
    small_holes = [k for k in range(1, count) if k not in border and stats[k, cv2.CC_STAT_AREA] < 0.01 * region.size]
    sheet = (region | np.isin(outside, small_holes)).astype(np.uint8)
    inset = _odd(0.02 * max(small.shape))
    sheet = cv2.erode(sheet, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (inset, inset)))
    return cv2.resize(sheet, (width, height), interpolation=cv2.INTER_NEAREST) > 0


def _stands_out(surface: np.ndarray, region: np.ndarray, rest: np.ndarray) -> bool:
    """Whether `region` is a sheet against `rest`: PAPER_AREA of the photo, PAPER_CONTRAST brighter,
    and ending in a step."""
    if not PAPER_AREA[0] <= region.mean() <= PAPER_AREA[1] or not rest.any():
        return False
    if float(np.median(surface[region])) - float(np.median(surface[rest])) < PAPER_CONTRAST:
        return False
    # A sheet's edge is a step: just inside it the surface is clearly brighter than just outside. Light
    # falling off across a page that fills the photo only slopes (a webcam's vignetting, 0.2 over
    # the frame): no step there, so no sheet.
    ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = region.astype(np.uint8)
    just_inside = region & (cv2.erode(mask, ring) == 0)
    just_outside = rest & (cv2.dilate(mask, ring) > 0)
    if not just_inside.any() or not just_outside.any():
        return False
    return float(np.median(surface[just_inside])) - float(np.median(surface[just_outside])) >= PAPER_CONTRAST / 2


def _brightest_surface(levels: np.ndarray, within: np.ndarray) -> np.ndarray | None:
    """The largest connected region above Otsu's threshold of `levels` inside `within` (None: none)."""
    threshold, _ = cv2.threshold(levels[within].reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = ((levels > threshold) & within).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if count < 2:
        return None
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def on_paper(grey: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The part of a photo to read: where a sheet of paper does not fill it (paper_mask), the
    sheet's bounding box, what lies around the sheet within it painted the sheet's own level, and
    the light flattened (each pixel divided by the brightness of the surface under it, a closing
    wider than any stroke), so that a grey desk or a shadow beside the writing reads as ground;
    the photo as it is where no sheet stands out. Returns it and its top-left corner in the photo."""
    sheet = paper_mask(grey)
    if sheet is None:
        return grey, (0, 0)
    rows, cols = np.flatnonzero(sheet.any(1)), np.flatnonzero(sheet.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop, inside = grey[top:bottom, left:right], sheet[top:bottom, left:right]
    level = float(np.median(crop[inside]))
    painted = np.where(inside, crop, np.float32(level)).astype(np.float32)
    # The surface is found at most 512 pixels across (a closing with a window 3% of the photo), then
    # enlarged: the light changes slowly, and a 48-pixel window over a whole phone photo is slow.
    height, width = painted.shape
    shrink = min(1.0, 512 / max(height, width))
    small = cv2.resize(painted, (max(1, round(width * shrink)), max(1, round(height * shrink))), cv2.INTER_AREA)
    window = _odd(0.03 * max(small.shape))
    surface = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (window, window)))
    surface = cv2.resize(surface, (width, height), interpolation=cv2.INTER_LINEAR)
    flat = painted / np.maximum(surface, 1e-3) * level
    # What lies around the sheet is now the sheet's level exactly, without its grain: then the
    # image's border, which ink_map reads the ground's noise from, would say the paper has none,
    # and the paper's own grain would pass for ink (small writing on a phone photo read nothing).
    # It gets the sheet's grain: seeded noise of the sheet's spread about its flattened level.
    grain = 1.4826 * float(np.median(np.abs(flat[inside] - level)))
    outside = ~inside
    flat[outside] += np.random.default_rng(0).normal(0, grain, int(outside.sum())).astype(np.float32)
    return np.clip(flat, 0, 1).astype(np.float32), (int(left), int(top))
