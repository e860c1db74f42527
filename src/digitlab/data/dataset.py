"""The in-memory dataset every later stage works on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError


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


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std on the [0, 1] scale of (N, C, H, W) uint8 images.

    Counted from a 256-bin histogram per channel: exact, and no float copy of the dataset.
    """
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
