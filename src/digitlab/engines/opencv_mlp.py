"""The `opencv-mlp` recipe's engine: OpenCV's `cv2.ml.ANN_MLP` trained as the tutorial trains it,
and `OpenCVMLP`, a torch module that reproduces its predictions.

The tutorial: layers 784-512-512-10, SIGMOID_SYM with alpha 2.5 and beta 1.0, BACKPROP with
weight scale (learning rate) 1e-5, term criteria MAX_ITER|EPS with 10 iterations and eps 0.01,
0/1 one-hot float32 targets, raw pixels 0..255 as float32 inputs. It publishes 91.7% test
accuracy; `train_ann_mlp` on all 60,000 images gives 92.19% (10,000 test images), as an
independent run of the tutorial did: OpenCV's training has no seed to vary (below), so every
run on the same software gives the same weights. 533 s as one `train` call, 1 run, one core of
a shared 2-core machine (opencv-contrib 5.0.0).

What OpenCV's ANN_MLP does (modules/ml/src/ann_mlp.cpp in opencv_contrib 5.0, checked against
the real object where the API allows):

- BACKPROP is online SGD, one weight update per sample. The term criteria's max_iter counts
  *epochs*: the loop runs max_iter * count sample steps and reshuffles the rows at the start of
  each epoch. "10 iterations" is 10 passes over the 60,000 images: 600,000 updates.
- EPS: at an epoch boundary inside one `train` call, stop if |E_prev - E| < eps * count, E being
  the epoch's summed squared error measured online. Not visible from Python.
- `setTrainMethod(BACKPROP)` with its default second parameter sets momentum 0 (read back:
  `getBackpropMomentumScale() == 0.0`); `setBackpropWeightScale(1e-5)` then sets the rate.
- Inputs: unless NO_INPUT_SCALE is given, `train` standardises every input column with the
  training set's mean and std (scale 1/std, 1 where the variance is below DBL_EPSILON; shift
  -mean*scale), stored as layer 0 of `getWeights`. So dividing by 255 first would change
  nothing but rounding; we feed 0..255 like the tutorial and keep OpenCV's default scaling.
- Outputs: each target column's [min, max] (here [0, 1]) is mapped to SIGMOID_SYM's
  [-0.95, 0.95] for training. `predict` applies the activation on *every* layer, the output
  layer included, then maps back: out = (y + 0.95) / 1.9 for 0/1 targets, so outputs lie in
  about [-0.03, 1.03].
- SIGMOID_SYM is f(x) = beta * (1 - exp(-alpha x)) / (1 + exp(-alpha x)) = beta * tanh(alpha x / 2).
- `getWeights(i)`: 0 the input (scale, shift) pairs, 1..L-1 the weight matrices of shape
  (n_in + 1, n_out) with the bias as the last row, L the output (scale, shift) pairs, L+1 their
  inverse (targets -> activation range, used by training only); L = number of layers.
- Random numbers come from the ANN's own `cv::RNG(0xFFFFFFFFFFFFFFFF)`, reset whenever the layer
  sizes are set; `cv2.setRNGSeed` does not reach it (measured: seeds 0 and 1 give bit-identical
  weights). The initial weights (Nguyen-Widrow) are therefore always the same.

Training in steps. One `train` call of 10 epochs blocks for ~9 minutes with no way to report.
`train_ann_mlp` instead calls `train` once per epoch with UPDATE_WEIGHTS, and gets the *same
weights bit for bit*: momentum is 0, so no optimiser state is lost between calls, and the one
thing that differs, the sample order, is restored by mirroring the ANN's RNG here and feeding
each call its rows in the order the single call's compounded shuffle would have used. Measured:
bit-identical weights to one 3-epoch call on 500 images (the test checks this) and to the full
60,000-image 10-epoch call; the stepped run takes the same time (+0.1 s a epoch for the
mirror). The EPS test cannot fire inside a one-epoch call; measured on the full data, it does
not fire within the tutorial's 10 epochs either, which is why the weights agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError, DataError

NUM_CLASSES = 10
PIXEL_MAX = 255.0  # the ANN is trained on raw 0..255 pixels; OpenCVMLP rescales [0, 1] inputs
# Measured on this project's shared 2-core machine: 533 s for 10 epochs x 60,000 images (one
# `train` call), 62 s for one epoch when stepping; about 1 ms per sample per epoch on one core.
SECONDS_PER_SAMPLE_EPOCH = 1e-3


def create_ann_mlp(
    layer_sizes: Sequence[int],
    *,
    alpha: float = 2.5,
    beta: float = 1.0,
    weight_scale: float = 1e-5,
    max_iter: int = 10,
    eps: float = 0.01,
) -> cv2.ml.ANN_MLP:
    """An untrained ANN_MLP configured as the tutorial configures it."""
    ann = cv2.ml.ANN_MLP_create()
    ann.setLayerSizes(np.asarray(layer_sizes, dtype=np.int32))
    ann.setActivationFunction(cv2.ml.ANN_MLP_SIGMOID_SYM, alpha, beta)
    ann.setTrainMethod(cv2.ml.ANN_MLP_BACKPROP)  # momentum 0: see the module docstring
    ann.setBackpropWeightScale(weight_scale)  # after setTrainMethod, which would clamp it to >= 1e-3
    ann.setTermCriteria((cv2.TERM_CRITERIA_MAX_ITER | cv2.TERM_CRITERIA_EPS, max_iter, eps))
    return ann


def train_ann_mlp(
    train_images_uint8: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    *,
    hidden: Sequence[int] = (512, 512),
    alpha: float = 2.5,
    beta: float = 1.0,
    weight_scale: float = 1e-5,
    max_iter: int = 10,
    eps: float = 0.01,
    seed: int = 0,
    progress: bool = True,
    on_epoch: Callable[[int, float, cv2.ml.ANN_MLP], None] | None = None,
) -> cv2.ml.ANN_MLP:
    """Train an ANN_MLP as the OpenCV tutorial does: `max_iter` epochs of per-sample backprop.

    train_images_uint8: (N, 784), (N, 28, 28) or (N, 1, 28, 28) pixels, numpy or torch; uint8
        0..255 as MNIST stores them, or float in [0, 1] (digitlab's convention, scaled by 255).
    train_labels: (N,) class indices 0..9. Targets are 0/1 one-hot float32 rows.
    max_iter: epochs (OpenCV's "iterations" are passes over the data, see the module docstring).
    eps: OpenCV's EPS term criterion, kept in the ANN's settings. Training runs one epoch per
        `train` call, where OpenCV never applies it; so exactly `max_iter` epochs run. For the
        tutorial's 10 epochs on MNIST that is also what one single call does (measured).
    seed: OpenCV's ANN_MLP ignores `cv2.setRNGSeed` (it has its own fixed generator), so every
        run gives the same weights. seed 0 trains on the rows in the order given, the tutorial's
        run; any other seed first permutes them with numpy's `default_rng(seed)`, which gives
        another sample order (the initial weights stay OpenCV's).
    progress: a line with the expected time, then a bar over the epochs.
    on_epoch: called as on_epoch(epoch, seconds, ann) after each epoch (1-based), e.g. to record
        `ann_mlp_metrics` into a history. Training time excludes it.
    """
    if max_iter < 1:
        raise ConfigError(f"max_iter must be at least 1 epoch, got {max_iter}")
    pixels = _pixels_0_255(train_images_uint8)  # (N, 784) float32
    labels = _class_indices(train_labels, len(pixels))  # (N,) int64
    targets = np.eye(NUM_CLASSES, dtype=np.float32)[labels]  # (N, 10) 0/1 one-hot
    if seed:
        permutation = np.random.default_rng(seed).permutation(len(pixels))
        pixels, targets = pixels[permutation], targets[permutation]

    sizes = (pixels.shape[1], *hidden, NUM_CLASSES)
    count = len(pixels)
    # max_iter=1: each `train` call below is exactly one epoch (count sample steps).
    ann = create_ann_mlp(sizes, alpha=alpha, beta=beta, weight_scale=weight_scale, max_iter=1, eps=eps)
    rng = _AnnRNG()
    rng.skip(2 * sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:])))  # the initial weights' draws
    order = np.arange(count)  # the single call's running shuffle of the row indices
    epoch_pixels, epoch_targets = np.empty_like(pixels), np.empty_like(targets)

    if progress:
        estimate = count * max_iter * SECONDS_PER_SAMPLE_EPOCH
        expected = f"{estimate / 60:.0f} min" if estimate >= 120 else f"{estimate:.0f} s"
        tqdm.write(
            f"OpenCV ANN_MLP {'-'.join(map(str, sizes))}: {max_iter} epochs of per-sample backprop "
            f"over {count} images; OpenCV trains on one core, expect about {expected}"
        )
    epochs = tqdm(range(1, max_iter + 1), desc="ANN_MLP", unit="epoch", disable=not progress)
    for epoch in epochs:
        start = time.perf_counter()
        if epoch == 1:
            # Without UPDATE_WEIGHTS: computes the input and output scaling, initialises the weights.
            ann.train(pixels, cv2.ml.ROW_SAMPLE, targets)
        else:
            np.take(pixels, order, axis=0, out=epoch_pixels)
            np.take(targets, order, axis=0, out=epoch_targets)
            data = cv2.ml.TrainData_create(epoch_pixels, cv2.ml.ROW_SAMPLE, epoch_targets)
            ann.train(data, cv2.ml.ANN_MLP_UPDATE_WEIGHTS)
        # That call shuffled the identity order with the swaps the single call would have applied
        # to its running order; apply them here so the next call gets the single call's order.
        rng.shuffle(order)
        seconds = time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(epoch, seconds, ann)
    # Leave the tutorial's criteria in the ANN's settings (what `ann.save` writes), not max_iter=1.
    ann.setTermCriteria((cv2.TERM_CRITERIA_MAX_ITER | cv2.TERM_CRITERIA_EPS, max_iter, eps))
    return ann


def ann_mlp_metrics(
    ann: cv2.ml.ANN_MLP, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """{"loss", "accuracy"} of a trained ANN_MLP on images (as `train_ann_mlp` takes them).

    loss: what BACKPROP minimises, per sample: the squared error summed over the 10 outputs,
    measured in the activation's range (targets mapped to +-0.95), i.e. OpenCV's E / count.
    """
    pixels = _pixels_0_255(images)
    labels = _class_indices(labels, len(pixels))
    _, outputs = ann.predict(pixels)  # (N, 10) float32
    targets = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    layer_count = len(ann.getLayerSizes())
    target_scale = ann.getWeights(layer_count + 1).reshape(-1, 2)[:, 0]  # 1.9 for 0/1 targets
    # target*a + b - y == (target - out) * a, since out = (y - b) / a
    loss = float(np.mean(np.sum(((targets - outputs) * target_scale) ** 2, axis=1)))
    accuracy = float(np.mean(outputs.argmax(axis=1) == labels))
    return {"loss": loss, "accuracy": accuracy}


def ann_mlp_to_state(ann: cv2.ml.ANN_MLP) -> dict[str, torch.Tensor]:
    """Every array of a trained SIGMOID_SYM ANN_MLP, keyed for `OpenCVMLP.load_state_dict`.

    float64 as OpenCV stores them, contiguous, so the dict can be saved with safetensors.
    """
    settings = _ann_settings(ann)
    if settings.getNode("activation_function").string() != "SIGMOID_SYM":
        raise ConfigError("OpenCVMLP reproduces SIGMOID_SYM networks only")
    sizes = [int(s) for s in ann.getLayerSizes().ravel()]
    layer_count = len(sizes)
    alpha, beta = settings.getNode("f_param1").real(), settings.getNode("f_param2").real()

    def pairs(index: int) -> np.ndarray:
        return ann.getWeights(index).reshape(-1, 2)  # (n, 2): (scale, shift) per unit

    state = {
        "layer_sizes": torch.tensor(sizes, dtype=torch.int64),
        "activation_params": torch.tensor([alpha, beta], dtype=torch.float64),
        "input_scale": pairs(0)[:, 0],
        "input_shift": pairs(0)[:, 1],
        "output_scale": pairs(layer_count)[:, 0],
        "output_shift": pairs(layer_count)[:, 1],
        "target_scale": pairs(layer_count + 1)[:, 0],
        "target_shift": pairs(layer_count + 1)[:, 1],
    }
    for i in range(1, layer_count):
        weights = ann.getWeights(i)  # (n_in + 1, n_out), bias in the last row
        state[f"layers.{i - 1}.weight"] = weights[:-1].T  # nn.Linear: (n_out, n_in)
        state[f"layers.{i - 1}.bias"] = weights[-1]
    return {
        key: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        for key, value in state.items()
    }


class OpenCVMLP(nn.Module):
    """ANN_MLP's `predict` in torch: images (N, 1, 28, 28) in [0, 1] -> raw outputs (N, 10).

    pixels * 255 -> input scaling -> per layer: affine, then SIGMOID_SYM (output layer included)
    -> output scaling. argmax of the outputs is the class. Computes in float64 as OpenCV does
    (`.float()` gives a float32 copy); returns the input's float dtype. Load weights with
    `load_state_dict(ann_mlp_to_state(ann))` or build with `OpenCVMLP.from_state(state)`.
    """

    def __init__(
        self, layer_sizes: Sequence[int] = (784, 512, 512, 10), alpha: float = 2.5, beta: float = 1.0
    ) -> None:
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


class _AnnRNG:
    """A mirror of the ANN's cv::RNG: multiply-with-carry, state = a * low32(state) + high32(state)."""

    A = 4164903690  # CV_RNG_COEFF
    MODULUS = A * 2**32 - 1

    def __init__(self, state: int = 2**64 - 1) -> None:  # ANN_MLP's RNG((uint64)-1)
        self.state = state

    def next(self) -> int:
        self.state = self.A * (self.state & 0xFFFFFFFF) + (self.state >> 32)
        return self.state & 0xFFFFFFFF

    def skip(self, steps: int) -> None:
        """Advance `steps` draws at once. With S = carry * 2**32 + x, a step maps S to
        a * x + carry, which is a * S modulo a * 2**32 - 1; and a state below that modulus stays
        below it, so once there, n steps are one modular power."""
        while steps and self.state >= self.MODULUS:
            self.next()
            steps -= 1
        self.state = pow(self.A, steps, self.MODULUS) * self.state % self.MODULUS

    def shuffle(self, order: np.ndarray) -> None:
        """ANN_MLP's per-epoch shuffle, in place: count swaps of two uniformly drawn positions."""
        count = len(order)
        for _ in range(count):
            j = self.next() % count  # RNG::uniform(0, count)
            k = self.next() % count
            order[j], order[k] = order[k], order[j]


def _ann_settings(ann: cv2.ml.ANN_MLP) -> cv2.FileStorage:
    """The ANN's own serialisation, read back: the only way Python can see alpha and beta."""
    writer = cv2.FileStorage(".yml", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY)
    ann.write(writer)
    text = writer.releaseAndGetString()
    return cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)


def _pixels_0_255(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, 784) float32 pixels in 0..255 from uint8 pixels or floats in [0, 1], numpy or torch."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim < 2 or len(array) == 0:
        raise DataError(f"expected a batch of images (N, 784) or (N, 1, 28, 28), got shape {array.shape}")
    array = array.reshape(len(array), -1)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array, dtype=np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"expected uint8 pixels or floats in [0, 1], got {array.dtype}")
    if array.min() < 0 or array.max() > 1:
        raise DataError("float pixels must be in [0, 1]; pass uint8 for 0..255")
    return np.ascontiguousarray(array * PIXEL_MAX, dtype=np.float32)


def _class_indices(labels: np.ndarray | torch.Tensor, count: int) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    array = array.reshape(-1).astype(np.int64)
    if len(array) != count:
        raise DataError(f"{count} images but {len(array)} labels")
    if array.min() < 0 or array.max() >= NUM_CLASSES:
        raise DataError(f"labels must be class indices 0..{NUM_CLASSES - 1}")
    return array
