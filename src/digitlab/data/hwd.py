"""HwD-1000: 1,000 28x28 PNGs of digits drawn with a black pen on white, and dataset.csv.

Layout (as published, github.com/niklashenning/hwd-1000-dataset): `dataset.csv` with the header
`image,label` and one row per image, `img/D-NNN.png` (D the digit, NNN 001..100). Every row is
checked (two fields, a relative path under img/ ending in .png, a label 0-9, no path twice), the
count is bounded before any image is decoded, and each image is prepared MNIST-style by
`preprocess.to_mnist_style`, the preparation `predict` uses (it finds the polarity itself: the
digits are dark on white, and come out ink bright).

HwD-1000 publishes no test split. digitlab's is fixed and deterministic: in the csv's row order,
every 10th row (rows 10, 20, ..., counting from 1) is a test digit, the other nine train: 900 /
100, and as the csv lists 100 digits per class in turn, 90 / 10 per class.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, DatasetNotFoundError

if TYPE_CHECKING:
    import torch

CSV_NAME = "dataset.csv"
HWD_COUNT = 1000  # as published; more rows than this are refused before any image is decoded
MAX_CSV_BYTES = 1 << 20  # the published csv is 17 KB
TEST_EVERY = 10  # every 10th row (by the csv's order) is a test digit
SOURCE_REPO = "https://github.com/niklashenning/hwd-1000-dataset"


def read_hwd_csv(path: Path) -> list[tuple[str, int]]:
    """The (relative image path, label) rows of dataset.csv, each checked; DataError naming file and line."""
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise DataError(f"{path}: {size:,} bytes, more than the {MAX_CSV_BYTES:,} a HwD-1000 dataset.csv may have")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}): not HwD-1000's dataset.csv"
        ) from err
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [cell.strip() for cell in rows[0]] != ["image", "label"]:
        raise DataError(
            f"{path}: line 1 must be the header 'image,label', found {','.join(rows[0]) if rows else 'nothing'}"
        )
    entries: list[tuple[str, int]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue  # a blank line (a trailing newline)
        if len(entries) >= HWD_COUNT:
            raise DataError(f"{path}: more than {HWD_COUNT} rows (line {line}): not HwD-1000's dataset.csv")
        if len(row) != 2:
            raise DataError(f"{path}, line {line}: expected 2 fields (image,label), found {len(row)}")
        image, label = row[0].strip(), row[1].strip()
        parts = PurePosixPath(image).parts
        if len(parts) != 2 or parts[0] != "img" or not image.endswith(".png") or ".." in parts or "\\" in image:
            raise DataError(f"{path}, line {line}: image {image!r} is not a file img/NAME.png")
        if image in seen:
            raise DataError(f"{path}, line {line}: image {image} is listed twice")
        if label not in {str(d) for d in range(10)}:
            raise DataError(f"{path}, line {line}: label {label!r} is not a digit 0-9")
        seen.add(image)
        entries.append((image, int(label)))
    if not entries:
        raise DataError(f"{path}: no rows after the header")
    return entries


def require_hwd_images(folder: Path) -> list[tuple[str, int]]:
    """dataset.csv's rows, once every image they list is on disk; else DatasetNotFoundError naming the
    missing ones and where to get them (the images are not downloaded: a clone of the repository)."""
    entries = read_hwd_csv(folder / CSV_NAME)
    missing = [image for image, _ in entries if not (folder / image).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"the hwd-1000 dataset in {folder} lacks {len(missing)} of the {len(entries)} images its "
            f"{CSV_NAME} lists (first: {missing[0]}): copy the img/ folder of {SOURCE_REPO} into {folder}",
            details="missing: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""),
        )
    return entries


def read_hwd_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HwD-1000's train and test tensors (split: every 10th csv row is test), MNIST-style 28x28."""
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    from ..preprocess import ImageError, to_mnist_style

    entries = require_hwd_images(folder)
    images = np.empty((len(entries), 1, 28, 28), np.uint8)
    for i, (image, _) in enumerate(entries):
        try:
            images[i, 0] = to_mnist_style(folder / image)
        except ImageError as err:
            raise DataError(f"{folder / image}: {err} (HwD-1000 image {i + 1} of {len(entries)})") from err
    labels = np.array([label for _, label in entries], np.int64)
    test = (np.arange(len(entries)) + 1) % TEST_EVERY == 0
    return (
        torch.from_numpy(images[~test]),
        torch.from_numpy(labels[~test]),
        torch.from_numpy(images[test]),
        torch.from_numpy(labels[test]),
    )
