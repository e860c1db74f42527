"""Image helpers shared by the tests: encoded images, and a tiny PNG declaring a huge size."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A small valid PNG whose header declares width x height (IHDR patched, CRC recomputed)."""
    data = bytearray(png_bytes(np.zeros((8, 8), np.uint8)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- hostile containers (issue 18): files whose headers lie about what decoding them costs ----------

# Formats Pillow writes (and reads) that digitlab does not read, with the modes each saves: every
# one must be refused unopened. AVIF and JPEG 2000 only where this Pillow has them.
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


def dds_file(flags: int = 0) -> bytes:
    """A 48x48 DDS (9 KB) with its pixel-format flags (bytes 80:84) set to `flags`: 0 is issue 18's,
    for which Pillow raised NotImplementedError."""
    data = bytearray(png_bytes(Image.new("RGBA", (48, 48)), "DDS"))
    data[80:84] = struct.pack("<I", flags)
    return bytes(data)
