"""CIFAR-10, binary version, read straight from `cifar-10-binary.tar.gz`.

Nothing is extracted to disk and nothing is unpickled: the archive is read in one pass and only
members with the exact expected names are looked at. Each batch is a run of 3073-byte
records: one label byte, then the red, green and blue 32x32 planes, each row by row.

The archive's sizes are known, and checked before anything is read: 2.4 MB of gzip can hold a
2 GiB member (which took 4.6 GB and loaded as 700,000 records) or a 1 GiB long-name header
(which tarfile reads into memory whole: 2.4 GB). So a batch may hold at most its 10,000
records, tarfile is never let read more than MAX_READ bytes at once (only such headers ask
for more), and no more than MAX_ARCHIVE_BYTES are inflated in all.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = "cifar-10-batches-bin/test_batch.bin"
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + R, G, B planes
BATCH_BYTES = 10_000 * RECORD_BYTES  # 30,730,000: every batch of the real archive holds 10,000 records
# The real archive inflates to 184.4 MB: six batches, a readme and the class names.
MAX_ARCHIVE_BYTES = 192 << 20
MAX_MEMBERS = 64  # the real archive has 9; tarfile keeps an object for every member it passes
MAX_READ = 1 << 20  # bytes: tar headers are 512; digitlab reads members in chunks of this size


def read_cifar10_binary(
    archive_path: str | os.PathLike,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images, train labels, test images, test labels from the CIFAR-10 binary archive.

    Images are (N, 3, 32, 32) uint8 (RGB), labels (N,) int64 in 0..9; train is data batches 1 to 5
    in order. Raises DataError naming the archive when it is unreadable, truncated, lacks a batch,
    or a batch is not a whole number of valid records.
    """
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    archive_path = Path(archive_path)
    batches = _read_members(archive_path, TRAIN_MEMBERS + (TEST_MEMBER,))
    train = [_parse_batch(batches[name], archive_path, name) for name in TRAIN_MEMBERS]
    test_images, test_labels = _parse_batch(batches[TEST_MEMBER], archive_path, TEST_MEMBER)
    # The parsed images are views into the archive's bytes (strided: every record starts with its
    # label); concatenate and copy make the contiguous arrays that torch.from_numpy shares.
    train_images = torch.from_numpy(np.concatenate([images for images, _ in train]))
    train_labels = torch.from_numpy(np.concatenate([labels for _, labels in train]))
    return train_images, train_labels, torch.from_numpy(test_images.copy()), torch.from_numpy(test_labels)


class _Bounded:
    """The inflated archive as tarfile reads it, refusing any single read over MAX_READ bytes and
    anything past MAX_ARCHIVE_BYTES: tarfile reads a long-name or pax header in one read of the
    size the header gives, which the archive's author chooses."""

    def __init__(self, stream: gzip.GzipFile, archive_path: Path):
        self.stream, self.archive_path = stream, archive_path

    def read(self, size: int = -1) -> bytes:
        if not 0 <= size <= MAX_READ:
            raise DataError(
                f"{self.archive_path}: a tar header announces {size:,} bytes of long names or attributes; "
                "the CIFAR-10 archive has none: damaged, or not the CIFAR-10 binary archive"
            )
        self._check(self.stream.tell() + size)
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._check(offset)  # GzipFile seeks forward by inflating, in small chunks
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def _check(self, end: int) -> None:
        if end > MAX_ARCHIVE_BYTES:
            raise DataError(
                f"{self.archive_path}: inflates past {MAX_ARCHIVE_BYTES >> 20} MiB, where the CIFAR-10 binary "
                "archive inflates to 176 MiB: damaged, or not that archive"
            )


def _read_members(archive_path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The contents of the members called exactly `names`, in one pass over the compressed stream."""
    try:
        raw = open(archive_path, "rb")
    except OSError as err:
        raise DataError(f"cannot read {archive_path}: {err.strerror}") from err
    found: dict[str, bytes] = {}
    # Each wanted member is read as soon as its header is met, so the gzip stream is inflated
    # once, front to back (seeking back would inflate it again from the start). Not stream mode
    # ("r|"): on an archive cut short it can end the iteration quietly, where gzip.GzipFile
    # raises EOFError.
    try:
        with (
            raw,
            gzip.GzipFile(fileobj=raw) as stream,
            tarfile.open(fileobj=_Bounded(stream, archive_path), mode="r:") as archive,
        ):
            for count, member in enumerate(archive, 1):
                if count > MAX_MEMBERS:
                    raise DataError(
                        f"{archive_path} holds more than {MAX_MEMBERS} members; the CIFAR-10 binary "
                        "archive holds 9: damaged, or not that archive"
                    )
                if member.name in names:
                    found[member.name] = _member_bytes(archive, member, archive_path, found)
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


def _member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo, archive_path: Path, found: dict) -> bytearray:
    """A batch member's bytes, its size checked against a batch's from its header, read in chunks."""
    if not member.isfile() or member.sparse is not None or member.name in found:
        raise DataError(f"{archive_path}: {member.name} is not a single regular file")
    if member.size > BATCH_BYTES:
        raise DataError(
            f"{archive_path}: {member.name} announces {member.size:,} bytes, more than the "
            f"{BATCH_BYTES:,} of a CIFAR-10 batch (10,000 records): damaged, or not the CIFAR-10 archive"
        )
    data = bytearray(member.size)
    view, done = memoryview(data), 0
    with archive.extractfile(member) as file:
        while done < member.size and (got := file.readinto(view[done : done + MAX_READ])):
            done += got
    if done != member.size:
        raise DataError(f"{archive_path}: {member.name} is truncated")
    return data


def _parse_batch(data: bytes | bytearray, archive_path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8, a view of `data`, and labels (N,) int64 of one batch."""
    if not data or len(data) % RECORD_BYTES:
        raise DataError(
            f"{archive_path}: {name} holds {len(data)} bytes, not a whole number of {RECORD_BYTES}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise DataError(f"{archive_path}: {name} record {bad} has label {labels[bad]}, out of range 0..9")
    # The planes are stored channel-first already, so a reshape is the whole conversion.
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE)
    return images, labels
