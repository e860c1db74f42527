"""The `opencv-mlp` recipe's trainer: OpenCV's `cv2.ml.ANN_MLP` trained as the tutorial trains it,
its weights handed over as the state of `OpenCVMLP` (models/opencv_mlp_net.py), the torch module
that reproduces its predictions.

The tutorial: layers 784-512-512-10, SIGMOID_SYM with alpha 2.5 and beta 1.0, BACKPROP with
weight scale (learning rate) 1e-5, term criteria MAX_ITER|EPS with 10 iterations and eps 0.01,
0/1 one-hot float32 targets, raw pixels 0..255 as float32 inputs. It publishes 91.7% test
accuracy. `train_ann_mlp` on all 60,000 images: 92.19% on the 10,000 test images, as an
independent run of the tutorial measured; OpenCV's training has no seed to vary (below), so the
same software gives the same weights every time. One `train` call, 533 s on one core of a
shared 2-core machine while the other core was busy (1 run, opencv-contrib-python 5.0.0).

What OpenCV's ANN_MLP does (modules/ml/src/ann_mlp.cpp in opencv_contrib 5.0, checked against
the real object where the API allows):

- BACKPROP is online SGD, one weight update per sample. The term criteria's max_iter counts
  *epochs*: the loop runs max_iter * count sample steps and reshuffles the rows at the start of
  each epoch. "10 iterations" means at most 10 passes over the 60,000 images.
- EPS: at the start of each epoch after the first, inside one `train` call, training stops if
  |E_prev - E| < eps * count, E being the summed squared error of the epoch just finished,
  measured online (before each sample's update; not visible from Python; E_prev is 0 at the
  start of epoch 2). On full MNIST the
  tutorial's call stops here after 6 of its 10 epochs (360,000 updates). Measured by replaying
  the training one epoch per call (UPDATE_WEIGHTS, momentum 0, each call fed its rows in the
  order the single call's shuffle uses, by mirroring the ANN's RNG): the weights after epoch 6
  equal the single call's bit for bit; epochs 1-5 and 7-10 differ. Epochs 7-10 would have given
  92.04-92.23% test accuracy, so stopping costs nothing. Because that stop test needs the online
  E, one call of max_iter epochs is the only faithful way to train, and it gives no progress.
- `setTrainMethod(BACKPROP)` with its default second parameter sets momentum 0 (read back:
  `getBackpropMomentumScale() == 0.0`); `setBackpropWeightScale(1e-5)` then sets the rate.
- Inputs: unless NO_INPUT_SCALE is given, `train` standardises every input column with the
  training set's mean and std (scale 1/std, or 1 where the variance is below DBL_EPSILON; shift
  -mean*scale), stored as layer 0 of `getWeights`. So dividing by 255 first would change nothing
  but rounding; we feed 0..255 like the tutorial and keep OpenCV's default scaling.
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
  weights). The initial weights (Nguyen-Widrow) and the shuffles are therefore always the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..models.opencv_mlp_net import PIXEL_MAX

NUM_CLASSES = 10
# Measured on this project's shared 2-core machine, one core: 1.0 ms per sample per epoch on
# 2,000 images and on full MNIST (62 s an epoch), 1.5 ms in the tutorial's 6-epoch full call
# (533 s) while the other core was busy, 3 ms while the other core also trained an ANN_MLP
# (they share caches and memory bandwidth). Used only to tell the user what to expect.
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
) -> cv2.ml.ANN_MLP:
    """Train an ANN_MLP as the OpenCV tutorial does: one blocking `train` call.

    train_images_uint8: (N, 784), (N, 28, 28) or (N, 1, 28, 28) pixels, numpy or torch; uint8
        0..255 as MNIST stores them, or float in [0, 1] (digitlab's convention, scaled by 255).
    train_labels: (N,) class indices 0..9. Targets are 0/1 one-hot float32 rows.
    max_iter, eps: OpenCV's term criteria: at most max_iter epochs, fewer when the epoch error
        stops changing by eps per sample (see the module docstring: 6 epochs on full MNIST).
    seed: OpenCV's ANN_MLP ignores `cv2.setRNGSeed` (it has its own fixed generator), so every
        run gives the same weights. seed 0 trains on the rows in the order given, the tutorial's
        run; any other seed first permutes them with numpy's `default_rng(seed)`, which gives
        another sample order (the initial weights stay OpenCV's).
    progress: a line with the expected time, then a bar of the elapsed time. OpenCV releases
        the GIL while it trains, so a thread can tick; nothing can report epochs.
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
    ann = create_ann_mlp(sizes, alpha=alpha, beta=beta, weight_scale=weight_scale, max_iter=max_iter, eps=eps)
    longest = len(pixels) * max_iter * SECONDS_PER_SAMPLE_EPOCH
    with _elapsed_bar(
        f"OpenCV ANN_MLP {'-'.join(map(str, sizes))}: per-sample backprop over {len(pixels)} images, "
        f"at most {max_iter} epochs; one core, up to about {_duration(longest)} (no progress inside)",
        disable=not progress,
    ):
        ann.train(pixels, cv2.ml.ROW_SAMPLE, targets)
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


@contextmanager
def _elapsed_bar(message: str, disable: bool) -> Iterator[None]:
    """Print `message`, then tick a bar of elapsed seconds from a thread until the block ends."""
    if disable:
        yield
        return
    tqdm.write(message)
    done = threading.Event()
    with tqdm(desc="ANN_MLP training", bar_format="{desc}: {elapsed} elapsed") as bar:

        def tick() -> None:
            while not done.wait(1.0):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


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


def fit_opencv(
    recipe,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Train the recipe's ANN_MLP; its weights as `OpenCVMLP` state and a one-row history.

    OpenCV trains in one blocking call, so the history has a single row covering all of it;
    loss is OpenCV's own (squared error per sample in the activation's range), not cross-entropy.
    """
    args = recipe.model_args
    start = time.perf_counter()
    ann = train_ann_mlp(
        train_x,
        train_y,
        hidden=tuple(args.get("hidden", (512, 512))),
        alpha=args.get("alpha", 2.5),
        beta=args.get("beta", 1.0),
        weight_scale=recipe.lr,
        max_iter=recipe.epochs,
        eps=recipe.eps,
        seed=recipe.seed,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    train_metrics = ann_mlp_metrics(ann, train_x, train_y)
    val_metrics = ann_mlp_metrics(ann, val_x, val_y)
    history = [
        {
            "epoch": 1,
            "loss": train_metrics["loss"],
            "accuracy": train_metrics["accuracy"],
            "val_loss": val_metrics["loss"],
            "val_accuracy": val_metrics["accuracy"],
            "seconds": seconds,
            "lr": recipe.lr,
            "loss_kind": "OpenCV squared error",
            "max_iterations": recipe.epochs,
        }
    ]
    return ann_mlp_to_state(ann), history
