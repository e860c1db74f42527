"""Datasets by name: one registry, whole datasets as in-memory uint8 tensors.

    data = load_dataset("mnist")        # downloads into the data directory when missing
    data.train_images.shape, data.mean  # (60000, 1, 28, 28), (0.1307,)

A new dataset is one `DatasetSpec` in `DATASETS`: its upstream files and a function that reads
them from their folder into train and test tensors.

The registry's plain facts (names, classes, image shapes, files) come without torch, which takes
a second to import: `digitlab recipes` and `digitlab data list` need none of it. The readers
import it when they read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from ..errors import DataError, unknown_name
from .cifar import CIFAR10_CLASSES, read_cifar10_binary
from .dataset import Dataset, channel_stats, split_sources, split_validation
from .download import RemoteFile, fetch_missing, missing_files_error, resolve_data_dir, verify_file
from .hwd import read_hwd_folder, require_hwd_images
from .idx import load_idx_pair
from .optdigits import read_optdigits
from .orand import orand_crops, orand_strings, read_orand_folder, require_orand_images
from .usps import read_usps

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "dataset_names",
    "describe_datasets",
    "download_dataset",
    "load_dataset",
    "orand_crops",
    "orand_strings",
    "resolve_data_dir",
    "split_sources",
    "split_validation",
    "verify_dataset",
]

# train images, train labels, test images, test labels
Splits: TypeAlias = "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]"


@dataclass(frozen=True)
class DatasetSpec:
    """What digitlab knows about a dataset: where it comes from and how to read it."""

    name: str  # also the name of its folder in the data directory
    description: str
    source: str  # authors, where it is published, licence
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)
    files: tuple[RemoteFile, ...]  # empty for a dataset bundled with a library
    read: Callable[[Path], Splits]  # its folder -> the four tensors
    # For a dataset with files no RemoteFile fetches (images from a clone): raises DatasetNotFoundError
    # naming those missing from the folder and where to get them; `download_dataset` calls it last.
    require: Callable[[Path], object] | None = None


# The four MNIST-format files; MNIST and Fashion-MNIST use the same names.
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_files(md5s: tuple[str, str, str, str], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, mirrors, md5=md5) for name, md5 in zip(IDX_FILES, md5s, strict=True))


# MNIST's and Fashion-MNIST's images are 28x28, 60,000 to train on and 10,000 to test: the headers
# are checked against these before any data is read (a 2 MB gzip claiming (2^31, 2^31, 1) was
# inflated to 2 GiB first). The counts are maxima, not exact, so that a subset still reads.
IDX_IMAGE_SIZE = (28, 28)
IDX_COUNTS = (60_000, 10_000)  # train, test


def _read_idx_folder(folder: Path) -> Splits:
    train_images, train_labels = load_idx_pair(
        folder / IDX_FILES[0], folder / IDX_FILES[1], image_size=IDX_IMAGE_SIZE, max_count=IDX_COUNTS[0]
    )
    test_images, test_labels = load_idx_pair(
        folder / IDX_FILES[2], folder / IDX_FILES[3], image_size=IDX_IMAGE_SIZE, max_count=IDX_COUNTS[1]
    )
    return train_images, train_labels, test_images, test_labels


def _read_cifar10(folder: Path) -> Splits:
    return read_cifar10_binary(folder / "cifar-10-binary.tar.gz")


def _read_digits8x8(folder: Path) -> Splits:
    """scikit-learn's bundled 8x8 digits (no files, fully offline) with a fixed stratified split."""
    # Imported here: scikit-learn takes about a second to import and only this dataset needs it;
    # torch (1 s) as in the other readers, so that the registry needs none.
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are counts 0..16 of set pixels in 4x4 blocks; scale them to the uint8 range.
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    splits = (train_images, train_labels, test_images, test_labels)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in splits)


# USPS and Optdigits files hold exactly these many digits (train, test); their readers refuse others.
USPS_FILES = ("zip.train.gz", "zip.test.gz")
USPS_COUNTS = (7_291, 2_007)
OPTDIGITS_FILES = ("optdigits-orig.tra", "optdigits-orig.cv")
OPTDIGITS_COUNTS = (1_934, 946)


def _read_usps(folder: Path) -> Splits:
    train = read_usps(folder / USPS_FILES[0], USPS_COUNTS[0])
    test = read_usps(folder / USPS_FILES[1], USPS_COUNTS[1])
    return (*train, *test)


def _read_optdigits(folder: Path) -> Splits:
    train = read_optdigits(folder / OPTDIGITS_FILES[0], OPTDIGITS_COUNTS[0])
    test = read_optdigits(folder / OPTDIGITS_FILES[1], OPTDIGITS_COUNTS[1])
    return (*train, *test)


