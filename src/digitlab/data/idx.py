"""IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the items in C order, big-endian. Everything in the
header is checked against the data that is actually there, and against what the caller knows
the file holds, before anything is built from it.

A gzip stream's length is unknown until it is inflated: 2 MB of gzip inflate to 2 GiB of zeros.
Behind a header claiming (2^31, 2^31, 1) such a file took 2.4 GB and 21 s to be called truncated,
so the claim itself is bounded first (MAX_IDX_BYTES, or the shape the caller expects), and the
stream is inflated in chunks that stop one byte past the claim.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    import torch

# Type code (third byte of the magic number) -> element type, big-endian as stored.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"  # an IDX file starts with two zero bytes, so the two never clash
CHUNK_BYTES = 1 << 22  # 4 MiB: large enough that the loop costs nothing next to inflating
# The most data an IDX file may announce: 5.3 times MNIST's training images (47 MB), enough for
# EMNIST's letters and digits (188 MB); a larger claim is refused before anything is read.
MAX_IDX_BYTES = 1 << 28


def read_idx(
    path: str | os.PathLike, *, dtype=None, shape: tuple[int | None, ...] | None = None, max_count: int | None = None
) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not), in native byte order.

    What the caller knows of the file is checked against its header before any data is read:
    `dtype`, the element type; `shape`, its dimensions with None for any size ((None, 28, 28)
    for MNIST's images); `max_count`, the most items along the first dimension.
    Raises DataError naming the file when it is unreadable, not IDX, not what the caller
    expects, announces more than MAX_IDX_BYTES, is corrupt, truncated, or longer than its
    header says.
    """
    expect = (None if dtype is None else np.dtype(dtype), shape, max_count)
    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from err
    with raw:
        # Sniff the content rather than trust the suffix: a file gunzipped but not renamed still reads.
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            return _parse_idx(raw, path, os.fstat(raw.fileno()).st_size, expect)
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                return _parse_idx(stream, path, None, expect)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip data ({err}); delete it and download it again") from err


def _parse_idx(stream: BinaryIO, path: Path, file_size: int | None, expect: tuple) -> np.ndarray:
    """Parse an open IDX stream. `file_size` is the stored size when known (uncompressed files);
    `expect` is read_idx's (dtype, shape, max_count)."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic number {magic.hex()} does not start with 0000)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x} (known: {known})")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: an IDX file with {ndim} dimensions is not supported (1 to 4)")
    header = stream.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    shape = struct.unpack(f">{ndim}I", header)
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # a Python int: no overflow however absurd the header
    # A zero dimension makes the claim 0 bytes, but numpy still refuses a shape whose other
    # dimensions multiply past its index range: (0, 2^32 - 1, 2^32 - 1), found by `bench fuzz`.
    if math.prod(d for d in shape if d) * dtype.itemsize > sys.maxsize:
        raise DataError(f"{path}: impossible IDX shape {shape}: its dimensions multiply past what an array can index")
    _check_expected(path, dtype, shape, expect)

    # Compare the size the header claims with what is there before reading or allocating anything
    # in proportion to the claim: a header saying 10^12 items fails here at once.
    if file_size is not None and file_size - 4 - 4 * ndim != expected:
        _raise_size_mismatch(path, shape, expected, file_size - 4 - 4 * ndim)
    if expected > MAX_IDX_BYTES:  # a gzip stream's length is unknown until inflated: bound the claim itself
        raise DataError(
            f"{path}: the header announces shape {shape} ({expected:,} bytes of data), more than the "
            f"{MAX_IDX_BYTES >> 20} MiB digitlab reads from an IDX file: a truncated or damaged file, "
            "or not a dataset file"
        )
    # A gzip stream's length is unknown until inflated, so read in chunks and stop one byte past
    # the claim: memory stays bounded by what the file really holds.
    data = bytearray()
    while len(data) <= expected:
        chunk = stream.read(min(CHUNK_BYTES, expected + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) != expected:
        _raise_size_mismatch(path, shape, expected, len(data))
    # A bytearray keeps the array writable, so torch.from_numpy can share it without a copy.
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _check_expected(path: Path, dtype: np.dtype, shape: tuple[int, ...], expect: tuple) -> None:
    """Raise DataError when the header's type or shape is not what read_idx's caller expects."""
    want_dtype, want_shape, max_count = expect
    matches = (want_dtype is None or dtype.newbyteorder("=") == want_dtype) and (
        want_shape is None
        or (len(shape) == len(want_shape) and all(w is None or d == w for d, w in zip(shape, want_shape)))
    )
    if matches and (max_count is None or shape[0] <= max_count):
        return
    wanted = " ".join(
        part
        for part in (
            want_dtype.name if want_dtype is not None else "",
            "("
            + ", ".join("N" if w is None else str(w) for w in want_shape)
            + ("," if len(want_shape) == 1 else "")
            + ")"
            if want_shape is not None
            else "",
            f"with at most {max_count:,} items" if max_count is not None else "",
        )
        if part
    )
    raise DataError(
        f"{path}: expected {wanted}, but the header announces {dtype.newbyteorder('=').name} "
        f"of shape {shape}: not the file it should be, or damaged; delete it and download it again"
    )


def _raise_size_mismatch(path: Path, shape: tuple[int, ...], expected: int, actual: int) -> None:
    if actual < expected:
        raise DataError(
            f"{path}: truncated: the header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {actual}; delete it and download it again"
        )
    raise DataError(
        f"{path}: longer than its header announces (shape {shape}, {expected} bytes of data): damaged "
        f"(a flipped bit in gzip data can lengthen it) or not an IDX file; delete it and download it again"
    )


def load_idx_pair(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    num_classes: int = 10,
    *,
    image_size: tuple[int, int] | None = None,
    max_count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from an MNIST-style pair of IDX files.

    Checks that the images are 3-D uint8 (of `image_size` (H, W) when given), the labels 1-D
    uint8, N is at most `max_count` when given (from the headers, before reading), the counts
    agree and every label is below `num_classes`.
    """
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    images = read_idx(
        images_path, dtype=np.uint8, shape=(None, *image_size) if image_size else None, max_count=max_count
    )
    labels = read_idx(labels_path, dtype=np.uint8, shape=(None,), max_count=max_count)
    if images.dtype != np.uint8 or images.ndim != 3 or 0 in images.shape:
        raise DataError(f"{images_path}: expected (N, H, W) uint8 images, found {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected (N,) uint8 labels, found {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(f"{labels_path}: label {labels[bad]} at index {bad} is out of range 0..{num_classes - 1}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
