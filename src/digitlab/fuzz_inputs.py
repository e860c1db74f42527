"""Hypothesis strategies for the inputs `digitlab bench fuzz` feeds to digitlab: damaged files.

    idx_pairs()    (images, labels): two MNIST-style IDX files, as `load_idx_pair` reads them
    image_files()  the bytes of an image file, as `digitlab predict`, `read` and the service take it

Structure-aware: most inputs start as a well-formed file (valid headers with random type codes,
dimensions, counts and payloads; images drawn with strokes, in every mode each format writes)
that is then damaged the ways files get damaged or forged -- cut short, bits flipped, bytes
inserted or dropped, header fields overwritten (an image header claiming 100000x100000 pixels),
wrapped in gzip and damaged again -- and one in ten is random bytes. Hypothesis prefers edge
values (0, 1, the largest), so empty files, zero dimensions and 2^32 - 1 counts come up often.

Hypothesis draws the structure; bulk content (payload bytes, noise, where damage falls) comes
from a numpy generator seeded by a drawn integer, uniform where Hypothesis favours zeros and ends.
Strategies are built once, at import: validating new strategy objects was a quarter of the
generation time when profiled (3-5 ms per input in all). This module imports Hypothesis, so
import it only where Hypothesis is installed (bench_fuzz.py imports it lazily and says so).
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib

import cv2
import numpy as np
from hypothesis import strategies as st
from PIL import Image

from .data.idx import IDX_DTYPES

BOOL = st.booleans()
BYTE = st.integers(0, 255)
SEED = st.integers(0, 2**32 - 1)
ONE_IN_TEN = st.integers(0, 9)  # == 0: the rare branch
RANDOM_BYTES = st.binary(max_size=512)  # empty included

# --- damage, for any file ---------------------------------------------------------------------------

DAMAGE = st.lists(st.sampled_from(["cut", "flip", "set", "insert", "drop"]), min_size=1, max_size=3)
BIT, SPAN = st.integers(0, 7), st.integers(1, 64)
INSERTED = st.binary(min_size=1, max_size=64)


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """`data` as it is half the time, else with one to three kinds of damage: cut short, a bit
    flipped, a byte set, bytes inserted, bytes dropped."""
    if draw(BOOL):
        return data
    data = bytearray(data)
    # Where: uniform over the file. Hypothesis would favour its ends, and a file cut at 0 or with
    # its first byte changed stops every reader at its first check.
    rng = np.random.default_rng(draw(SEED))
    for kind in draw(DAMAGE):
        at = int(rng.integers(0, len(data) + 1))
        if kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(INSERTED)
        elif at < len(data):
            if kind == "flip":
                data[at] ^= 1 << draw(BIT)
            elif kind == "set":
                data[at] = draw(BYTE)
            else:
                del data[at:at + draw(SPAN)]
    return bytes(data)


# --- IDX ------------------------------------------------------------------------------------------

TYPE_CODE = st.sampled_from(sorted(IDX_DTYPES)) | BYTE
# Dimensions: mostly small, sometimes the sizes that break arithmetic (2^32 - 1, 2^31) or claim
# gigabytes (a header is 4 bytes per dimension, so claims cost nothing to make).
DIMENSION = st.integers(0, 6) | st.sampled_from([0, 1, 28, 60_000, 1_000_000, 2**31, 2**32 - 1])
ANY_SHAPE = st.lists(DIMENSION, max_size=5)
ITEM_SHAPE = st.lists(st.integers(1, 6), min_size=2, max_size=2)  # an image's height and width
ONE_IN_FOUR = st.integers(0, 3)
MAX_PAYLOAD = 4096  # bytes; a header that claims more gets a short payload (a truncated file)
# Payload bytes: zeros, anything, or values 0..11 (labels mostly in range, a few out of it).
PAYLOAD = st.sampled_from(["zeros", "any", "small"])
MAGIC_START = st.binary(min_size=2, max_size=2)  # IDX's magic starts 00 00; these rarely do
COUNT = st.integers(0, 5)
GZIP_LEVEL = st.integers(0, 9)


@st.composite
def idx_file(draw, count: int, ndim: int) -> bytes:
    """One IDX file, ndim 3 for images and 1 for labels: three in four as MNIST's (uint8, `count`
    items), the others any type code and shape, or random bytes alone or behind a gzip header;
    then perhaps damaged, gzip-compressed, and damaged again."""
    if draw(ONE_IN_TEN) == 0:
        return draw(st.just(b"") | st.just(b"\x1f\x8b")) + draw(RANDOM_BYTES)
    if draw(ONE_IN_FOUR) == 0:
        code, shape = draw(TYPE_CODE), draw(ANY_SHAPE)
    else:
        code, shape = 0x08, [count, *draw(ITEM_SHAPE)] if ndim == 3 else [count]
    itemsize = IDX_DTYPES[code].itemsize if code in IDX_DTYPES else 1
    size = math.prod(shape) * itemsize  # Python ints: 2^32 - 1 cubed does not overflow
    rng = np.random.default_rng(draw(SEED))
    if size > MAX_PAYLOAD:
        size = int(rng.integers(0, 64))
    top = {"zeros": 1, "any": 256, "small": 12}[draw(PAYLOAD)]
    payload = rng.integers(0, top, size, dtype=np.uint8)
    magic = draw(MAGIC_START) if draw(ONE_IN_TEN) == 0 else b"\x00\x00"
    header = magic + bytes([code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    data = draw(damaged(header + payload.tobytes()))
    if draw(BOOL):
        data = draw(damaged(gzip.compress(data, compresslevel=draw(GZIP_LEVEL))))
    return data


@st.composite
def idx_pairs(draw) -> tuple[bytes, bytes]:
    """(images file, labels file); half the time both announce the same count."""
    count = draw(COUNT)
    labels_count = count if draw(BOOL) else draw(COUNT)
    return draw(idx_file(count, 3)), draw(idx_file(labels_count, 1))


# --- images -----------------------------------------------------------------------------------------

# The modes each format writes (checked with Pillow 12: each saves and reads back), so that every
# decoder and every branch of preprocess._image_channels gets whole files to start from.
FORMAT_MODES = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "BMP": ("1", "L", "P", "RGB"),
    "GIF": ("L", "P"),
    "TIFF": ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I;16", "I", "F"),
    "WEBP": ("RGB", "RGBA"),
}
FORMAT = st.sampled_from(sorted(FORMAT_MODES))
MODES = {fmt: st.sampled_from(modes) for fmt, modes in FORMAT_MODES.items()}
MAGIC = st.just(b"") | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a", b"II*\x00",
                                        b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "])
SIDE = st.integers(1, 64) | st.integers(65, 400)  # pixels; a page to read is larger than one digit
UNIT = st.floats(0, 1)
STROKES = st.lists(st.tuples(UNIT, UNIT, UNIT, UNIT, st.integers(1, 12)), max_size=4)  # x0, y0, x1, y1, width
NOISE = st.integers(0, 40)  # grey levels, standard deviation
JPEG_QUALITY = st.integers(1, 95)
EXIF_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")
ORIENTATION = 0x0112  # the EXIF tag that load_image applies
ORIENTATION_VALUE = st.integers(0, 9) | st.integers(0, 65_535)  # 1-8 are defined
EXIF_BYTES = st.binary(max_size=128)
DECLARED_SIDE = st.integers(0, 2**31 - 1) | st.sampled_from([0, 1, 65_535, 100_000])
SCALE = {"I;16": st.sampled_from([1, 257]), "I": st.sampled_from([1, 257, 65_536, -1]),
         "F": st.sampled_from([1 / 255, 1.0, 1e6, -1.0])}
NOT_FINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def image_files(draw) -> bytes:
    """An image file: strokes drawn on a ground, in any mode its format writes, then given a
    forged header size and damaged; or random bytes, alone or behind a format's magic number."""
    if draw(ONE_IN_TEN) == 0:
        return draw(MAGIC) + draw(RANDOM_BYTES)
    fmt = draw(FORMAT)
    image = _in_mode(draw, *_drawing(draw), draw(MODES[fmt]))
    options = {"quality": draw(JPEG_QUALITY)} if fmt == "JPEG" else {}
    if fmt in EXIF_FORMATS and draw(BOOL):
        options["exif"] = _exif(draw, raw_bytes=fmt != "TIFF")  # TIFF's writer parses the block itself
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    data = buffer.getvalue()
    if draw(BOOL):
        data = _declare_size(data, fmt, draw(DECLARED_SIDE), draw(DECLARED_SIDE))
    return draw(damaged(data))


