"""Hypothesis strategies for the inputs `digitlab bench fuzz` feeds to digitlab: damaged files.

    idx_pairs()    (images, labels): two MNIST-style IDX files, as `load_idx_pair` reads them
    image_files()  the bytes of an image file, as `digitlab predict`, `read` and the service take it
    model_files()  a run directory's config.json, or an .onnx file, as `digitlab predict --model` takes it

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
import it only where Hypothesis is installed (bench/fuzz.py imports it lazily and says so).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import struct
import zlib

import cv2
import numpy as np
from hypothesis import strategies as st
from PIL import Image

from ..checkpoint import BUNDLED_RUN, CONFIG
from ..data.idx import IDX_DTYPES

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
                del data[at : at + draw(SPAN)]
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
# gzip bombs (issue 18): a header claiming a count to fill gigabytes, then a zero stream that inflates
# to at most 16 MiB (16 KB of gzip), so that the fuzzing process stays small even if a claim were
# believed. (2^31, 2^31, 1) is the issue's; 21,400 x 28 x 28 is about 16 MiB.
ONE_IN_32 = st.integers(0, 31)
BOMB_IMAGES = st.sampled_from([(2**31, 2**31, 1), (21_400, 28, 28), (60_000, 28, 28), (1_000_000, 28, 28)])
BOMB_LABELS = st.sampled_from([(2**31,), (16 << 20,), (60_000,), (2**32 - 1,)])
BOMB_ZEROS = st.sampled_from([64 << 10, 1 << 20, 16 << 20])  # bytes the zero stream inflates to


@st.composite
def idx_file(draw, count: int, ndim: int) -> bytes:
    """One IDX file, ndim 3 for images and 1 for labels: three in four as MNIST's (uint8, `count`
    items), the others any type code and shape, or random bytes alone or behind a gzip header;
    then perhaps damaged, gzip-compressed, and damaged again. One in 32 is a gzip bomb."""
    if draw(ONE_IN_TEN) == 0:
        return draw(st.just(b"") | st.just(b"\x1f\x8b")) + draw(RANDOM_BYTES)
    if draw(ONE_IN_32) == 0:
        shape = draw(BOMB_IMAGES if ndim == 3 else BOMB_LABELS)
        header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        return gzip.compress(header) + gzip_zeros(draw(BOMB_ZEROS))  # two gzip members read as one stream
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


@functools.cache
def gzip_zeros(size: int) -> bytes:
    """A gzip member inflating to `size` zero bytes (about size / 1000 of gzip), made once per size."""
    compressor, chunk = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)  # wbits 31: the gzip container
    parts = [compressor.compress(chunk[: min(len(chunk), size - start)]) for start in range(0, size, len(chunk))]
    return b"".join(parts) + compressor.flush()


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
MAGIC = st.just(b"") | st.sampled_from(
    [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "]
)
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
SCALE = {
    "I;16": st.sampled_from([1, 257]),
    "I": st.sampled_from([1, 257, 65_536, -1]),
    "F": st.sampled_from([1 / 255, 1.0, 1e6, -1.0]),
}
NOT_FINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def image_files(draw) -> bytes:
    """An image file: strokes drawn on a ground, in any mode its format writes, then given a
    forged header size and damaged; one in ten random bytes, alone or behind a format's magic
    number; one in ten a hostile container (`hostile_files`)."""
    branch = draw(ONE_IN_TEN)
    if branch == 0:
        return draw(MAGIC) + draw(RANDOM_BYTES)
    if branch == 1:
        return draw(hostile_files())
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
                data[at + 5 : at + 9] = struct.pack(">HH", height % 65_536, width % 65_536)
                break
    return bytes(data)


# --- hostile containers (issue 18) ------------------------------------------------------------------

# Formats Pillow writes (and reads) that digitlab does not read: each must be refused unopened
# (checked with Pillow 13: each mode saves and reads back; AVIF and JPEG 2000 where Pillow has them).
Image.init()
OTHER_FORMAT_MODES = {
    fmt: modes
    for fmt, modes in {
        "AVIF": ("L", "RGB", "RGBA"),
        "DDS": ("L", "RGB", "RGBA"),
        "DIB": ("1", "L", "RGB"),
        "ICNS": ("L", "RGBA"),
        "ICO": ("1", "L", "RGBA"),
        "IM": ("1", "L", "RGB"),
        "JPEG2000": ("L", "RGB"),
        "MSP": ("1",),
        "PCX": ("1", "L", "RGB"),
        "PPM": ("1", "L", "RGB"),
        "QOI": ("RGB", "RGBA"),
        "SGI": ("L", "RGB"),
        "SPIDER": ("L",),
        "TGA": ("L", "RGB", "RGBA"),
        "XBM": ("1",),
    }.items()
    if fmt in Image.SAVE
}
OTHER_FORMAT = st.sampled_from(sorted(OTHER_FORMAT_MODES))
OTHER_MODES = {fmt: st.sampled_from(modes) for fmt, modes in OTHER_FORMAT_MODES.items()}
HOSTILE = st.sampled_from(["ico", "icns", "tiff-tile", "dds", "other"])
# An embedded PNG's side: an icon's, or one that decodes to megabytes (13376 x 13376 is 179 MP, just
# under Pillow's own limit); those are cut after a few rows, which costs nothing to make.
EMBEDDED_SIDE = st.integers(1, 64) | st.sampled_from([256, 4000, 13376])
EMBEDDED_MODE = st.sampled_from(["L", "RGB", "RGBA"])
ICO_ENTRY_SIDE = st.integers(0, 255)  # 0 means 256
TILE_SIDE = st.sampled_from([16, 64, 112, 256, 1024, 32768, 2**31 - 1]) | st.integers(0, 4096)
TIFF_COMPRESSION = st.sampled_from([1, 8])  # none (Pillow's own decoder), deflate (libtiff)
DDS_FLAGS = st.sampled_from([0, 0x4, 0x40, 0x20000, 0x80000]) | st.integers(0, 2**32 - 1)


@st.composite
def hostile_files(draw) -> bytes:
    """A file whose headers lie about what decoding it costs, or in a format digitlab does not
    read: an ICO or ICNS wrapping a PNG far larger than its directory says, a TIFF whose tiles are
    larger than the image, a DDS with bad pixel-format flags, or the drawing in another format.
    Then perhaps damaged."""
    kind = draw(HOSTILE)
    rng = np.random.default_rng(draw(SEED))
    if kind in ("ico", "icns"):
        width, height = draw(EMBEDDED_SIDE), draw(EMBEDDED_SIDE)
        embedded = png_of_size(width, height, draw(EMBEDDED_MODE), rows=None if width * height <= 4096 else 4)
        data = ico_file(embedded, draw(ICO_ENTRY_SIDE)) if kind == "ico" else icns_file(embedded)
    elif kind == "tiff-tile":
        width, height = draw(SIDE), draw(SIDE)
        tile_width, tile_length = draw(TILE_SIDE), draw(TILE_SIDE)
        payload = rng.integers(0, 256, min(tile_width * tile_length, 4096), dtype=np.uint8).tobytes()
        data = tiled_tiff(width, height, tile_width, tile_length, payload, compression=draw(TIFF_COMPRESSION))
    elif kind == "dds":
        data = dds_file(draw(DDS_FLAGS))
    else:
        fmt = draw(OTHER_FORMAT)
        image = Image.fromarray(_drawing(draw)[0]).convert(draw(OTHER_MODES[fmt]))
        if fmt == "ICO" and min(image.size) < 16 <= max(image.size):  # ICO's writer: "All sizes too large"
            image = image.resize((max(16, image.width), max(16, image.height)))
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        data = buffer.getvalue()
    return draw(damaged(data))


def png_of_size(width: int, height: int, mode: str = "RGBA", rows: int | None = None) -> bytes:
    """A black PNG of width x height, compressed row by row (memory: one row), with all its rows or
    only the first `rows` (then cut short, without IEND: a decoder allocates the whole image first)."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    colour = {"L": 0, "RGB": 2, "RGBA": 6}[mode]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row = zlib.compressobj(9), bytes(1 + width * channels)  # filter byte 0, then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height if rows is None else min(rows, height)))
    idat += compressor.flush(zlib.Z_FINISH if rows is None or rows >= height else zlib.Z_SYNC_FLUSH)
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
    return head + chunk(b"IDAT", idat) + (chunk(b"IEND", b"") if rows is None or rows >= height else b"")


