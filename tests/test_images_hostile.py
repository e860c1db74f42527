"""Hostile image files (issue 18): formats digitlab does not read, containers whose embedded images
or tiles are far larger than their headers say, paths that are not files, names that would split
an error line, and commands that must write nothing when one of their inputs fails.

Every input is built here, in tmp_path or in memory; the ones that would allocate (on the code
before the fix) are bounded: they run in a child process with its peak RSS measured and its
address space capped, so that a regression fails the test instead of taking the machine's memory.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitlab.preprocess import (
    MAX_PIXELS,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    declared_size,
    load_image,
)
from imagetools import huge_png, png_bytes


def digit(size: int = 64) -> np.ndarray:
    """A white ground with a dark bar: enough ink for every entry point to accept."""
    image = np.full((size, size), 255, np.uint8)
    image[size // 4:-size // 4, size // 2 - 3:size // 2 + 3] = 0
    return image


def dds_with_bad_flags() -> bytes:
    """The issue's 9 KB DDS: pixel-format flags (bytes 80:84) set to 0."""
    data = bytearray(png_bytes(Image.new("RGBA", (48, 48)), "DDS"))
    data[80:84] = bytes(4)
    return bytes(data)


# --- declared_size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_declared_size_reads_the_header_of_every_accepted_format(tmp_path, fmt):
    data = png_bytes(Image.fromarray(digit()).resize((70, 50)), fmt)
    (tmp_path / "d").write_bytes(data)
    for source in (data, io.BytesIO(data), tmp_path / "d", str(tmp_path / "d"), Image.open(io.BytesIO(data))):
        assert declared_size(source) == (70, 50)
    assert declared_size(np.zeros((50, 70, 3), np.uint8)) == (70, 50)


def test_declared_size_refuses_as_load_image_does_without_decoding():
    bomb = huge_png(20000, 20000)
    with pytest.raises(ImageTooLargeError, match="400,000,000 pixels"):
        declared_size(bomb)
    with pytest.raises(ImageTooLargeError, match="limit of 1,000"):
        declared_size(png_bytes(digit()), max_pixels=1000)
    with pytest.raises(ImageTooLargeError, match="limit"):
        declared_size(png_bytes(digit()), max_bytes=100)
    with pytest.raises(NotAnImageError, match="not an image"):
        declared_size(b"1,2,3\n")
    with pytest.raises(NotAnImageError, match="DDS"):
        declared_size(dds_with_bad_flags())
    # The header only: a PNG cut after its header still has a declared size (load_image refuses it).
    cut = png_bytes(digit())[:60]
    assert declared_size(cut) == (64, 64)
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(cut)
    assert MAX_PIXELS == 40_000_000