def _drawing(draw) -> tuple[np.ndarray, np.ndarray]:
    """(grey uint8 (H, W), stroke mask bool): up to four straight strokes on a ground, plus noise."""
    height, width = draw(SIDE), draw(SIDE)
    grey = np.full((height, width), draw(BYTE), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    ink = draw(BYTE)
    for x0, y0, x1, y1, thickness in draw(STROKES):
        ends = [(round(x * (width - 1)), round(y * (height - 1))) for x, y in ((x0, y0), (x1, y1))]
        cv2.line(grey, *ends, ink, thickness)
        cv2.line(mask, *ends, 1, thickness)
    noise = draw(NOISE)
    if noise:
        rng = np.random.default_rng(draw(SEED))
        grey = np.clip(grey + rng.normal(0, noise, grey.shape), 0, 255).astype(np.uint8)
    return grey, mask.astype(bool)


def _in_mode(draw, grey: np.ndarray, strokes: np.ndarray, mode: str) -> Image.Image:
    """The drawing as a PIL image of `mode`: alpha opaque on the strokes and anything on the
    ground; 16- and 32-bit integers and floats scaled by a drawn factor (floats may hold NaN)."""
    if mode in ("LA", "RGBA", "PA"):
        alpha = np.where(strokes, 255, draw(BYTE)).astype(np.uint8)
        return Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA").convert(mode)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * draw(SCALE[mode]))
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * draw(SCALE[mode]))
    if mode == "F":
        values = grey.astype(np.float32) * np.float32(draw(SCALE[mode]))
        if draw(BOOL):
            values.flat[draw(st.integers(0, values.size - 1))] = draw(NOT_FINITE)
        return Image.fromarray(values)
    return Image.fromarray(grey).convert(mode)


