"""Digits that are not MNIST-style (USPS's 16x16, Optdigits' 32x32) made MNIST-style at load time,
by the preparation `digitlab predict` gives an image file: `preprocess.to_mnist_style`.

Each digit is handed over as the image it would be as a file, dark ink on white uint8 (as
real-digits/usps/png/ renders USPS), so a dataset's digit and `predict` on its picture are the same
28x28 array, byte for byte: training and reading see digits the same way.

It costs about 0.5 ms a digit (USPS's 9,298 digits took 4.4 s on a 2-core AMD EPYC, 2026-12-06), so a
file's prepared digits are kept: in memory for the process, and on disk in PREPARED_DIR
(~/.cache/digitlab/.prepared/, or $DIGITLAB_PREPARED), the raw (N, 1, 28, 28) uint8 bytes (no
.npy: nothing that a loader could unpickle) named by the file's SHA-256 and by a
fingerprint of the preparation (preprocess.py's and this module's source, OpenCV's and numpy's
versions), so that a changed file or a changed preparation is never served from it. Reading it back
takes 0.35 s for USPS (the file is still read and checked in full). It is only a cache: a folder that cannot
be written, or an entry that is not what it should be, means preparing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, WriteError
from ..files import atomic_write

if TYPE_CHECKING:
    import torch

_PREPARED: dict[tuple[str, str], np.ndarray] = {}  # (reader, SHA-256 of the file) -> (N, 1, 28, 28) uint8
_MAX_PREPARED = 8  # files kept; USPS's two take 7.3 MB
PREPARED_ENV = "DIGITLAB_PREPARED"
PREPARED_DIR = Path("~/.cache/digitlab/.prepared")


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepared_digits(
    key: tuple[str, str], path: Path, pictures: Callable[[], np.ndarray], where: Callable[[int], str]
) -> np.ndarray:
    """(N, 1, 28, 28) uint8, ink bright, of the (N, H, W) uint8 dark-on-light `pictures()`.

    `key` names the reader and the file's contents; `where(i)` says where digit i is in `path`
    ("line 17"), for the DataError of a digit that holds no ink to prepare.
    """
    if key in _PREPARED:
        return _PREPARED[key].copy()
    from ..preprocess import ImageError, to_mnist_style  # cv2: imported when a dataset is read, not at start-up

    greys = pictures()
    cached = _cache_path(key)
    out = _read_cache(cached, len(greys))
    if out is not None:
        _remember(key, out)
        return out.copy()
    out = np.empty((len(greys), 1, 28, 28), np.uint8)
    for i, grey in enumerate(greys):
        try:
            out[i, 0] = to_mnist_style(grey)
        except ImageError as err:
            raise DataError(
                f"{path}, {where(i)}: digit {i + 1} cannot be prepared MNIST-style ({err}): a damaged file; "
                "delete it and download it again"
            ) from err
    with contextlib.suppress(WriteError):  # only a cache: a read-only home folder just means no cache
        atomic_write(cached, lambda tmp: _save(tmp, out))
    _remember(key, out)
    return out.copy()


def _save(path: Path, out: np.ndarray) -> None:
    path.write_bytes(np.ascontiguousarray(out, np.uint8).tobytes())


def _remember(key: tuple[str, str], out: np.ndarray) -> None:
    if len(_PREPARED) >= _MAX_PREPARED:
        _PREPARED.pop(next(iter(_PREPARED)))
    _PREPARED[key] = out


def _cache_path(key: tuple[str, str]) -> Path:
    """The cache entry of `key`'s file under today's preparation."""
    import cv2

    from .. import preprocess

    fingerprint = hashlib.sha256()
    for source in (preprocess.__file__, __file__):
        fingerprint.update(Path(source).read_bytes())
    fingerprint.update(f"{cv2.__version__} {np.__version__}".encode())
    root = Path(os.environ.get(PREPARED_ENV) or PREPARED_DIR).expanduser()
    return root / f"{key[0]}-{key[1][:32]}-{fingerprint.hexdigest()[:32]}.u8"


def _read_cache(path: Path, count: int) -> np.ndarray | None:
    """The cached digits, or None where there are none or they are not count digits' bytes."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != count * 28 * 28:
        return None
    return np.frombuffer(data, np.uint8).reshape(count, 1, 28, 28).copy()


def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
