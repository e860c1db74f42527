"""UCI Optdigits 32x32 bitmaps (optdigits-orig.tra, optdigits-orig.cv): a text header of
`key = value` lines (after two lines of title), then per digit 32 lines of 32 '0'/'1' (1 the ink)
and a line with its label.

Every field is checked (the header's bitmap size and digit count, each bitmap line's length and
characters, each label 0-9, that the file ends where its digits do) and a damaged file is refused
with a DataError naming the file and the line. The file's size is bounded by what `count` digits
take before it is read.

The digits are made MNIST-style (28x28, ink bright, centre of mass at the centre) by the
preparation `predict` uses (prepare.py), from the black-on-white picture each bitmap is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .download import read_capped
from .prepare import as_tensors, file_sha256, prepared_digits

if TYPE_CHECKING:
    import torch

OPTDIGITS_SIDE = 32
BLOCK_LINES = OPTDIGITS_SIDE + 1  # the bitmap's rows, then the label
MAX_HEADER_LINES = 40  # the published header has 20
MAX_HEADER_BYTES = 4096
_BITMAP_ROW = re.compile(r"[01]{32}")
_HEADER_FIELD = re.compile(r"\s*(\w+)\s*=\s*(\S+)\s*")


def read_optdigits(path: str | Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (count, 1, 28, 28) uint8 MNIST-style and labels (count,) int64 from one Optdigits
    file that must hold exactly `count` digits."""
    path = Path(path)
    most = MAX_HEADER_BYTES + count * BLOCK_LINES * (OPTDIGITS_SIDE + 2)
    data = read_capped(
        path, most, f"more than {most:,} bytes, more than its digits can take: not the file it should be"
    )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: a byte that is not text (0x{data[err.start]:02x}): a damaged file"
        ) from err
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and not lines[-1]:
        lines.pop()
    start = _check_header(path, lines, count)
    body = lines[start:]
    if len(body) != count * BLOCK_LINES:
        whole = len(body) // BLOCK_LINES
        raise DataError(
            f"{path}: {len(body):,} lines after the header ({whole:,} whole digits), expected {count:,} digits of "
            f"{BLOCK_LINES} lines: truncated or damaged; delete it and download it again"
        )
    labels = np.empty(count, np.int64)
    for i in range(count):
        first = start + i * BLOCK_LINES
        for row in range(OPTDIGITS_SIDE):
            line = lines[first + row]
            if not _BITMAP_ROW.fullmatch(line):
                raise DataError(
                    f"{path}, line {first + row + 1}: expected a bitmap row of {OPTDIGITS_SIDE} '0'/'1', "
                    f"got {line[:40]!r}: a damaged file"
                )
        label = lines[first + OPTDIGITS_SIDE].strip()
        if len(label) != 1 or label not in "0123456789":
            raise DataError(
                f"{path}, line {first + OPTDIGITS_SIDE + 1}: label {label[:20]!r} is not a digit 0-9: a damaged file"
            )
        labels[i] = int(label)

    def pictures() -> np.ndarray:
        rows = "".join(lines[start + i] for i in range(len(body)) if i % BLOCK_LINES != OPTDIGITS_SIDE)
        ink = np.frombuffer(rows.encode("ascii"), np.uint8).reshape(count, OPTDIGITS_SIDE, OPTDIGITS_SIDE) - ord("0")
        return ((1 - ink) * 255).astype(np.uint8)  # black ink on white, as a scan of the bitmap looks

    images = prepared_digits(
        ("optdigits", file_sha256(data)), path, pictures, lambda i: f"line {start + i * BLOCK_LINES + 1}"
    )
    return as_tensors(images, labels)


def _check_header(path: Path, lines: list[str], count: int) -> int:
    """The index of the first bitmap line, after checking the header's bitmap size and digit count."""
    start = next((i for i, line in enumerate(lines[: MAX_HEADER_LINES + 1]) if _BITMAP_ROW.fullmatch(line)), None)
    if start is None:
        raise DataError(
            f"{path}: no bitmap row ({OPTDIGITS_SIDE} '0'/'1') in its first {MAX_HEADER_LINES + 1} lines: "
            "not an Optdigits file, or damaged"
        )
    fields = {}
    for line in lines[:start]:
        match = _HEADER_FIELD.fullmatch(line)
        if match:
            fields[match[1]] = match[2]
    expected = {"entwidth": OPTDIGITS_SIDE, "entheight": OPTDIGITS_SIDE, "ndigit": count}
    for key, want in expected.items():
        if fields.get(key) != str(want):
            got = f"says {key} = {fields[key]}" if key in fields else f"has no '{key} = ' line"
            raise DataError(
                f"{path}: its header {got}, expected {want}: not the Optdigits file it should be, or damaged"
            )
    return start