def ico_file(embedded: bytes, side: int = 0) -> bytes:
    """An ICO whose one directory entry (side x side; 0 means 256) holds `embedded` (a PNG) as it is."""
    return (
        struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(embedded), 22) + embedded
    )


def icns_file(embedded: bytes) -> bytes:
    """An ICNS with one 'ic10' (1024x1024 retina) icon holding `embedded` (a PNG) as it is."""
    return b"icns" + struct.pack(">I", 16 + len(embedded)) + b"ic10" + struct.pack(">I", 8 + len(embedded)) + embedded


def tiled_tiff(
    width: int, height: int, tile_width: int, tile_length: int, payload: bytes = b"", compression: int = 8
) -> bytes:
    """A grey 8-bit TIFF of width x height in one tile of tile_width x tile_length, holding `payload`
    (deflate-compressed for compression 8, as it is for 1): the tags say what they are told."""
    data = zlib.compress(payload or bytes(64)) if compression == 8 else (payload or bytes(64))
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, compression),
        (262, 3, 1),
        (277, 3, 1),
        (322, 4, tile_width),
        (323, 4, tile_length),
        (324, 4, 8 + 2 + 12 * 10 + 4),
        (325, 4, len(data)),
    ]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in tags
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(4) + data


def dds_file(flags: int) -> bytes:
    """A 48x48 DDS (9 KB) with its pixel-format flags (bytes 80:84) set to `flags`: 0 is issue 18's."""
    buffer = io.BytesIO()
    Image.new("RGBA", (48, 48)).save(buffer, "DDS")
    data = bytearray(buffer.getvalue())
    data[80:84] = struct.pack("<I", flags)
    return bytes(data)


