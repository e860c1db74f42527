"""Digits that are not MNIST-style (USPS's 16x16, Optdigits' 32x32) made MNIST-style at load time,
by the preparation `digitlab predict` gives an image file: `preprocess.to_mnist_style`.

Each digit is handed over as the image it would be as a file, dark ink on white uint8 (as
real-digits/usps/png/ renders USPS), so a dataset's digit and `predict` on its picture are the same
28x28 array, byte for byte: training and reading see digits the same way.

It costs about 1.6 ms a digit (USPS's 9,298 digits take some 15 s on one core), so a file's prepared
digits are kept in memory for the process, keyed by the file's SHA-256: the second load is free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    import torch

_PREPARED: dict[tuple[str, str], np.ndarray] = {}  # (reader, SHA-256 of the file) -> (N, 1, 28, 28) uint8
_MAX_PREPARED = 8  # files kept; USPS's two take 7.3 MB


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
    out = np.empty((len(greys), 1, 28, 28), np.uint8)
    for i, grey in enumerate(greys):
        try:
            out[i, 0] = to_mnist_style(grey)
        except ImageError as err:
            raise DataError(
                f"{path}, {where(i)}: digit {i + 1} cannot be prepared MNIST-style ({err}): a damaged file; "
                "delete it and download it again"
            ) from err
    if len(_PREPARED) >= _MAX_PREPARED:
        _PREPARED.pop(next(iter(_PREPARED)))
    _PREPARED[key] = out
    return out.copy()


def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
