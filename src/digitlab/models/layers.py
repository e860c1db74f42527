"""Small layers shared by the model factories."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics are buffers, so checkpoints carry them."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def keras_init(model: nn.Module) -> nn.Module:
    """Keras' default initialisation: Glorot-uniform kernels, zero biases.

    PyTorch's xavier_uniform_ computes fan-in/fan-out for conv kernels as Keras does
    (in_channels * kh * kw, out_channels * kh * kw), so the bounds are identical.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