# --- model files (issue 18) -------------------------------------------------------------------------

# The bundled model's config.json, the start of every config drawn (read as text: no torch here).
BUNDLED_CONFIG = json.loads((BUNDLED_RUN / CONFIG).read_text())
CONFIG_KIND = st.sampled_from(
    ["as-is", "deep", "big-int", "layers", "temperature", "damaged", "folder", "fifo", "dev-zero"]
)
DEPTH = st.integers(1, 64) | st.sampled_from([999, 5000, 100_000])  # json.loads gives up near 1000
DIGITS = st.integers(1, 40) | st.sampled_from([4300, 4301, 5000, 20_000])  # Python's limit is 4300
LAYERS = st.integers(0, 70) | st.sampled_from([20_000, 100_000])  # 20,000 took 56 s to refuse
TEMPERATURE = st.sampled_from(
    [
        "1e-320",
        "0",
        "-1",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e308",
        '"1"',
        "true",
        "null",
        "[]",
        "1",
        "0.5",
        "1e-3",
        "1000",
        "1e3000",
        "1" + "0" * 400,
    ]
)
FIELD = st.sampled_from(["recipe", "model", "dataset", "calibration"])


@st.composite
def config_files(draw) -> tuple[str, bytes]:
    """(kind, bytes): a config.json for a copy of the bundled run directory -- as it is, nested
    deep, holding an integer of thousands of digits, naming an mlp of up to 100,000 layers, with
    an odd calibration temperature, or damaged -- or, for kinds "folder", "fifo" and "dev-zero",
    no bytes: config.json is then made a folder, a FIFO or a link to /dev/zero."""
    kind = draw(CONFIG_KIND)
    if kind in ("folder", "fifo", "dev-zero"):
        return kind, b""
    config = json.loads(json.dumps(BUNDLED_CONFIG))
    marker = '"@value@"'
    if kind == "layers":
        config["model"] = {"name": draw(st.sampled_from(["mlp", "opencv-mlp"])), "args": {"hidden": [1] * draw(LAYERS)}}
    elif kind in ("deep", "big-int", "temperature"):
        if kind == "temperature":
            config["calibration"] = {"temperature": "@value@"}
        else:
            config[draw(FIELD)] = "@value@"
    if kind == "deep":
        depth = draw(DEPTH)
        value = "[" * depth + "]" * depth
    else:
        value = "9" * draw(DIGITS) if kind == "big-int" else draw(TEMPERATURE)
    data = json.dumps(config).replace(marker, value).encode()
    return kind, draw(damaged(data)) if kind == "damaged" else data


