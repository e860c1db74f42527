"""The in-memory dataset every later stage works on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Dataset:
    """A whole dataset as uint8 tensors, ink bright on dark as in MNIST.

    images: (N, C, H, W) uint8; labels: (N,) int64. `mean` and `std` are per channel on the
    [0, 1] scale of the training images, for models that normalise their input.
    """

    name: str
    train_images: torch.Tensor  # (N_train, C, H, W) uint8
    train_labels: torch.Tensor  # (N_train,) int64
    test_images: torch.Tensor  # (N_test, C, H, W) uint8
    test_labels: torch.Tensor  # (N_test,) int64
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Joined sources (data/folders.py): (source, count) of each block of train_images, in order.
    train_sources: tuple[tuple[str, int], ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of 'train' or 'test'."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ConfigError(f"unknown split {name!r}; use 'train' or 'test'")


def split_validation(
    dataset: Dataset, val_split: float, subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Training images/labels and, with val_split > 0, a held-out part of the training set.

    `subset` keeps a seeded random subset of the training set first (for quick runs). Training
    splits with it, and evaluating a run's 'val' split rebuilds the same images from its seed.
    """
    images, labels = dataset.train_images, dataset.train_labels
    order, n_val = _split_order(len(labels), val_split, subset, seed)
    if order is not None:
        images, labels = images[order], labels[order]
    if not n_val:
        return images, labels, None, None
    return images[n_val:], labels[n_val:], images[:n_val], labels[:n_val]


def split_sources(dataset: Dataset, val_split: float, subset: int | None, seed: int) -> torch.Tensor | None:
    """The source index (into dataset.train_sources) of each training image split_validation
    returns, in its order; None for a dataset of one source."""
    import torch  # imported here: start-up time, as in split_validation

    if not dataset.train_sources:
        return None
    counts = torch.tensor([count for _, count in dataset.train_sources])
    ids = torch.repeat_interleave(torch.arange(len(counts)), counts)
    order, n_val = _split_order(len(ids), val_split, subset, seed)
    return (ids if order is None else ids[order])[n_val:]


def _split_order(n: int, val_split: float, subset: int | None, seed: int):
    """The seeded order of the training images (None: as they are) and how many of its first are
    held out for validation."""
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    if not 0 <= val_split < 1:
        raise ConfigError(f"--val-split must be in [0, 1), got {val_split}")
    order = None
    if subset is not None or val_split:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        if subset is not None:
            if subset < 1:
                raise ConfigError(f"--limit must be at least 1, got {subset}")
            order = order[:subset]
    if not val_split:
        return order, 0
    n_val = int(round(len(order) * val_split))
    if n_val < 1 or n_val >= len(order):
        raise ConfigError(f"--val-split {val_split} leaves no validation or no training images")
    return order, n_val


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std on the [0, 1] scale of (N, C, H, W) uint8 images.

    Counted from a 256-bin histogram per channel: exact, and no float copy of the dataset.
    """
    import torch  # imported here: start-up time, as in split_validation

    means, stds = [], []
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * levels).sum() / n
        var = (counts * (levels - mean) ** 2).sum() / (n - 1)
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)
