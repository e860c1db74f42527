"""Lines of digits for the line recognizer: synthesised on the fly from single digits, and real
cheque amounts (ORAND-CAR-A's train strings).

    pool = DigitPool.of(images, labels)               # (N, 1, 28, 28) uint8 MNIST-style digits
    lines = synth_lines(pool, picks, lengths, gen)    # grey photos of those digits written in lines
    batch = line_batch([line_input(line_ink(g)) for g in lines.grey], lines.texts)

A synthetic line is what the reader hands the recognizer: a grey crop of one line of writing with a
margin above and below, as a camera or scanner saw it. Its digits are drawn from a pool of prepared
single digits (MNIST, USPS, Optdigits, HwD-1000, ORAND-CAR-A crops: the training sources) and laid
out by batched tensor ops: 1-10 digits per line, realistic gaps with touching and overlapping
pairs, baseline drift, slant, size and stroke-width changes, punctuation between them (`.` `,` `-`
and a leading `$`, which the recognizer learns to ignore: the targets are the digits alone). They
are then photographed: paper of any brightness with texture, printed background patterns and
ruled lines like a cheque's, ink of any darkness, uneven light, blur, noise and JPEG. Each line
then goes through `preprocess.line_ink` and `line_input`, as the reader's crops do.

Every draw comes from the torch.Generator passed in, so a seed gives the same lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..preprocess import LINE_HEIGHT, LINE_STRIDE, ImageError, line_ink, line_input

if TYPE_CHECKING:
    import torch

    from .dataset import Dataset

MAX_DIGITS = 10  # digits in a synthetic line: 1 to this
PUNCTUATION = (".", ",", "-", "$")  # drawn between digits (and `$` before them), never a target
BLANK = 10  # the recognizer's blank class; digits are 0-9


@dataclass(frozen=True)
class DigitPool:
    """Single digits to write lines with: (N, 1, 28, 28) uint8 ink-bright, labels, and the first
    and last column of each digit's ink (float), so that digits are spaced by their ink."""

    images: torch.Tensor
    labels: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor

    @classmethod
    def of(cls, images: torch.Tensor, labels: torch.Tensor) -> DigitPool:
        import torch

        columns = (images[:, 0] > 40).any(1)  # (N, 28): columns holding ink
        index = torch.arange(28)
        left = torch.where(columns, index, 28).amin(1).float()
        right = torch.where(columns, index, -1).amax(1).float()
        empty = right < left  # no ink (cannot happen for prepared digits): the whole cell
        left[empty], right[empty] = 0.0, 27.0
        return cls(images, labels, left, right)


@dataclass(frozen=True)
class SynthLines:
    """A batch of synthetic lines: grey crops (float32, dark ink on light paper, each (H, W_i)),
    their digits, and each digit's box (x, y, w, h) in its crop's pixels."""

    grey: list[np.ndarray]
    texts: list[str]
    boxes: list[list[tuple[float, float, float, float]]]


def punctuation_pool() -> DigitPool:
    """punctuation_glyphs as a pool, each labelled by its index in PUNCTUATION."""
    import torch

    glyphs, names = punctuation_glyphs()
    return DigitPool.of(torch.from_numpy(glyphs), torch.tensor([PUNCTUATION.index(name) for name in names]))


