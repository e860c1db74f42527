"""Multilayer perceptrons of the classic Keras tutorials."""

from __future__ import annotations

from torch import nn

from . import register_model
from .layers import Dropout, keras_init

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _mlp_tensors(hidden: tuple[int, ...] = (512, 256), **_) -> int:
    return 2 * (len(hidden) + 1)  # a weight and a bias per Linear; activations and dropout hold none


@register_model(tensors=_mlp_tensors)
def mlp(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    hidden: tuple[int, ...] = (512, 256),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Module:
    """Flatten -> [Dense(h) -> activation -> Dropout?] per hidden layer -> Dense(num_classes).

    Inputs are pixels in [0, 1], as the tutorials feed them (x / 255, no mean/std).
    Keras-default initialisation (Glorot-uniform kernels, zero biases).
    """
    if activation not in ACTIVATIONS:
        raise TypeError(f"activation must be one of {sorted(ACTIVATIONS)}")
    c, h, w = in_shape
    layers: list[nn.Module] = [nn.Flatten()]
    width = c * h * w
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return keras_init(nn.Sequential(*layers))
