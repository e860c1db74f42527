"""`opencv-mlp` as a torch module: OpenCV's ANN_MLP `predict`, reproduced exactly.

The network is trained by OpenCV itself (digitlab.engines.opencv_mlp_trainer); its weights,
input and output scalings are stored as this module's state, so a run of the OpenCV recipe is
loaded, evaluated and used like any other model, without OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import register_model

PIXEL_MAX = 255.0  # the ANN is trained on raw 0..255 pixels; OpenCVMLP rescales [0, 1] inputs


class OpenCVMLP(nn.Module):
    """ANN_MLP's `predict` in torch: images (N, 1, 28, 28) in [0, 1] -> raw outputs (N, 10).

    pixels * 255 -> input scaling -> per layer: affine, then SIGMOID_SYM (output layer included)
    -> output scaling. argmax of the outputs is the class. Computes in float64 as OpenCV does
    (`.float()` gives a float32 copy); returns the input's float dtype. Load weights with
    `load_state_dict(ann_mlp_to_state(ann))` or build with `OpenCVMLP.from_state(state)`.
    """

    def __init__(self, layer_sizes: Sequence[int] = (784, 512, 512, 10), alpha: float = 2.5, beta: float = 1.0) -> None:
        super().__init__()
        sizes = [int(s) for s in layer_sizes]
        f64 = torch.float64
        self.register_buffer("layer_sizes", torch.tensor(sizes, dtype=torch.int64))
        # alpha, beta as a buffer so a loaded state carries them and forward uses what was loaded
        self.register_buffer("activation_params", torch.tensor([alpha, beta], dtype=f64))
        self.register_buffer("input_scale", torch.ones(sizes[0], dtype=f64))
        self.register_buffer("input_shift", torch.zeros(sizes[0], dtype=f64))
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out, dtype=f64) for n_in, n_out in zip(sizes, sizes[1:]))
        self.register_buffer("output_scale", torch.ones(sizes[-1], dtype=f64))
        self.register_buffer("output_shift", torch.zeros(sizes[-1], dtype=f64))
        # Maps targets into the activation's range; training only, kept so the state is the whole ANN.
        self.register_buffer("target_scale", torch.ones(sizes[-1], dtype=f64))
        self.register_buffer("target_shift", torch.zeros(sizes[-1], dtype=f64))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> OpenCVMLP:
        """The module with the layer sizes and weights of `state` (from `ann_mlp_to_state`)."""
        alpha, beta = state["activation_params"].tolist()
        model = cls(state["layer_sizes"].tolist(), alpha, beta)
        model.load_state_dict(state)
        return model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1).to(self.input_scale.dtype) * PIXEL_MAX  # (N, 784) in 0..255, as trained
        x = x * self.input_scale + self.input_shift
        alpha, beta = self.activation_params
        for layer in self.layers:
            # beta * (1 - exp(-alpha*z)) / (1 + exp(-alpha*z)), written as tanh: the same function
            # (within 1e-16 here), without exp's overflow for large |z|.
            x = beta * torch.tanh(0.5 * alpha * layer(x))
        outputs = x * self.output_scale + self.output_shift  # (N, 10)
        return outputs.to(images.dtype if images.is_floating_point() else torch.float32)


def _opencv_mlp_tensors(hidden: tuple[int, ...] = (512, 512), **_) -> int:
    return 8 + 2 * (len(hidden) + 1)  # OpenCVMLP's eight buffers, a weight and a bias per layer


@register_model(tensors=_opencv_mlp_tensors)
def opencv_mlp(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    hidden: tuple[int, ...] = (512, 512),
    alpha: float = 2.5,
    beta: float = 1.0,
) -> nn.Module:
    """The OpenCV tutorial's 784-512-512-10 SIGMOID_SYM network (weights come from OpenCV's training)."""
    c, h, w = in_shape
    return OpenCVMLP((c * h * w, *hidden, num_classes), alpha=alpha, beta=beta)
