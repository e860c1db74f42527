"""USPS zip-code digits in the text format of "The Elements of Statistical Learning" (zip.train.gz,
zip.test.gz): one digit a line, its label (written "6.0000") then 256 grey values in [-1, 1], 16x16
row by row, -1 the background and 1 the ink.

Every field is checked (the number of values on each line, that each is a finite number, labels
0-9, values in [-1, 1], the number of lines) and a damaged file is refused with a DataError naming
the file and the line. A gzip stream's length is unknown until it is inflated, so it is inflated in
chunks and refused once it passes what `count` lines can hold (MAX_LINE_BYTES each).

The digits are made MNIST-style (28x28, ink bright, centre of mass at the centre) by the
preparation `predict` uses (prepare.py), from the dark-on-white picture each line is.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .download import read_capped
from .prepare import as_tensors, file_sha256, prepared_digits

if TYPE_CHECKING:
    import torch

USPS_SIDE = 16
USPS_FIELDS = 1 + USPS_SIDE * USPS_SIDE  # the label, then the pixels
# The published lines are 2,056 bytes ("-1.0000 " per value); twice that allows other spacing or
# more decimals, and bounds what a file of `count` digits may inflate to before it is refused.
MAX_LINE_BYTES = 2 * 8 * USPS_FIELDS
MAX_GZIP_BYTES = 1 << 24  # the stored file: zip.train.gz is 1.8 MB
CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


def read_usps(path: str | Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (count, 1, 28, 28) uint8 MNIST-style and labels (count,) int64 from one USPS file
    (gzip-compressed or not) that must hold exactly `count` digits."""
    path = Path(path)
    stored = read_capped(
        path,
        MAX_GZIP_BYTES,
        f"more than {MAX_GZIP_BYTES >> 20} MiB, larger than any USPS file: not the file it should be",
    )
    text = _text(path, stored, count * MAX_LINE_BYTES)
    values = _values(path, text, count)
    labels = values[:, 0]
    grey = values[:, 1:]
    bad_label = ~((labels == np.round(labels)) & (labels >= 0) & (labels <= 9))
    if bad_label.any():
        line = int(np.argmax(bad_label))
        raise DataError(f"{path}, line {line + 1}: label {labels[line]:g} is not a digit 0-9: a damaged file")
    bad_value = (grey < -1) | (grey > 1)
    if bad_value.any():
        line, column = np.unravel_index(int(np.argmax(bad_value)), grey.shape)
        raise DataError(
            f"{path}, line {line + 1}: grey value {column + 1} is {grey[line, column]:g}, outside [-1, 1]: "
            "a damaged file"
        )

    def pictures() -> np.ndarray:
        # As real-digits/usps/png/ renders them: dark ink (1 -> 0) on white (-1 -> 255).
        return np.round((1 - grey) / 2 * 255).astype(np.uint8).reshape(-1, USPS_SIDE, USPS_SIDE)

    images = prepared_digits(("usps", file_sha256(stored)), path, pictures, lambda i: f"line {i + 1}")
    return as_tensors(images, labels.astype(np.int64))


def _text(path: Path, stored: bytes, max_bytes: int) -> str:
    """The file's text, inflated when gzip-compressed (sniffed, not by its suffix), at most `max_bytes`."""
    if stored[:2] != GZIP_MAGIC:
        data = stored
    else:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
        parts, size = [], 0
        try:
            remaining = stored
            while not inflater.eof and size <= max_bytes:
                part = inflater.decompress(remaining, min(CHUNK_BYTES, max_bytes + 1 - size))
                if not part and not inflater.unconsumed_tail and not inflater.eof:
                    raise EOFError("the gzip stream ends before its end marker")
                remaining = inflater.unconsumed_tail
                parts.append(part)
                size += len(part)
            if inflater.unused_data:
                raise EOFError(f"{len(inflater.unused_data)} bytes follow the end of the gzip stream")
        except (zlib.error, EOFError) as err:
            raise DataError(f"{path}: corrupt or truncated gzip data ({err}); delete it and download it again") from err
        if size > max_bytes:
            raise DataError(
                f"{path}: inflates to more than {max_bytes:,} bytes, more than its digits can take: "
                "damaged, or not the file it should be"
            )
        data = b"".join(parts)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: a byte that is not text (0x{data[err.start]:02x}): a damaged file"
        ) from err


def _values(path: Path, text: str, count: int) -> np.ndarray:
    """(count, 257) float64 from the text: every line checked for its number of values and that each
    is a finite number."""
    lines = text.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()
    rows = [line.split() for line in lines]
    for number, fields in enumerate(rows, 1):
        if len(fields) != USPS_FIELDS:
            raise DataError(
                f"{path}, line {number}: {len(fields)} values, expected {USPS_FIELDS} (a label and "
                f"{USPS_SIDE}x{USPS_SIDE} grey values): truncated or damaged; delete it and download it again"
            )
    if len(rows) != count:
        raise DataError(
            f"{path}: {len(rows):,} digits, expected {count:,}: truncated, or not the file it should be; "
            "delete it and download it again"
        )
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        for number, fields in enumerate(rows, 1):
            for column, field in enumerate(fields):
                if not _is_finite_number(field):
                    what = "the label" if column == 0 else f"grey value {column}"
                    raise DataError(f"{path}, line {number}: {what} is {field[:20]!r}, not a number: a damaged file")
    return values


def _is_finite_number(field: str) -> bool:
    try:
        return bool(np.isfinite(float(field)))
    except ValueError:
        return False