def punctuation_glyphs() -> tuple[np.ndarray, list[str]]:
    """`.` `,` `-` `$` as 28x28 uint8 ink-bright cells at the scale of an MNIST digit (whose ink is
    20 pixels high, rows 4-23): a dot and a comma on the baseline, a dash at mid-height, a dollar
    sign as tall as a digit. Several sizes and weights of each."""
    glyphs, names = [], []
    for weight in (2, 3):
        for size in (0.8, 1.0, 1.25):
            dot = np.zeros((28, 28), np.uint8)
            cv2.circle(dot, (14, 22), max(1, round(1.6 * size)), 255, -1, cv2.LINE_AA)
            comma = dot.copy()
            cv2.line(comma, (14, 22), (12, round(22 + 4 * size)), 255, weight, cv2.LINE_AA)
            dash = np.zeros((28, 28), np.uint8)
            cv2.line(dash, (round(14 - 5 * size), 14), (round(14 + 5 * size), 13), 255, weight, cv2.LINE_AA)
            dollar = np.zeros((28, 28), np.uint8)
            cv2.putText(dollar, "$", (7, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.65 * size, 255, weight - 1, cv2.LINE_AA)
            glyphs += [dot, comma, dash, dollar]
            names += [".", ",", "-", "$"]
    return np.stack(glyphs)[:, None], names


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    import torch

    return low + (high - low) * torch.rand(n, generator=generator)


def synth_lines(
    pool: DigitPool,
    picks: torch.Tensor,
    lengths: torch.Tensor,
    generator: torch.Generator,
    *,
    glyphs: DigitPool | None = None,
    height: int | None = None,
) -> SynthLines:
    """Write the digits `picks` (indices into the pool, line after line) in lines of `lengths`
    digits and photograph them: see the module's docstring. `glyphs`: punctuation cells
    (punctuation_glyphs) to put between digits, None for none; `height`: the crops' height in
    pixels (None: 24-64, one per batch: low-resolution webcams to scanners)."""
    import torch

    n = len(lengths)
    rand = lambda k, lo=0.0, hi=1.0: _uniform(k, lo, hi, generator)  # noqa: E731
    height = height or int(torch.randint(24, 65, (1,), generator=generator))
    chosen = DigitPool(pool.images[picks], pool.labels[picks], pool.left[picks], pool.right[picks])
    is_digit = torch.ones(len(picks), dtype=torch.bool)
    line_of = torch.repeat_interleave(torch.arange(n), lengths)
    if glyphs is not None and len(picks):
        chosen, is_digit, line_of = _with_punctuation(glyphs, chosen, lengths, generator)
    images, labels, left, right = chosen.images, chosen.labels, chosen.left, chosen.right
    count = len(line_of)
    per_line = torch.bincount(line_of, minlength=n)
    first = torch.cumsum(per_line, 0) - per_line

    # Sizes: the ink of a digit (20 px in its cell) is 45-80% of the crop's height, per line, +-8%.
    ink = (rand(n, 0.45, 0.8)[line_of] * height) * rand(count, 0.92, 1.08)
    scale = ink / 20.0  # crop pixels per cell pixel
    shear = rand(n, -0.3, 0.3)[line_of]  # slant: dx per dy, one writer per line
    gap = rand(count, 0.05, 0.6) * ink
    touching = torch.rand(count, generator=generator) < 0.15
    gap = torch.where(touching, rand(count, -0.25, 0.0) * ink, gap)
    gap[first] = rand(n, 0.3, 1.5) * ink[first]  # the left margin
    width = (right - left + 1) * scale
    advance = torch.cumsum(gap + width, 0)
    start = torch.repeat_interleave(advance[first] - (gap + width)[first], per_line)
    x_left = advance - start - width  # each digit's ink starts here
    line_width = torch.zeros(n).scatter_reduce_(0, line_of, x_left + width, "amax")
    line_width = line_width + rand(n, 0.3, 1.5) * ink[first]  # the right margin
    canvas_width = int(math.ceil(float(line_width.max()) / 4) * 4)
    drift = rand(n, -0.05, 0.05)[line_of] * x_left + rand(count, -0.05, 0.05) * ink
    centre_y = height / 2 + rand(n, -0.08, 0.08)[line_of] * height + drift
    centre_x = x_left + (14 - left) * scale  # the cell's centre column, in the crop

    alpha = _draw(images, line_of, n, height, canvas_width, centre_x, centre_y, scale, shear)
    grey = _photograph(alpha, line_width, ink[first], generator)

    texts, boxes = [], []
    y_top = centre_y - ink / 2
    for i in range(n):
        members = (line_of == i) & is_digit
        texts.append("".join(str(int(d)) for d in labels[members]))
        boxes.append(
            [
                (float(x), float(y), float(w), float(h))
                for x, y, w, h in zip(x_left[members], y_top[members], width[members], ink[members], strict=True)
            ]
        )
    crops = [grey[i, :, : int(math.ceil(float(line_width[i])))].copy() for i in range(n)]
    return SynthLines(crops, texts, boxes)


def _draw(
    images: torch.Tensor,
    line_of: torch.Tensor,
    n: int,
    height: int,
    canvas_width: int,
    centre_x: torch.Tensor,
    centre_y: torch.Tensor,
    scale: torch.Tensor,
    shear: torch.Tensor,
) -> torch.Tensor:
    """The lines' ink (n, 1, height, canvas_width) in [0, 1]: each cell (28x28) drawn into a window of
    its own around its centre (one affine map per cell from window to cell coordinates, grid_sample's
    [-1, 1] units), scaled by `scale` and slanted by `shear`, the windows then laid onto their lines
    with overlapping ink kept at its darkest (scatter amax)."""
    import torch
    import torch.nn.functional as F

    count = len(line_of)
    window = int(math.ceil(1.6 * height / 4) * 4)
    x0 = torch.floor(centre_x - window / 2)
    local_x = centre_x - x0
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = window / (28 * scale)
    theta[:, 0, 1] = shear * height / (28 * scale)
    theta[:, 0, 2] = ((window - 1) / 2 - local_x + shear * ((height - 1) / 2 - centre_y)) / (14 * scale)
    theta[:, 1, 1] = height / (28 * scale)
    theta[:, 1, 2] = ((height - 1) / 2 - centre_y) / (14 * scale)
    grid = F.affine_grid(theta, [count, 1, height, window], align_corners=False)
    cells = F.grid_sample(images.float() / 255, grid, mode="bilinear", align_corners=False)[:, 0]  # (D, H, window)
    column = x0.long()[:, None] + torch.arange(window)[None]  # (D, window)
    inside = (column >= 0) & (column < canvas_width)
    row = line_of[:, None, None] * height + torch.arange(height)[None, :, None]
    target = row * canvas_width + column.clamp(0, canvas_width - 1)[:, None, :]
    values = cells * inside[:, None, :]
    alpha = torch.zeros(n * height * canvas_width).scatter_reduce_(0, target.reshape(-1), values.reshape(-1), "amax")
    return alpha.view(n, 1, height, canvas_width)


def _with_punctuation(
    glyphs: DigitPool, digits: DigitPool, lengths: torch.Tensor, generator: torch.Generator
) -> tuple[DigitPool, torch.Tensor, torch.Tensor]:
    """The lines' digits (line after line, `lengths` each) with punctuation cells slotted in: a
    `.` `,` or `-` after a random digit but the last on 35% of lines, a `$` first on 10%. Returns
    the cells as one pool (punctuation labelled -1), which of them are digits, and each one's line."""
    import torch

    kinds = {
        mark: [j for j, name in enumerate(glyphs.labels.tolist()) if name == k] for k, mark in enumerate(PUNCTUATION)
    }
    n = len(lengths)
    marks = torch.rand(n, generator=generator) < 0.35
    dollars = torch.rand(n, generator=generator) < 0.10
    order, line_of, start = [], [], 0  # order: k >= 0 the digit k, -1 - j the glyph j

    def glyph(mark: str) -> int:
        variants = kinds[mark]
        return -1 - variants[int(torch.randint(0, len(variants), (1,), generator=generator))]

    for i, length in enumerate(lengths.tolist()):
        cells = list(range(start, start + length))
        if marks[i] and length >= 2:
            after = int(torch.randint(1, length, (1,), generator=generator))
            cells.insert(after, glyph(PUNCTUATION[int(torch.randint(0, 3, (1,), generator=generator))]))
        if dollars[i]:
            cells.insert(0, glyph("$"))
        order += cells
        line_of += [i] * len(cells)
        start += length
    index = torch.tensor(order)
    is_digit = index >= 0
    which = torch.where(is_digit, index, len(digits.labels) + (-1 - index))
    both = DigitPool(
        torch.cat([digits.images, glyphs.images]),
        torch.cat([digits.labels, torch.full((len(glyphs.labels),), -1)]),
        torch.cat([digits.left, glyphs.left]),
        torch.cat([digits.right, glyphs.right]),
    )
    return (
        DigitPool(both.images[which], both.labels[which], both.left[which], both.right[which]),
        is_digit,
        torch.tensor(line_of),
    )


def _photograph(
    alpha: torch.Tensor, line_width: torch.Tensor, ink_height: torch.Tensor, generator: torch.Generator
) -> np.ndarray:
    """Ink coverage (n, 1, H, W) in [0, 1] -> grey photos (n, H, W) float32 in [0, 1], dark ink on
    light paper: stroke width, paper and its texture, printed patterns, ruled lines, ink darkness,
    uneven light, blur, noise, JPEG."""
    import torch
    import torch.nn.functional as F

    n, _, height, width = alpha.shape
    rand = lambda lo=0.0, hi=1.0: _uniform(n, lo, hi, generator).view(n, 1, 1, 1)  # noqa: E731
    pick = lambda p: (torch.rand(n, generator=generator) < p).view(n, 1, 1, 1)  # noqa: E731
    # Pens: 25% a pixel bolder, 15% a pixel finer (at the crop's resolution).
    bolder = F.max_pool2d(alpha, 3, stride=1, padding=1)
    finer = -F.max_pool2d(-alpha, 3, stride=1, padding=1)
    choice = torch.rand(n, generator=generator).view(n, 1, 1, 1)
    alpha = torch.where(choice < 0.25, bolder, torch.where(choice > 0.85, finer, alpha))

    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    paper = rand(0.55, 0.97) + torch.zeros(n, 1, height, width)
    texture = F.interpolate(
        torch.randn(n, 1, max(2, height // 8), max(2, width // 8), generator=generator),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )
    paper = paper + rand(0.0, 0.06) * texture
    # A cheque's printed background: a grating or crosshatch of fine lines, or a dot screen.
    angle = rand(0, math.pi)
    period = rand(2.5, 9.0)
    wave = torch.sin(2 * math.pi * (cols * torch.cos(angle) + rows * torch.sin(angle)) / period)
    wave2 = torch.sin(
        2 * math.pi * (cols * torch.cos(angle + math.pi / 2) + rows * torch.sin(angle + math.pi / 2)) / period
    )
    hatch = torch.where(pick(0.5), wave.clamp(min=0), torch.maximum(wave, wave2).clamp(min=0))
    paper = paper - torch.where(pick(0.4), rand(0.03, 0.15) * hatch, torch.zeros(()))
    # Ruled lines: the line the amount is written on, a box's edges, a guide above.
    baseline = height / 2 + rand(0.25, 0.55) * ink_height.view(n, 1, 1, 1)
    thick = rand(0.6, 2.0)
    ruled = (thick - (rows - baseline).abs()).clamp(0, 1)
    above = (thick - (rows - (height / 2 - rand(0.45, 0.7) * ink_height.view(n, 1, 1, 1))).abs()).clamp(0, 1)
    box_edge = (thick - (cols - rand(1, 4)).abs()).clamp(0, 1)
    line_ink = torch.where(pick(0.3), ruled, torch.zeros(())) + torch.where(pick(0.1), above, torch.zeros(()))
    line_ink = line_ink + torch.where(pick(0.08), box_edge, torch.zeros(()))
    paper = paper - rand(0.15, 0.5) * line_ink.clamp(0, 1)
    # Ink: 50-100% of the way from the paper to black.
    strength = rand(0.5, 1.0)
    grey = paper * (1 - strength * alpha)
    # Light: a linear ramp across the crop; a little glare.
    ramp = (cols / max(1, width - 1)) * torch.where(pick(0.5), torch.ones(()), -torch.ones(()))
    grey = grey * (1 - rand(0.0, 0.25) * ramp.abs())
    # Blur: one Gaussian per line (depthwise convolution), sigma 0-1.2 px.
    sigma = rand(0.01, 1.2).view(n)
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel2d = (kernel[:, :, None] * kernel[:, None, :])[:, None]
    grey = F.conv2d(F.pad(grey.view(1, n, height, width), (radius,) * 4, mode="replicate"), kernel2d, groups=n)
    grey = grey.view(n, 1, height, width)
    grey = grey + rand(0.0, 0.05) * torch.randn(grey.shape, generator=generator)
    grey = grey.clamp(0, 1)[:, 0].numpy()
    # JPEG on half of them, quality 25-90.
    jpeg = torch.rand(n, generator=generator) < 0.5
    quality = torch.randint(25, 91, (n,), generator=generator)
    out = np.empty_like(grey)
    for i in range(n):
        if jpeg[i]:
            _, encoded = cv2.imencode(
                ".jpg", np.round(grey[i] * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])]
            )
            out[i] = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        else:
            out[i] = grey[i]
    return out


@dataclass(frozen=True)
class LineBatch:
    """Line inputs padded into one tensor, with what CTC needs: images (N, 1, LINE_HEIGHT, W)
    float32, each line's width in columns, the targets (all digits, concatenated) and their
    lengths, and the texts."""

    images: torch.Tensor
    widths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]


def line_batch(inputs: list[np.ndarray], texts: list[str]) -> LineBatch:
    """Line inputs (each (LINE_HEIGHT, W_i) float32, W_i a multiple of 4) and their digit strings
    as one padded batch (zero, no ink, on the right)."""
    import torch

    widest = max(a.shape[1] for a in inputs)
    images = torch.zeros(len(inputs), 1, LINE_HEIGHT, widest)
    for i, a in enumerate(inputs):
        images[i, 0, :, : a.shape[1]] = torch.from_numpy(a)
    digits = [int(c) for text in texts for c in text]
    return LineBatch(
        images,
        torch.tensor([a.shape[1] for a in inputs]),
        torch.tensor(digits, dtype=torch.long),
        torch.tensor([len(t) for t in texts], dtype=torch.long),
        list(texts),
    )


def lines_as_inputs(grey: list[np.ndarray], texts: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Each grey line crop as the recognizer's input (line_ink, line_input), with its text; a
    line in which no ink stands out (a faint '1' on dark, noisy paper: the reader would not have
    found it either) is left out."""
    inputs, kept = [], []
    for crop, text in zip(grey, texts, strict=True):
        try:
            inputs.append(line_input(line_ink(crop)))
        except ImageError:
            continue
        kept.append(text)
    return inputs, kept


# --- what a line recipe trains, validates and is tested on -----------------------------------------

VALIDATION_LINES = 500  # synthetic lines written with the held-out digits (seeded: the same every epoch)
Line = tuple[np.ndarray, str]  # a line input (LINE_HEIGHT, W) and its digits


@dataclass(frozen=True)
class LineData:
    """A line recipe's data: the digits its synthetic lines are written with (and each one's
    source, for the recipe's mix), the real lines it trains on, the lines it validates on each
    epoch, and its test lines (the real dataset's test split; for ORAND-CAR-A the dev strings,
    reporting only)."""

    name: str
    pool: DigitPool
    sources: torch.Tensor  # (N,) index into source_names of each pool digit
    source_names: tuple[str, ...]
    real: list[Line]
    validation: list[Line]
    test: list[Line]
    validation_kind: str  # what the validation lines are, in words


def real_lines(strings) -> list[Line]:
    """OrandString-like records (grey image, digits) as line inputs."""
    return [(line_input(line_ink(s.image)), s.digits) for s in strings]


def load_line_data(
    digits: Dataset,
    real_train: list[Line],
    real_test: list[Line],
    val_split: float,
    seed: int,
    real_name: str,
    subset: int | None = None,
) -> LineData:
    """A line recipe's LineData from its joined digit sources (`digits`, with train_sources) and the
    real lines. With val_split > 0 the held-out digits (split_validation) write the validation
    lines and a seeded val_split of the real training lines joins them; with none, as digit
    recipes validate on the test set, the test digits write them and the test lines join them.
    `subset`: the pool keeps a seeded random subset of this many digits (quick runs)."""
    import torch

    from .dataset import split_sources, split_validation

    train_x, train_y, val_x, val_y = split_validation(digits, val_split, subset, seed)
    sources = split_sources(digits, val_split, subset, seed)
    if sources is None:
        sources = torch.zeros(len(train_y), dtype=torch.long)
    names = tuple(name for name, _ in digits.train_sources) or (digits.name,)
    if val_split:
        order = torch.randperm(len(real_train), generator=torch.Generator().manual_seed(seed)).tolist()
        held = set(order[: int(round(val_split * len(real_train)))])
        real = [line for i, line in enumerate(real_train) if i not in held]
        real_val = [line for i, line in enumerate(real_train) if i in held]
        kind = f"synthetic lines of held-out digits and {len(real_val)} held-out {real_name} training lines"
    else:
        val_x, val_y, real, real_val = digits.test_images, digits.test_labels, real_train, real_test
        kind = f"synthetic lines of test digits and the {len(real_val)} {real_name} test lines (as the tutorials)"
    generator = torch.Generator().manual_seed(seed + 7)
    held_pool = DigitPool.of(val_x, val_y)
    lengths = torch.randint(1, MAX_DIGITS + 1, (VALIDATION_LINES,), generator=generator)
    picks = torch.randint(0, len(held_pool.labels), (int(lengths.sum()),), generator=generator)
    written = synth_lines(held_pool, picks, lengths, generator, glyphs=punctuation_pool())
    inputs, texts = lines_as_inputs(written.grey, written.texts)
    validation = list(zip(inputs, texts, strict=True)) + real_val
    name = f"lines of {'+'.join(names)} digits, and {real_name} lines"
    return LineData(name, DigitPool.of(train_x, train_y), sources, names, real, validation, real_test, kind)


def training_batch(
    pool: DigitPool,
    picks: torch.Tensor,
    lengths: torch.Tensor,
    real: list[Line],
    real_picks: list[int],
    generator: torch.Generator,
    glyphs: DigitPool | None,
) -> LineBatch:
    """One batch for a line recipe: lines written with the pool's digits `picks` (`lengths` a line)
    and the real lines `real_picks`, each of those stretched or squeezed by up to 15% (writers'
    widths differ; the height is the line's)."""
    written = synth_lines(pool, picks, lengths, generator, glyphs=glyphs)
    inputs, texts = lines_as_inputs(written.grey, written.texts)
    stretch = _uniform(len(real_picks), 0.85, 1.15, generator).tolist()
    for index, factor in zip(real_picks, stretch, strict=True):
        image, text = real[index]
        columns = max(LINE_STRIDE, round(image.shape[1] * factor / LINE_STRIDE) * LINE_STRIDE)
        inputs.append(cv2.resize(image, (columns, LINE_HEIGHT), interpolation=cv2.INTER_LINEAR))
        texts.append(text)
    return line_batch(inputs, texts)
