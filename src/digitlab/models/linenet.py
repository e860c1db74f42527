"""The line recognizer: a line of digits in, one class distribution per 4 columns out (CTC).

    model = create_model("linenet")
    logits = model(lines)          # (N, 1, 32, W) ink-bright in [0, 1] -> (N, W // 4, 11)

A small convolutional network reads the line image (preprocess.line_input: 32 rows, any width
that is a multiple of 4) down to one feature column per 4 input columns, a bidirectional LSTM
reads those columns in both directions, and a linear layer gives each column's scores for the
digits 0-9 and CTC's blank (class 10, data.lines.BLANK). Trained with torch.nn.CTCLoss; decoded
greedily or by beam search (read/sequence.py). The columns are the frames a digit's box is
recovered from: frame t covers input columns 4t to 4t + 3.

(N, 1, 32, W) -> conv 32 -> pool 2 -> 16 x W/2 -> conv 48 -> pool 2 -> 8 x W/4 -> conv 64
-> pool (2, 1) -> 4 x W/4 -> conv 96 -> pool (2, 1) -> 2 x W/4 -> (W/4, 192) -> linear 128
-> BiLSTM 2 x 64 -> linear 11. Each convolution is 3x3, pooled, then batch norm and ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model


def _block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
    """3x3 convolution, pool, batch norm, ReLU: pooling first runs the two memory-bound ops on a
    quarter (or half) of the pixels, as digitnet's stages do."""
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.MaxPool2d(pool, pool),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class LineNet(nn.Module):
    """CNN + BiLSTM + linear: (N, 1, 32, W) -> (N, W // 4, num_classes) logits."""

    def __init__(self, in_shape, num_classes: int, widths: tuple[int, ...], hidden: int):
        super().__init__()
        c, h, _ = in_shape
        if h != 32:
            raise ValueError(f"linenet reads lines 32 pixels high, not {h}")
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            *_block(c, w0, (2, 2)),
            *_block(w0, w1, (2, 2)),
            *_block(w1, w2, (2, 1)),
            *_block(w2, w3, (2, 1)),
        )
        self.project = nn.Linear(w3 * 2, 2 * hidden)
        self.rnn = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.classify = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (N, C, 2, W/4)
        n, c, h, t = f.shape
        f = f.permute(0, 3, 1, 2).reshape(n, t, c * h)  # (N, T, C*2): one column a frame
        f = torch.relu(self.project(f))
        f, _ = self.rnn(f)
        return self.classify(f)  # (N, T, K)


# Tensors: per convolution block a weight and batch norm's five (4 blocks); project 2; the LSTM's
# 4 per direction; classify 2.
@register_model(tensors=lambda **_: 4 * 6 + 2 + 8 + 2, task="lines")
def linenet(
    in_shape: tuple[int, int, int] = (1, 32, 0),
    num_classes: int = 11,
    widths: tuple[int, int, int, int] = (32, 48, 64, 96),
    hidden: int = 64,
) -> nn.Module:
    """The line recognizer (module docstring). in_shape (1, 32, 0): any width; num_classes: the
    ten digits and CTC's blank."""
    return LineNet(in_shape, num_classes, tuple(widths), hidden)
