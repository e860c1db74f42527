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
