"""CIFAR-10, binary version, read straight from `cifar-10-binary.tar.gz`.

Nothing is extracted to disk and nothing is unpickled: the archive is read in one pass and only
members with the exact expected names are looked at. Each batch is a run of 3073-byte
records: one label byte, then the red, green and blue 32x32 planes, each row by row.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = "cifar-10-batches-bin/test_batch.bin"
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + R, G, B planes


def read_cifar10_binary(
    archive_path: str | os.PathLike,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images, train labels, test images, test labels from the CIFAR-10 binary archive.

    Images are (N, 3, 32, 32) uint8 (RGB), labels (N,) int64 in 0..9; train is data batches 1 to 5
    in order. Raises DataError naming the archive when it is unreadable, truncated, lacks a batch,
    or a batch is not a whole number of valid records.
    """
    archive_path = Path(archive_path)
    batches = _read_members(archive_path, TRAIN_MEMBERS + (TEST_MEMBER,))
    train = [_parse_batch(batches[name], archive_path, name) for name in TRAIN_MEMBERS]
    test_images, test_labels = _parse_batch(batches[TEST_MEMBER], archive_path, TEST_MEMBER)
    # The parsed images are read-only views into the archive's bytes; concatenate and copy make
    # the writable, contiguous arrays that torch.from_numpy shares.
    train_images = torch.from_numpy(np.concatenate([images for images, _ in train]))
    train_labels = torch.from_numpy(np.concatenate([labels for _, labels in train]))
    return train_images, train_labels, torch.from_numpy(test_images.copy()), torch.from_numpy(test_labels)


def _read_members(archive_path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The contents of the members called exactly `names`, in one pass over the compressed stream."""
    try:
        raw = open(archive_path, "rb")
    except OSError as err:
        raise DataError(f"cannot read {archive_path}: {err.strerror}") from err
    found: dict[str, bytes] = {}
    # Each wanted member is read as soon as its header is met, so the gzip stream is inflated
    # once, front to back (seeking back would inflate it again from the start). Not stream mode
    # ("r|gz"): on an archive cut short it can end the iteration quietly, where gzip.GzipFile
    # under "r:gz" raises EOFError.
    try:
        with raw, tarfile.open(fileobj=raw, mode="r:gz") as archive:
            for member in archive:
                if member.name not in names:
                    continue
                if not member.isfile() or member.name in found:
                    raise DataError(f"{archive_path}: {member.name} is not a single regular file")
                data = archive.extractfile(member).read()
                if len(data) != member.size:
                    raise DataError(f"{archive_path}: {member.name} is truncated")
                found[member.name] = data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{archive_path}: corrupt or truncated archive ({err}); delete it and download it again"
        ) from err
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(
            f"{archive_path}: missing {', '.join(missing)}; not the whole CIFAR-10 binary archive "
            f"(the python version, cifar-10-python.tar.gz, is a different file)"
        )
    return found


def _parse_batch(data: bytes, archive_path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8, a read-only view of `data`, and labels (N,) int64 of one batch."""
    if not data or len(data) % RECORD_BYTES:
        raise DataError(
            f"{archive_path}: {name} holds {len(data)} bytes, "
            f"not a whole number of {RECORD_BYTES}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise DataError(f"{archive_path}: {name} record {bad} has label {labels[bad]}, out of range 0..9")
    # The planes are stored channel-first already, so a reshape is the whole conversion.
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE)
    return images, labels