ONNX_KIND = st.sampled_from(["as-is", "allocating", "padded", "metadata", "stripped", "damaged"])
# Operators whose output size comes from their input data; none is in digitlab's export.
ALLOCATING = st.sampled_from(["ConstantOfShape", "Expand", "Tile", "Range"])
# Values they allocate: at most 2^24 floats (64 MiB), so that the fuzzing process stays small even if
# such a graph were run; the file asked for 250,000,000.
ALLOCATED = st.integers(0, 1000) | st.sampled_from([2**20, 2**24])
PADDING = st.integers(0, 8) | st.sampled_from([100, 2000, 2**20])
PARAMETERS = st.sampled_from(["²", "١٢٣", "-1", "1e9", "", "9" * 5000, "113898"]) | st.text(max_size=12)


@st.composite
def onnx_files(draw) -> bytes:
    """An ONNX model of digitlab's form -- uint8 images (batch, 1, 28, 28) -> Cast, Div, Conv,
    Flatten, Gemm -> logits (batch, 10), with digitlab's metadata -- then given an operator that
    allocates what its data says, a padding that makes the convolution's output enormous, odd
    metadata (a parameter count of '²', a config nested deep or with a NaN temperature), none of
    its metadata, or damage."""
    from onnx import TensorProto, helper  # here, not at the top: only the model target needs it (0.3 s to import)

    kind = draw(ONNX_KIND)
    rng = np.random.default_rng(draw(SEED))
    pads = draw(PADDING) if kind == "padded" else 1
    side = 28 + 2 * pads - 2  # a 3x3 convolution
    features = side * side if side * side <= 4096 else 784  # a large padding leaves the Gemm mismatched
    weights = [
        helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("kernel", TensorProto.FLOAT, [1, 1, 3, 3], rng.normal(size=9).tolist()),
        helper.make_tensor(
            "dense",
            TensorProto.FLOAT,
            [features, 10],
            rng.normal(0, 0.05, features * 10).astype(np.float32).tobytes(),
            raw=True,
        ),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["x", "scale"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "kernel"], ["conv"], pads=[pads] * 4),
        helper.make_node("Flatten", ["conv"], ["flat"]),
        helper.make_node("Gemm", ["flat", "dense"], ["logits" if kind != "allocating" else "before"]),
    ]
    if kind == "allocating":
        nodes += _allocating(draw(ALLOCATING), draw(ALLOCATED), weights)
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    config = {**BUNDLED_CONFIG, "model": {"name": "fuzz", "args": {}}}
    metadata = {"digitlab.config": json.dumps(config), "digitlab.parameters": str(9 + features * 10)}
    if kind == "metadata":
        _, text = draw(config_files())
        metadata = {"digitlab.config": text.decode("utf-8", "replace"), "digitlab.parameters": draw(PARAMETERS)}
    for key, value in ({} if kind == "stripped" else metadata).items():
        model.metadata_props.add(key=key, value=value)
    data = model.SerializeToString()
    return draw(damaged(data)) if kind == "damaged" else data


def _allocating(op: str, values: int, weights: list) -> list:
    """Nodes adding the sum of a tensor of `values` values, made by `op`, to the logits ("before")."""
    from onnx import TensorProto, helper  # onnx_files imported it already

    weights += [
        helper.make_tensor("count", TensorProto.INT64, [1], [values]),
        helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        helper.make_tensor("fzero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("fone", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("fcount", TensorProto.FLOAT, [], [float(values)]),
    ]
    make = {
        "ConstantOfShape": helper.make_node(
            "ConstantOfShape", ["count"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        "Expand": helper.make_node("Expand", ["one", "count"], ["big"]),
        "Tile": helper.make_node("Tile", ["one", "count"], ["big"]),
        "Range": helper.make_node("Range", ["fzero", "fcount", "fone"], ["big"]),
    }[op]
    return [
        make,
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Add", ["before", "total"], ["logits"]),
    ]


@st.composite
def model_files(draw) -> tuple[str, bytes]:
    """("config-KIND", bytes) for a run directory's config.json (`config_files`), or ("onnx", bytes)."""
    if draw(BOOL):
        kind, data = draw(config_files())
        return f"config-{kind}", data
    return "onnx", draw(onnx_files())