DIGIT_CLASSES = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            description="MNIST handwritten digits, 28x28 grey, 60000 train / 10000 test",
            source="Yann LeCun, Corinna Cortes, Christopher J.C. Burges; CC BY-SA 3.0",
            classes=DIGIT_CLASSES,
            image_shape=(1, 28, 28),
            files=_idx_files(
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
                (
                    "http://yann.lecun.com/exdb/mnist/",  # the original
                    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
                ),
            ),
            read=_read_idx_folder,
        ),
        DatasetSpec(
            name="fashion-mnist",
            description="Fashion-MNIST clothing images, 28x28 grey, 60000 train / 10000 test",
            source="Zalando Research (Xiao, Rasul, Vollgraf 2017); MIT licence",
            classes=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            image_shape=(1, 28, 28),
            files=_idx_files(
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
                (
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # the original
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
                ),
            ),
            read=_read_idx_folder,
        ),
        DatasetSpec(
            name="cifar10",
            description="CIFAR-10 colour photos in 10 classes, 32x32 RGB, 50000 train / 10000 test",
            source="Alex Krizhevsky, Vinod Nair, Geoffrey Hinton (Krizhevsky 2009); no licence stated, cite the report",
            classes=CIFAR10_CLASSES,
            image_shape=(3, 32, 32),
            # The Toronto page is the only source we know to serve this exact file; no mirror is listed
            # rather than one we cannot vouch for.
            files=(
                RemoteFile(
                    "cifar-10-binary.tar.gz",
                    ("https://www.cs.toronto.edu/~kriz/",),
                    md5="c32a1d4ab5d03f1284b67883e8d87530",
                ),
            ),
            read=_read_cifar10,
        ),
        DatasetSpec(
            name="digits8x8",
            description="scikit-learn's 8x8 handwritten digits, offline, 1437 train / 360 test (fixed split)",
            source="UCI Optical Recognition of Handwritten Digits, bundled with scikit-learn; CC BY 4.0",
            classes=DIGIT_CLASSES,
            image_shape=(1, 8, 8),
            files=(),
            read=_read_digits8x8,
        ),
        DatasetSpec(
            name="hwd-1000",
            description="HwD-1000 pen-drawn digits, 28x28 PNGs prepared MNIST-style, 900 train / 100 test "
            "(every 10th row of dataset.csv is test: HwD-1000 publishes no split)",
            source="Niklas Henning, github.com/niklashenning/hwd-1000-dataset; MIT licence",
            classes=DIGIT_CLASSES,
            image_shape=(1, 28, 28),
            # dataset.csv only: its 1,000 images (img/) come from a clone of the repository, and the
            # reader names the ones missing. The SHA-256 is that of the file at this commit.
            files=(
                RemoteFile(
                    "dataset.csv",
                    (
                        "https://raw.githubusercontent.com/niklashenning/hwd-1000-dataset/"
                        "985b7a4b5081b64bb62bcf5a8cd3bce4cfd86dd1/",
                    ),
                    sha256="ea9a3819887f5b16eff22bb9f43124a62f543998cbd94fb3dc1fe16147494c13",
                ),
            ),
            read=read_hwd_folder,
            require=require_hwd_images,
        ),
        DatasetSpec(
            name="orand-car-a",
            description="ORAND-CAR-A cheque-amount digits, one crop per box prepared MNIST-style: train = "
            "images a_car_000154-001099, test = the dev split (a_car_001100 and above), for reporting only",
            source="ORAND-CAR-A (ICFHR 2014 HDSR competition); boxes by Fzkuji, github.com/Fzkuji/"
            "Labeled_ORAND-CAR-A, MIT licence",
            classes=DIGIT_CLASSES,
            image_shape=(1, 28, 28),
            # The annotations only: the 1,080 images (images/train2017/) come from a clone of the
            # repository, and the reader names the ones missing.
            files=(
                RemoteFile(
                    "annotations/instances_train2017.json",
                    (
                        "https://raw.githubusercontent.com/Fzkuji/Labeled_ORAND-CAR-A/"
                        "ffb6268437de5d18d94bc111f83458ff43a267ef/ORAND-CAR-2014-coco/",
                    ),
                    sha256="eda12b414716873004f5813e219399b10f61edc71e61e85cec531b6edf1a4125",
                ),
            ),
            read=read_orand_folder,
            require=require_orand_images,
        ),
        DatasetSpec(
            name="usps",
            description="USPS zip-code digits, 16x16 grey made MNIST-style 28x28, 7291 train / 2007 test",
            source="US Postal Service (Le Cun et al. 1990), as published with The Elements of Statistical Learning "
            "(Hastie, Tibshirani, Friedman)",
            classes=DIGIT_CLASSES,
            image_shape=(1, 28, 28),
            # ESL's copy as kept in a GitHub repository, at a fixed commit (the files' SHA-256 pinned).
            files=tuple(
                RemoteFile(
                    name,
                    (
                        "https://raw.githubusercontent.com/dgkim5360/the-elements-of-statistical-learning-notebooks/"
                        "004d7fc15711986d76dcccbed203ad1a74c06c62/data/zipcode/",
                    ),
                    sha256=sha256,
                )
                for name, sha256 in zip(
                    USPS_FILES,
                    (
                        "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16",
                        "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f",
                    ),
                    strict=True,
                )
            ),
            read=_read_usps,
        ),
        DatasetSpec(
            name="optdigits",
            description="UCI Optdigits 32x32 bitmaps made MNIST-style 28x28, 1934 train / 946 test (.cv)",
            source="UCI Optical Recognition of Handwritten Digits (Alpaydin, Kaynak 1995); CC BY 4.0",
            classes=DIGIT_CLASSES,
            image_shape=(1, 28, 28),
            # UCI serves these only compressed (.Z); the plain files as kept in a GitHub repository,
            # at a fixed commit (the files' SHA-256 pinned).
            files=tuple(
                RemoteFile(
                    name,
                    (
                        "https://raw.githubusercontent.com/reidakdumont/Robotics/"
                        "610a5d9a455254bcec3f04a5f911f0ff1882d4c9/src/",
                    ),
                    sha256=sha256,
                )
                for name, sha256 in zip(
                    OPTDIGITS_FILES,
                    (
                        "9c790a198660250654bf06bb1e80503cc7af90c5989e4d4d918e72fdb65d0f53",
                        "cdde8c7d985e7b89652a169bb8f4afa295fbb25443026fe84496a39adbbd5268",
                    ),
                    strict=True,
                )
            ),
            read=_read_optdigits,
        ),
    )
}


