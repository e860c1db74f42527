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


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout computes it: keep each value with probability 1 - p and
    scale it by 1 / (1 - p). The mask comes from a uniform draw compared with p, which on the
    CPU is about 2.5x cheaper than nn.Dropout's Bernoulli sampler (measured: 1.9 vs 5.0 ms for
    keras-cnn's 128x32x12x12 activations), about a tenth of that recipe's training step."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
