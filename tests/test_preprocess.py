"""Preparing outside images as MNIST was prepared: decoding, ink, fitting, centring, strokes.

Every image here is drawn by the test (OpenCV lines and text, saved with Pillow), except the
MNIST and USPS files reached through the `shared_data_dir` fixture. Centres of mass, boxes and
stroke widths are measured here with numpy, independently of the module's own arithmetic,
except where a test checks the module's MNIST constants against real MNIST.
"""

from __future__ import annotations

import csv
import gzip
import io
import time
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from digitlab.errors import DataError, DigitlabError
from digitlab.preprocess import (
    MNIST_STROKE_RANGE,
    MNIST_STROKE_WIDTH,
    ImageError,
    center_digit,
    ink_map,
    load_image,
    stroke_width,
    to_mnist_style,
)
from imagetools import huge_png, png_bytes

# A '2' as a polyline: asymmetric left-right and top-bottom, so any rotation or mirror shows.
TWO = np.array([[0.30, 0.32], [0.42, 0.18], [0.60, 0.17], [0.70, 0.30], [0.64, 0.48], [0.30, 0.84], [0.74, 0.84]])


def draw(
    points: np.ndarray = TWO,
    size: int = 200,
    thickness: int = 14,
    ink: int = 0,
    ground: int = 255,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """A uint8 grey drawing of a polyline given in fractions of `size`, on a plain ground."""
    image = np.full(shape or (size, size), ground, np.uint8)
    cv2.polylines(image, [np.round(points * size).astype(np.int32)], False, ink, thickness, cv2.LINE_AA)
    return image


def center_of_mass(image: np.ndarray) -> np.ndarray:
    """(row, column) centre of mass of the grey values, in pixel index coordinates."""
    rows, cols = np.indices(image.shape)
    weights = image.astype(np.float64)
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def box_size(image: np.ndarray, level: int = 64) -> tuple[int, int]:
    """(height, width) of the pixels brighter than `level`."""
    rows, cols = np.nonzero(image > level)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def mnist_scale_width(digit: np.ndarray) -> float:
    """Stroke width of a 28x28 digit in MNIST pixels, measured as the module's constants were:
    upsampled 4x bilinearly, then ink area / half outline."""
    big = cv2.resize(digit.astype(np.float32) / 255, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    return stroke_width(big) / 4


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in grey levels (0..255)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_mnist_like(digit: np.ndarray) -> None:
    """28x28 uint8, ink bright on a black ground, longer side 20 (+-1), centred within 0.5 px.

    The outermost ring must be nearly empty, not empty: the mass of a lopsided digit (a '7' with
    a heavy bar) sits off its box's centre, so centring the mass pushes an end to row 26 or 27,
    as in MNIST (12% of its test digits reach the two outer rings, 1% the outermost).
    """
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    assert digit.max() >= 200, "the ink should be bright"
    ring = np.concatenate([digit[0], digit[-1], digit[1:-1, 0], digit[1:-1, -1]])
    assert ring.mean() < 4, "the ground should be black"
    assert 19 <= max(box_size(digit)) <= 21
    assert np.abs(center_of_mass(digit) - 14).max() < 0.5


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The plain '2' (dark on white, 8-bit grey) prepared: what other encodings should give."""
    return to_mnist_style(draw())


# ---------------------------------------------------------------------------------------------
# the MNIST geometry


@pytest.mark.parametrize(
    "text, font, origin, scale",
    [
        ("0", cv2.FONT_HERSHEY_SIMPLEX, (40, 230), 7),
        ("4", cv2.FONT_HERSHEY_DUPLEX, (100, 200), 5),
        ("7", cv2.FONT_HERSHEY_COMPLEX, (10, 120), 4),
        ("8", cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, (150, 280), 6),
        ("5", cv2.FONT_HERSHEY_PLAIN, (60, 250), 12),
        ("3", cv2.FONT_HERSHEY_TRIPLEX, (200, 150), 3),
    ],
)
def test_text_digits_are_fitted_and_centred(text, font, origin, scale):
    image = np.full((300, 320), 255, np.uint8)  # digits anywhere in the frame, not square
    cv2.putText(image, text, origin, font, scale, 0, 6, cv2.LINE_AA)
    assert_mnist_like(to_mnist_style(image))


def test_polarity_either_way_gives_the_same_digit(reference):
    dark_on_light, light_on_dark = draw(), draw(ink=255, ground=0)
    assert ink_map(dark_on_light.astype(np.float32) / 255)[1] == "dark-on-light"
    assert ink_map(light_on_dark.astype(np.float32) / 255)[1] == "light-on-dark"
    assert difference(to_mnist_style(light_on_dark), reference) < 1
    # grey ink on a grey ground, both ways round
    assert difference(to_mnist_style(draw(ink=90, ground=170)), reference) < 3
    assert difference(to_mnist_style(draw(ink=170, ground=90)), reference) < 3


def test_a_tall_one_stays_tall_and_a_wide_dash_stays_wide():
    one = to_mnist_style(draw(np.array([[0.45, 0.1], [0.5, 0.9]]), thickness=16))
    height, width = box_size(one)
    assert 19 <= height <= 21 and width <= 9
    dash = to_mnist_style(draw(np.array([[0.1, 0.5], [0.9, 0.45]]), thickness=16))
    height, width = box_size(dash)
    assert 19 <= width <= 21 and height <= 9
    assert np.abs(center_of_mass(one) - 14).max() < 0.5 and np.abs(center_of_mass(dash) - 14).max() < 0.5


@pytest.mark.parametrize("size", [8, 16, 28, 64, 500, 2000])
def test_any_resolution_fits_20_pixels(size):
    thickness = max(1, size // 14)
    assert_mnist_like(to_mnist_style(draw(size=size, thickness=thickness)))


def test_lopsided_digit_that_spills_over_the_edge_is_still_centred():
    # a long bar with a heavy blob at one end: centring the mass pushes the bar past the edge
    image = np.full((200, 200), 255, np.uint8)
    cv2.line(image, (20, 100), (180, 100), 0, 6)
    cv2.circle(image, (30, 100), 24, 0, -1)
    digit = to_mnist_style(image, stroke=False)
    assert np.abs(center_of_mass(digit) - 14).max() < 0.5


# ---------------------------------------------------------------------------------------------
# the ink: specks, crops, shading, noise


def test_specks_are_ignored(reference):
    image = draw()
    for x, y in [(8, 8), (190, 20), (15, 185), (185, 190)]:
        cv2.circle(image, (x, y), 2, 0, -1)
    assert difference(to_mnist_style(image), reference) < 1


def test_center_digit_on_crops_of_a_larger_ink_map():
    page = np.zeros((200, 600), np.float32)  # an ink map of three digits side by side
    for left in (0, 200, 400):
        page[:, left : left + 200] = draw(ink=255, ground=0) / 255  # each spans columns left+60..left+148
    alone = center_digit(draw(ink=255, ground=0) / 255)
    loose = center_digit(page[:, 140:380])  # the middle digit, ground, and two tips of its left neighbour
    rows, cols = np.nonzero(page[:, 200:400] > 0.3)
    snug = center_digit(page[rows.min() : rows.max() + 1, 200 + cols.min() : 200 + cols.max() + 1])  # no ground
    assert_mnist_like(loose)
    assert difference(loose, alone) < 1 and difference(snug, alone) < 3
    assert difference(center_digit((page[:, 140:380] * 255).astype(np.uint8)), loose) < 1  # uint8 works too


def test_uneven_lighting_and_noise_are_flattened(reference):
    rng = np.random.default_rng(0)
    drawing = draw().astype(np.float32) / 255
    light = np.linspace(0.35, 1.0, 200, dtype=np.float32)[None, :]  # a shadow over the left of the page
    photo = np.clip(drawing * light + rng.normal(0, 0.03, drawing.shape), 0, 1)
    jpeg = png_bytes((photo * 255).astype(np.uint8), "JPEG", quality=60)
    assert difference(to_mnist_style(jpeg), reference) < 8


def test_a_thin_pen_line_in_a_noisy_photo(reference):
    # 1-pixel ink is 0.15% of this canvas: too few pixels for Otsu's split alone under this noise
    rng = np.random.default_rng(1)
    drawing = draw(size=1000, thickness=1).astype(np.float32) / 255
    photo = np.clip(drawing * 0.8 + 0.1 + rng.normal(0, 0.05, drawing.shape), 0, 1)
    digit = to_mnist_style((photo * 255).astype(np.uint8))
    assert_mnist_like(digit)
    assert difference(digit, reference) < 5


def test_ink_map_stretches_ground_to_0_and_ink_to_1():
    ink, polarity = ink_map(draw(ink=100, ground=200).astype(np.float32) / 255)
    assert polarity == "dark-on-light" and ink.dtype == np.float32
    assert ink[draw() == 255].max() == 0 and (ink[draw() == 0] == 1).all()


# ---------------------------------------------------------------------------------------------
# strokes


@pytest.fixture(scope="module")
def mnist_widths(shared_data_dir) -> np.ndarray:
    """Stroke widths of 1,000 real MNIST training digits drawn at random (not a stride: writers
    come in runs, and every 60th digit measures 0.1 px thinner than the whole set)."""
    raw = gzip.decompress((shared_data_dir / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    digits = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    chosen = np.random.default_rng(0).choice(len(digits), 1000, replace=False)
    return np.array([mnist_scale_width(digits[i]) for i in chosen])


def test_the_mnist_stroke_constants_match_real_mnist(mnist_widths):
    assert abs(np.median(mnist_widths) - MNIST_STROKE_WIDTH) < 0.1
    assert np.allclose(np.percentile(mnist_widths, [10, 90]), MNIST_STROKE_RANGE, atol=0.1)


@pytest.mark.parametrize("size, thickness, thin", [(200, 1, True), (1000, 2, True), (200, 45, False), (60, 14, False)])
def test_pen_and_marker_strokes_come_out_as_mnist_strokes(mnist_widths, size, thickness, thin):
    # The tolerance is MNIST's own spread: its 10th to 90th percentile of stroke width.
    low, high = np.percentile(mnist_widths, [10, 90])
    raw = mnist_scale_width(to_mnist_style(draw(size=size, thickness=thickness), stroke=False))
    assert raw < low if thin else raw > high  # the drawing really is unlike MNIST...
    digit = to_mnist_style(draw(size=size, thickness=thickness))
    assert low <= mnist_scale_width(digit) <= high  # ...and comes out like it
    assert_mnist_like(digit)


def test_mnist_like_strokes_are_left_alone():
    digit = draw(thickness=14)
    assert difference(to_mnist_style(digit), to_mnist_style(digit, stroke=False)) == 0


# ---------------------------------------------------------------------------------------------
# decoding: sources, formats, bit depths, transparency, orientation


def test_every_kind_of_source(tmp_path, reference):
    drawing = draw()
    path = tmp_path / "two.png"
    Image.fromarray(drawing).save(path)
    sources = [
        path,
        str(path),
        path.read_bytes(),
        io.BytesIO(path.read_bytes()),
        Image.open(path),
        drawing,
        drawing.astype(np.float32) / 255,
        drawing[:, :, None],
        np.stack([drawing] * 3, -1),
        drawing.astype(np.uint16) * 257,
    ]
    for source in sources:
        assert difference(to_mnist_style(source), reference) < 2, type(source)
    assert difference(to_mnist_style(drawing > 127), reference) < 4  # bool: no anti-aliased edge
    grey = load_image(path)
    assert grey.dtype == np.float32 and grey.shape == (200, 200) and grey.min() == 0 and grey.max() == 1


@pytest.mark.parametrize(
    "mode, fmt, options",
    [
        ("L", "PNG", {}),
        ("RGB", "PNG", {}),
        ("P", "PNG", {}),
        ("1", "PNG", {}),
        ("L", "BMP", {}),
        ("RGB", "BMP", {}),
        ("L", "TIFF", {}),
        ("RGB", "TIFF", {"compression": "tiff_lzw"}),
        ("RGB", "WEBP", {"quality": 80}),
        ("L", "WEBP", {"lossless": True}),
        ("RGB", "JPEG", {"quality": 85}),
        ("L", "GIF", {}),
        ("CMYK", "JPEG", {}),
    ],
)
def test_formats_and_modes(tmp_path, reference, mode, fmt, options):
    image = Image.fromarray(draw()).convert("RGB")
    path = tmp_path / f"two.{fmt.lower()}"
    image.convert(mode).save(path, fmt, **options)
    assert difference(to_mnist_style(path), reference) < 4


def test_colour_ink_on_colour_paper(reference):
    image = np.zeros((200, 200, 3), np.uint8)
    image[:] = (250, 240, 200)  # cream paper
    cv2.polylines(image, [np.round(TWO * 200).astype(np.int32)], False, (30, 40, 160), 14, cv2.LINE_AA)  # blue ink
    assert difference(to_mnist_style(png_bytes(image)), reference) < 2


def test_16_bit_grey_is_scaled_to_0_1(reference):
    drawing = draw().astype(np.uint16) * 257  # 0 and 65535, with 16-bit anti-aliasing levels
    decoded = Image.open(io.BytesIO(png_bytes(drawing)))
    assert decoded.mode.startswith("I")  # really a 16-bit file
    grey = load_image(png_bytes(drawing))
    assert np.abs(grey - draw() / 255).max() < 1e-6
    faint = draw().astype(np.uint16) * 40 + 30000  # a low-contrast 16-bit scan: ink 30000, ground 40200
    assert np.allclose(load_image(png_bytes(faint)), faint / 65535, atol=1e-6)
    assert difference(to_mnist_style(png_bytes(faint)), reference) < 2


def rgba_drawing(stroke: tuple[int, int, int], under: tuple[int, int, int]) -> np.ndarray:
    """A canvas export: the stroke colour where the drawing is, `under` (invisible) elsewhere;
    the drawing itself is in the alpha channel."""
    alpha = 255 - draw()
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[..., :3] = np.where(alpha[..., None] > 0, stroke, under)
    rgba[..., 3] = alpha
    return rgba


@pytest.mark.parametrize(
    "stroke, under",
    [
        ((0, 0, 0), (0, 0, 0)),
        ((255, 255, 255), (0, 0, 0)),
        ((255, 255, 255), (255, 255, 255)),
        ((0, 0, 0), (255, 255, 255)),
        ((200, 30, 30), (0, 0, 0)),
    ],
)
def test_strokes_on_a_transparent_canvas(reference, stroke, under):
    rgba = rgba_drawing(stroke, under)
    assert difference(to_mnist_style(png_bytes(rgba)), reference) < 2
    assert difference(to_mnist_style(rgba), reference) < 2  # the array, as a browser canvas hands it over
    grey_alpha = Image.fromarray(rgba).convert("LA")
    assert difference(to_mnist_style(png_bytes(grey_alpha)), reference) < 2


def test_opaque_rgba_photo_and_palette_transparency(reference):
    opaque = np.dstack([np.stack([draw()] * 3, -1), np.full((200, 200), 255, np.uint8)])
    assert difference(to_mnist_style(png_bytes(opaque)), reference) < 1
    palette = Image.fromarray(draw()).convert("P")
    white = palette.getpixel((0, 0))  # the ground's palette entry, saved as the transparent one
    assert difference(to_mnist_style(png_bytes(palette, transparency=white)), reference) < 4


def test_picture_with_transparent_margins_is_filled_with_its_own_ground(reference):
    rgba = np.dstack([np.stack([draw()] * 3, -1), np.full((200, 200), 255, np.uint8)])
    rgba[:10, :, 3] = rgba[:, :10, 3] = 0  # transparent strips at the top and left, black underneath
    rgba[:10, :, :3] = rgba[:, :10, :3] = 0
    assert difference(to_mnist_style(rgba), reference) < 1


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    # EXIF 6: the camera was turned; the picture must be turned 90 degrees clockwise to be upright
    # (np.rot90 with k=-1), 8: counter-clockwise (k=1), 3: half a turn.
    stored = draw(shape=(200, 260))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=exif.tobytes())
    upright = np.rot90(stored, turns)
    grey = load_image(path)
    assert grey.shape == upright.shape
    assert np.abs(grey - upright / 255).mean() < 0.02
    assert difference(to_mnist_style(path), to_mnist_style(upright)) < 2


# ---------------------------------------------------------------------------------------------
# bad input


def test_image_error_is_a_data_error():
    assert issubclass(ImageError, DataError) and issubclass(ImageError, DigitlabError)
    assert ImageError.exit_code == 2


@pytest.mark.parametrize("width, height", [(20000, 20000), (8000, 8000)])  # past Pillow's own limit, and ours
def test_a_huge_declared_size_is_refused_before_decoding(tmp_path, width, height):
    data = huge_png(width, height)
    assert len(data) < 100
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    tracemalloc.start()
    start = time.perf_counter()
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(ImageError, match="pixels"):
            to_mnist_style(source)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1 and peak < 50e6


def test_pixel_and_byte_limits_can_be_set(tmp_path):
    data = png_bytes(draw())
    with pytest.raises(ImageError, match="40,000 pixels, more than the limit of 10,000"):
        load_image(data, max_pixels=10_000)
    with pytest.raises(ImageError, match="limit"):
        load_image(data, max_bytes=100)
    path = tmp_path / "two.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="limit of 100"):
        load_image(path, max_bytes=100)
    with pytest.raises(ImageError, match="limit"):
        load_image(io.BytesIO(data), max_bytes=100)


def truncated(fmt: str) -> bytes:
    data = png_bytes(draw(), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"1,2,3\nthis is a CSV file, not an image\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n", "not an image"),  # a signature and nothing else
        (truncated("PNG"), "damaged or truncated"),
        (truncated("JPEG"), "damaged or truncated"),
        (truncated("WEBP"), "not an image|damaged or truncated"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "input.png"
    path.write_bytes(content)
    for source in (path, content):
        with pytest.raises(ImageError, match=message):
            to_mnist_style(source)


def test_missing_file_and_wrong_source_types(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path)  # a folder
    (tmp_path / "two.png").write_bytes(png_bytes(draw()))
    with open(tmp_path / "two.png", encoding="latin-1") as text:
        with pytest.raises(ImageError, match="text mode"):
            load_image(text)
    with pytest.raises(TypeError):
        load_image(12345)


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (2, 50)])
def test_too_small_to_hold_a_digit(size):
    with pytest.raises(ImageError, match="too small"):
        to_mnist_style(png_bytes(np.zeros(size, np.uint8)))
    with pytest.raises(ImageError, match="too small"):
        to_mnist_style(np.zeros(size, np.uint8))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((50, 50), 0.5, np.float32) * 3, r"\[0, 1\]"),
        (np.full((50, 50), np.nan, np.float32), r"\[0, 1\]"),
        (np.zeros((50, 50), np.int64), "uint8, uint16"),
        (np.zeros((50, 50, 5), np.uint8), "shape|H, W"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(array)


@pytest.mark.parametrize(
    "image",
    [
        np.full((100, 100), 255, np.uint8),
        np.zeros((100, 100), np.uint8),
        np.full((100, 100), 128, np.uint8),
        np.clip(np.random.default_rng(0).normal(200, 4, (100, 100)), 0, 255).astype(np.uint8),  # blank paper, noisy
        np.clip(np.random.default_rng(0).normal(120, 12, (300, 300)), 0, 255).astype(np.uint8),  # a dim, grainy one
        np.hstack([np.zeros((100, 50), np.uint8), np.full((100, 50), 255, np.uint8)]),  # two areas, no strokes
        np.zeros((100, 100, 4), np.uint8),  # a fully transparent canvas
    ],
)
def test_no_ink_is_an_error(image):
    with pytest.raises(ImageError, match="no ink"):
        to_mnist_style(png_bytes(image))


def test_center_digit_without_ink():
    with pytest.raises(ImageError, match="no ink"):
        center_digit(np.zeros((40, 40), np.float32))
    with pytest.raises(ImageError, match="ink map"):
        center_digit(np.zeros((4, 4, 4), np.float32))


# ---------------------------------------------------------------------------------------------
# real handwriting


def test_usps_digits_come_out_mnist_like(shared_data_dir, mnist_widths):
    # All 2,007 USPS test digits: 16x16 scans, near-binary, some with their loops filled in and
    # some covering half their border (a thick '0'). Widths are checked against MNIST's 1st to
    # 99th percentile (1.3 to 4.4): a filled-in loop is a blob, and stays one.
    folder = shared_data_dir / "real-digits"
    with open(folder / "labels.csv", newline="") as file:
        files = [row["file"] for row in csv.DictReader(file) if row["subset"] == "usps-test"]
    assert len(files) == 2007
    low, high = np.percentile(mnist_widths, [1, 99])
    widths = []
    for name in files:
        digit = to_mnist_style(folder / name)
        assert_mnist_like(digit)
        widths.append(mnist_scale_width(digit))
    assert low <= min(widths) and max(widths) <= high
    assert abs(np.median(widths) - MNIST_STROKE_WIDTH) < 0.4  # USPS writes a little bolder than MNIST