def _exif(draw, raw_bytes: bool) -> bytes | Image.Exif:
    """An EXIF block: an orientation (1-8 are defined; any 16-bit value), or where the format
    embeds the block as it is (`raw_bytes`), random bytes half the time."""
    if raw_bytes and draw(BOOL):
        return b"Exif\x00\x00" + draw(EXIF_BYTES)
    exif = Image.Exif()
    exif[ORIENTATION] = draw(ORIENTATION_VALUE)
    return exif


def _declare_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """The file with its header declaring width x height, the pixel data untouched: a tiny PNG
    claiming 100000x100000 pixels. PNG's header checksum is recomputed so that the claim is
    believed. TIFF and WebP have no fixed place for the size: they come back as they were."""
    data = bytearray(data)
    if fmt == "PNG":  # IHDR: width, height big-endian at 16; CRC of type and fields at 29
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif fmt == "BMP":  # BITMAPINFOHEADER: signed little-endian; a negative height means top-down
        data[18:26] = struct.pack("<ii", width, height - 2**31 if height >= 2**30 else height)
    elif fmt == "GIF":  # logical screen, 16-bit little-endian
        data[6:10] = struct.pack("<HH", width % 65_536, height % 65_536)
    elif fmt == "JPEG":  # the first start-of-frame marker: height, width big-endian
        for marker in (b"\xff\xc0", b"\xff\xc2"):
            at = data.find(marker)
            if at >= 0:
                data[at + 5:at + 9] = struct.pack(">HH", height % 65_536, width % 65_536)
                break
    return bytes(data)
