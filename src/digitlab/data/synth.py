"""Synthetic pages of handwritten digit strings with known truth, for tests and `bench read`.

    pages = make_pages(100, seed=0, images=mnist_test_images, labels=mnist_test_labels)
    page, truth = pages[0]        # (H, W, 3) uint8 RGB, PageTruth(lines=['4071', '93'], boxes=...)

MNIST test digits are composed into 1-3 lines of 2-8 digits on paper-like ground: light grey or
cream with noise, blotches and a lighting gradient, optionally ruled; the writing varies in size
(digit height 20-80 px), gaps (touching or overlapping pairs on a quarter of the pages), slant,
baseline drift and ink colour; the page is then blurred and JPEG-compressed. Every draw comes
from the `numpy.random.Generator` passed in, so one seed gives the same pages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # (x, y, w, h) in page pixels

# RGB ink colours: black, blue ballpoint, dark grey pencil-ish.
INKS = ((25, 25, 30), (30, 45, 140), (75, 75, 80))
MNIST_BOX = 20  # MNIST fits each digit's larger side into 20 of its 28 pixels


@dataclass(frozen=True)
class PageTruth:
    """What a page says: one string per line (top to bottom) and each digit's ink box."""

    lines: list[str]
    boxes: list[list[Box]]  # boxes[i][j]: digit j of line i

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _as_digit_arrays(digits_source) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) as numpy: images (N, 28, 28) uint8 (a channel axis of 1 is dropped)."""
    images, labels = digits_source
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    return images, np.asarray(labels)


def render_digit(image: np.ndarray, height: float, shear: float) -> np.ndarray:
    """A 28x28 uint8 digit scaled so MNIST's 20-px box becomes `height` px, slanted by `shear`
    (dx per dy; positive leans right), cropped to its ink: float32 alpha in [0, 1]."""
    scale = height / MNIST_BOX
    size = max(2, round(28 * scale))
    big = cv2.resize(image.astype(np.float32) / 255, (size, size), interpolation=cv2.INTER_LINEAR)
    pad = int(abs(shear) * size) + 2
    # x' = x + shear * (centre_y - y): the top moves right for a positive shear, the centre stays.
    matrix = np.float32([[1, -shear, shear * size / 2 + pad], [0, 1, 0]])
    slanted = cv2.warpAffine(big, matrix, (size + 2 * pad, size), flags=cv2.INTER_LINEAR)
    rows, cols = np.nonzero(slanted > 0.1)
    return np.clip(slanted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1], 0, 1)


def _paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Light grey or cream paper (float32 RGB 0..255) with fine noise and soft blotches."""
    grey = rng.uniform(195, 250)
    cream = rng.uniform(0, 1)  # 0: neutral grey, 1: cream (less blue, a little less green)
    colour = np.array([grey, grey - 8 * cream, grey - 30 * cream], np.float32)
    page = np.empty((height, width, 3), np.float32)
    page[:] = colour
    blotches = cv2.resize(
        rng.normal(0, 1, (max(2, height // 40), max(2, width // 40))).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    page += (rng.uniform(0, 4) * blotches)[..., None]
    page += rng.normal(0, rng.uniform(1, 5), (height, width, 1)).astype(np.float32)
    return page


def _lighting(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """A multiplicative light field: 1 on the bright side falling linearly to 1 - strength."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    return 1 - strength * ramp


@dataclass(frozen=True)
class PageStyle:
    """How one page is written and photographed: what `make_page` draws once per page."""

    n_lines: int
    height: float  # digit height in px (MNIST's 20-px box scaled to it)
    touching: bool  # one adjacent pair per line touches or overlaps
    ruled: bool
    lighting: float  # how much darker the dark side is
    drift: float  # baseline slope dy/dx
    line_gap: float  # between lines, in digit heights
    jpeg_quality: int
    shear: float  # one writer: one slant per page, jittered per digit
    strength: float  # how dark the ink is at full MNIST intensity


Placed = tuple[np.ndarray, float, float]  # a digit's alpha image and its top-left corner (x, y)


def make_page(
    rng: np.random.Generator,
    digits_source: tuple[np.ndarray, np.ndarray],
    *,
    n_lines: int | None = None,
    n_digits: int | None = None,
    digit_height: float | None = None,
    touching: bool | None = None,
    ruled: bool | None = None,
    lighting: float | None = None,
    drift: float | None = None,
    line_gap: float | None = None,
    jpeg_quality: int | None = None,
) -> tuple[np.ndarray, PageTruth]:
    """One synthetic page: (H, W, 3) uint8 RGB and its `PageTruth`.

    digits_source: (images (N, 28, 28) uint8 ink-bright, labels (N,)) to draw digits from.
    Every keyword left as None is drawn from `rng`: n_lines 1-3; n_digits per line 2-8;
    digit_height 20-80 px; touching (one adjacent pair per line with a gap of -10%..0 of the
    digit height) on 25% of pages; ruled lines on 30%; lighting (how much darker the dark side
    is) 0-0.45; drift (baseline slope dy/dx) -0.04..0.04; line_gap (between lines, in digit
    heights) 0.5-1.2; jpeg_quality 30-90.
    """
    images, labels = _as_digit_arrays(digits_source)
    style = _draw_style(rng, n_lines, digit_height, touching, ruled, lighting, drift, line_gap, jpeg_quality)
    # Lay out every digit in page coordinates before the page exists, then size the page around them.
    placed, line_strings = _lay_out(rng, images, labels, style, n_digits)
    margins = rng.uniform(0.5, 2.0, 4) * style.height  # left, top, right, bottom
    left = min(x for row in placed for _, x, _ in row)
    top = min(y for row in placed for _, _, y in row)
    right = max(x + a.shape[1] for row in placed for a, x, _ in row)
    bottom = max(y + a.shape[0] for row in placed for a, _, y in row)
    width_px = int(np.ceil(right - left + margins[0] + margins[2]))
    height_px = int(np.ceil(bottom - top + margins[1] + margins[3]))
    shift_x, shift_y = margins[0] - left, margins[1] - top

    page = _paper(rng, height_px, width_px)
    if style.ruled:
        _rule(rng, page, style, shift_y, left_margin=margins[0])
    ink_alpha, boxes = _ink_alpha(placed, height_px, width_px, shift_x, shift_y)
    return _photograph(rng, page, ink_alpha, style), PageTruth(lines=line_strings, boxes=boxes)


def _draw_style(
    rng: np.random.Generator, n_lines, height, touching, ruled, lighting, drift, line_gap, jpeg_quality
) -> PageStyle:
    """The page's style: each value given, or drawn from `rng` (in this order: same seed, same pages)."""
    return PageStyle(
        n_lines=n_lines if n_lines is not None else int(rng.integers(1, 4)),
        height=height if height is not None else float(rng.uniform(20, 80)),
        touching=touching if touching is not None else bool(rng.random() < 0.25),
        ruled=ruled if ruled is not None else bool(rng.random() < 0.3),
        lighting=lighting if lighting is not None else float(rng.uniform(0, 0.45)),
        drift=drift if drift is not None else float(rng.uniform(-0.04, 0.04)),
        line_gap=line_gap if line_gap is not None else float(rng.uniform(0.5, 1.2)),
        jpeg_quality=jpeg_quality if jpeg_quality is not None else int(rng.integers(30, 91)),
        shear=rng.uniform(-0.25, 0.25),
        strength=rng.uniform(0.75, 1.0),
    )


def _lay_out(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, style: PageStyle, n_digits: int | None
) -> tuple[list[list[Placed]], list[str]]:
    """Every line's digits, rendered and placed in page coordinates (the first line's top at 0),
    and each line's string."""
    height = style.height
    placed: list[list[Placed]] = []
    line_strings: list[str] = []
    for line in range(style.n_lines):
        count = n_digits if n_digits is not None else int(rng.integers(2, 9))
        picks = rng.integers(0, len(images), count)
        gaps = rng.uniform(0.15, 0.8, count) * height
        if style.touching and count >= 2:
            gaps[rng.integers(0, count - 1)] = rng.uniform(-0.1, 0.0) * height
        baseline = line * height * (1 + style.line_gap)
        x, row = 0.0, []
        for k, index in enumerate(picks):
            alpha = render_digit(
                images[index], height * rng.uniform(0.92, 1.08), style.shear + rng.uniform(-0.05, 0.05)
            )
            h, w = alpha.shape
            # MNIST centres each digit by its centre of mass, so a short digit sits mid-box; keep
            # the bottoms near the baseline (+-5% of the height) as handwriting does.
            top = baseline + height - h + style.drift * x + rng.uniform(-0.05, 0.05) * height
            row.append((alpha, x, top))
            x += w + gaps[k]
        placed.append(row)
        line_strings.append("".join(str(int(labels[i])) for i in picks))
    return placed, line_strings


def _rule(rng: np.random.Generator, page: np.ndarray, style: PageStyle, shift_y: float, left_margin: float) -> None:
    """Ruled lines under every line of writing (the digits stand on them) and between them at the
    same pitch, light blue or grey, 1-3 px; a red margin line when there is room. In place."""
    height_px, width_px = page.shape[:2]
    colour = (150, 180, 225) if rng.random() < 0.5 else (165, 165, 165)
    thickness = max(1, round(style.height / 30))
    pitch = style.height * (1 + style.line_gap)
    y = (shift_y + style.height) % pitch
    while y < height_px:
        cv2.line(page, (0, round(y)), (width_px - 1, round(y)), colour, thickness)
        y += pitch
    if left_margin > 0.8 * style.height:
        x_margin = round(left_margin / 3)
        cv2.line(page, (x_margin, 0), (x_margin, height_px - 1), (220, 120, 120), thickness)


def _ink_alpha(
    placed: list[list[Placed]], height_px: int, width_px: int, shift_x: float, shift_y: float
) -> tuple[np.ndarray, list[list[Box]]]:
    """The page's ink coverage (float32 0..1) with every digit drawn where it was placed, moved by
    (shift_x, shift_y), and each digit's box in page pixels."""
    ink_alpha = np.zeros((height_px, width_px), np.float32)
    boxes: list[list[Box]] = []
    for row in placed:
        line_boxes = []
        for alpha, x, y in row:
            x0, y0 = round(x + shift_x), round(y + shift_y)
            h, w = alpha.shape
            region = ink_alpha[y0 : y0 + h, x0 : x0 + w]
            np.maximum(region, alpha, out=region)  # overlapping strokes of touching digits join
            line_boxes.append((x0, y0, w, h))
        boxes.append(line_boxes)
    return ink_alpha, boxes


def _photograph(rng: np.random.Generator, paper: np.ndarray, ink_alpha: np.ndarray, style: PageStyle) -> np.ndarray:
    """The ink (one colour, jittered) on the paper, under the lighting, perhaps blurred, through a
    JPEG: the (H, W, 3) uint8 RGB page."""
    height_px, width_px = ink_alpha.shape
    ink = np.array(INKS[rng.integers(len(INKS))], np.float32) + rng.uniform(-10, 10, 3)
    coverage = (ink_alpha * style.strength)[..., None]
    page = paper * (1 - coverage) + ink * coverage
    page *= _lighting(rng, height_px, width_px, style.lighting)[..., None]
    sigma = rng.uniform(0, 1.0)
    if sigma > 0.3:
        page = cv2.GaussianBlur(page, (0, 0), sigma)
    page_bgr = cv2.cvtColor(np.clip(page, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    _, encoded = cv2.imencode(".jpg", page_bgr, [cv2.IMWRITE_JPEG_QUALITY, style.jpeg_quality])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def make_pages(n: int, seed: int, images: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, PageTruth]]:
    """`n` random pages from one seeded generator: the same seed gives the same pages."""
    rng = np.random.default_rng(seed)
    source = _as_digit_arrays((images, labels))
    return [make_page(rng, source) for _ in range(n)]


# --- photo scenes: a page of writing photographed in a room -------------------------------------------

SCENE_SIZES = ((640, 480), (640, 480), (640, 480), (1280, 720), (1600, 1200))  # webcams mostly; a phone


def make_scene(rng: np.random.Generator, digits_source: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, PageTruth]:
    """One photo of a sheet of paper with lines of digits on it, as a webcam or phone sees it in a
    room: (H, W, 3) uint8 RGB and its PageTruth (boxes in the photo's pixels).

    The paper does not fill the frame: around it a dark band (clothing, the top of a desk) above or
    below it, a wooden desk, or clutter (boxes and stripes of any colour); the paper's edge, a
    shadow across it, a glare spot; 1-3 lines of 1-8 digits written on it small or large (in a
    1600x1200 phone photo 18-30 px high: a few numbers in a large picture); then a webcam's low
    resolution and noise (a phone's is sharper), blur and JPEG. Digits come from `digits_source`
    ((N, 28, 28) uint8 ink-bright images, labels)."""
    images, labels = _as_digit_arrays(digits_source)
    width, height = SCENE_SIZES[rng.integers(len(SCENE_SIZES))]
    scene = _surroundings(rng, height, width)
    # The sheet: a rectangle 45-85% of the frame each way, tilted up to 6 degrees.
    sheet_w, sheet_h = rng.uniform(0.45, 0.85) * width, rng.uniform(0.45, 0.85) * height
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    angle = rng.uniform(-6, 6)
    corners = cv2.boxPoints(((cx, cy), (sheet_w, sheet_h), angle)).astype(np.int32)
    sheet = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(sheet, corners, 1)
    paper = _paper(rng, height, width)
    scene = np.where(sheet[..., None] > 0, paper, scene)
    # The writing, inside the sheet's upright inner box.
    phone = width >= 1600
    digit_height = rng.uniform(18, 30) if phone else rng.uniform(16, min(60, 0.2 * sheet_h))
    style = replace(
        _draw_style(rng, None, digit_height, None, False, 0.0, None, None, None), n_lines=int(rng.integers(1, 4))
    )
    placed, strings = _lay_out(rng, images, labels, style, int(rng.integers(1, 9)))
    right = max(x + a.shape[1] for row in placed for a, x, _ in row)
    bottom = max(y + a.shape[0] for row in placed for a, _, y in row)
    inner_w, inner_h = sheet_w * 0.8 * np.cos(np.radians(angle)), sheet_h * 0.8 * np.cos(np.radians(angle))
    shrink = min(1.0, inner_w / right, inner_h / bottom)
    if shrink < 1:  # long lines on a small sheet: write smaller
        placed = [[(_scaled(a, shrink), x * shrink, y * shrink) for a, x, y in row] for row in placed]
        right, bottom = right * shrink, bottom * shrink
    left = cx - inner_w / 2 + rng.uniform(0, max(0.0, inner_w - right))
    top = cy - inner_h / 2 + rng.uniform(0, max(0.0, inner_h - bottom))
    ink_alpha, boxes = _ink_alpha(placed, height, width, left, top)
    ink = np.array(INKS[rng.integers(len(INKS))], np.float32) + rng.uniform(-10, 10, 3)
    coverage = (ink_alpha * style.strength)[..., None]
    scene = scene * (1 - coverage) + ink * coverage
    scene = _light_and_lens(rng, scene, sheet, sharp=phone)
    return scene, PageTruth(lines=strings, boxes=boxes)


def _scaled(alpha: np.ndarray, factor: float) -> np.ndarray:
    h, w = alpha.shape
    return cv2.resize(alpha, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def _surroundings(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """What lies around the sheet (float32 RGB 0..255): a dark band above or below a grey desk,
    a wooden desk, or clutter."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # dark clothing or a shadowed wall across the top or the bottom, a grey desk elsewhere
        scene = np.empty((height, width, 3), np.float32)
        scene[:] = rng.uniform(90, 170)
        band = rng.uniform(0.2, 0.45) * height
        dark = yy < band if rng.random() < 0.5 else yy > height - band
        scene[dark] = rng.uniform(10, 60, 3)
    elif kind == 1:  # a wooden desk: brown with grain
        grain = np.sin(yy / rng.uniform(3, 9) + 2 * np.sin(xx / rng.uniform(40, 120)))[..., None]
        scene = np.array([rng.uniform(90, 160), rng.uniform(60, 100), rng.uniform(30, 60)], np.float32) + 18 * grain
    else:  # clutter: rectangles and stripes of any colour and brightness
        scene = np.empty((height, width, 3), np.float32)
        scene[:] = rng.uniform(30, 140, 3)
        for _ in range(int(rng.integers(6, 16))):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            w, h = int(rng.integers(20, width // 2)), int(rng.integers(10, height // 2))
            cv2.rectangle(scene, (x0, y0), (x0 + w, y0 + h), rng.uniform(0, 255, 3).tolist(), -1)
    return scene + rng.normal(0, 4, (height, width, 1)).astype(np.float32)


def _light_and_lens(rng: np.random.Generator, scene: np.ndarray, sheet: np.ndarray, sharp: bool) -> np.ndarray:
    """A shadow falling across part of the scene, a glare spot on the sheet, then the camera: low
    resolution (a webcam's 0.5-1x; a phone, `sharp`, 0.85-1x), blur, sensor noise and JPEG.
    (H, W, 3) uint8 RGB."""
    height, width = sheet.shape
    scene = scene * _lighting(rng, height, width, rng.uniform(0.1, 0.5))[..., None]
    if rng.random() < 0.5:  # glare: a soft bright spot on the paper, never so bright that ink vanishes
        gy, gx = np.nonzero(sheet)
        k = rng.integers(len(gy))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        radius = rng.uniform(0.05, 0.2) * width
        spot = np.exp(-((yy - gy[k]) ** 2 + (xx - gx[k]) ** 2) / (2 * radius**2))
        scene = scene + (rng.uniform(20, 60) * spot)[..., None]
    resolution = rng.uniform(0.85, 1.0) if sharp else rng.uniform(0.5, 1.0)
    if resolution < 0.95:
        small = cv2.resize(scene, (round(width * resolution), round(height * resolution)), interpolation=cv2.INTER_AREA)
        scene = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(0, 1.0)
    if sigma > 0.3:
        scene = cv2.GaussianBlur(scene, (0, 0), sigma)
    scene = scene + rng.normal(0, rng.uniform(1, 6), scene.shape).astype(np.float32)
    bgr = cv2.cvtColor(np.clip(scene, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 86))])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def make_scenes(n: int, seed: int, images: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, PageTruth]]:
    """`n` photo scenes from one seeded generator: the same seed gives the same scenes."""
    rng = np.random.default_rng(seed)
    source = _as_digit_arrays((images, labels))
    return [make_scene(rng, source) for _ in range(n)]