def dataset_names() -> list[str]:
    """The registered dataset names, in registry order."""
    return list(DATASETS)


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, DATASETS) from None


def _folder(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> Path:
    return resolve_data_dir(data_dir) / spec.name


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True, progress: bool = True
) -> Dataset:
    """A whole dataset in memory; missing files are downloaded first unless `download` is False.

    `mean` and `std` are measured on the training images. Raises UnknownNameError for an
    unregistered name and DataError (or its subclasses) for missing or damaged files. It either
    returns the dataset or leaves the data directory as it found it: files it downloaded are
    removed again when a later one fails its download or the set fails to read (files that were
    there before are left alone).
    """
    spec = _spec(name)
    folder = _folder(spec, data_dir)
    missing = [f for f in spec.files if not (folder / f.filename).is_file()]
    if missing and not download:
        raise missing_files_error(folder, [f.filename for f in missing])
    folder_existed = folder.is_dir()
    try:
        fetch_missing(missing, folder, progress)
        train_images, train_labels, test_images, test_labels = spec.read(folder)
    except DataError as err:
        # Verified files of a set that cannot be read would make every later load fail without
        # downloading again: what this load fetched goes.
        fetched = [folder / f.filename for f in missing if (folder / f.filename).is_file()]
        for path in fetched:
            path.unlink()
        if not folder_existed:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if fetched:
            removed = f"(The files this load downloaded were removed again: {', '.join(p.name for p in fetched)}.)"
            raise type(err)(err.summary, details="\n".join(filter(None, [err.details, removed]))) from err
        raise
    mean, std = channel_stats(train_images)
    return Dataset(spec.name, train_images, train_labels, test_images, test_labels, spec.classes, mean, std)


def download_dataset(name: str, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download the files of `name` that are missing; its folder (for digits8x8, never created).

    Raises DatasetNotFoundError after the download when files that no mirror serves (hwd-1000's and
    orand-car-a's images, from a clone of their repositories) are not in the folder."""
    spec = _spec(name)
    folder = _folder(spec, data_dir)
    fetch_missing(spec.files, folder, progress)
    if spec.require is not None:
        spec.require(folder)
    return folder


def verify_dataset(name: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Per file {"file", "path", "status": "ok" | "missing" | "mismatch", "md5"}.

    A dataset without files (digits8x8) gives one row with status "ok", so that every dataset
    has something to report.
    """
    spec = _spec(name)
    if not spec.files:
        return [{"file": "(no files)", "path": "", "status": "ok", "md5": None}]
    folder = _folder(spec, data_dir)
    return [verify_file(remote, folder / remote.filename) for remote in spec.files]


def describe_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per dataset for `digitlab data list`: what it is, where it lives, whether it is there.

    "present" only checks that the files exist (`verify_dataset` checks their contents); a
    dataset without files has "folder" None and is always present.
    """
    rows = []
    for spec in DATASETS.values():
        folder = _folder(spec, data_dir)
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "source": spec.source,
                "folder": str(folder) if spec.files else None,
                "present": all((folder / f.filename).is_file() for f in spec.files),
                "files": [f.filename for f in spec.files],
                "image_shape": spec.image_shape,
                "num_classes": len(spec.classes),
            }
        )
    return rows
