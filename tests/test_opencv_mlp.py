"""The `opencv-mlp` engine: OpenCV's ANN_MLP as the tutorial trains it, and its torch reproduction.

The torch module is checked against an independent reference, OpenCV's own `predict`.
About 15 s on one core.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from digitlab.data.idx import read_idx
from digitlab.engines.opencv_mlp_trainer import ann_mlp_metrics, ann_mlp_to_state, train_ann_mlp
from digitlab.errors import DataError
from digitlab.models.opencv_mlp_net import OpenCVMLP

SUBSET = 2000
EPOCHS = 5  # 2,000 images x 5 epochs: about 10 s on one core (1 ms per sample per epoch)
# Measured with EPOCHS=5: 81.3% on the first 2,000 test images (chance is 10%; OpenCV's training
# is deterministic, so this is the figure on opencv-contrib 5.0.0, not one draw of many).
MIN_ACCURACY = 0.75


@pytest.fixture(scope="module")
def mnist(shared_data_dir) -> dict[str, np.ndarray]:
    """The first SUBSET training and test images (N, 28, 28) uint8 with their labels."""
    folder = shared_data_dir / "mnist"
    return {
        "train_images": read_idx(folder / "train-images-idx3-ubyte.gz")[:SUBSET],
        "train_labels": read_idx(folder / "train-labels-idx1-ubyte.gz")[:SUBSET],
        "test_images": read_idx(folder / "t10k-images-idx3-ubyte.gz")[:SUBSET],
        "test_labels": read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:SUBSET],
    }


@pytest.fixture(scope="module")
def trained(mnist) -> cv2.ml.ANN_MLP:
    return train_ann_mlp(mnist["train_images"], mnist["train_labels"], max_iter=EPOCHS, progress=False)


def test_short_run_learns(trained, mnist):
    metrics = ann_mlp_metrics(trained, mnist["test_images"], mnist["test_labels"])
    assert metrics["accuracy"] > MIN_ACCURACY, metrics


def test_torch_module_reproduces_predict(trained, mnist, tmp_path):
    pixels = mnist["test_images"].reshape(SUBSET, 784).astype(np.float32)
    _, expected = trained.predict(pixels)  # (N, 10) float32, OpenCV's own forward pass

    save_file(ann_mlp_to_state(trained), tmp_path / "model.safetensors")  # the state must be storable
    model = OpenCVMLP.from_state(load_file(tmp_path / "model.safetensors")).eval()
    images = torch.from_numpy(mnist["test_images"].copy()).unsqueeze(1).float() / 255  # (N, 1, 28, 28)
    with torch.no_grad():
        outputs = model(images).numpy()

    assert outputs.shape == (SUBSET, 10) and outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(outputs.argmax(1), expected.argmax(1))


def test_state_loads_into_default_module(trained):
    model = OpenCVMLP()  # the recipe's shape: 784-512-512-10, alpha 2.5, beta 1.0
    model.load_state_dict(ann_mlp_to_state(trained))
    assert model.activation_params.tolist() == [2.5, 1.0]
    assert model.layers[0].weight.shape == (512, 784)


def test_same_seed_same_weights(mnist):
    images, labels = mnist["train_images"][:200], mnist["train_labels"][:200]
    first, second, other = (train_ann_mlp(images, labels, max_iter=2, seed=seed, progress=False) for seed in (1, 1, 2))
    for i in range(6):
        np.testing.assert_array_equal(first.getWeights(i), second.getWeights(i))
    assert not np.array_equal(first.getWeights(1), other.getWeights(1))


def test_max_iter_counts_epochs_and_eps_can_stop_early(mnist):
    """max_iter is a number of passes; EPS is OpenCV's (a huge eps stops after the first epoch,
    whose error is compared with 0)."""
    images, labels = mnist["train_images"][:200], mnist["train_labels"][:200]
    one_epoch = train_ann_mlp(images, labels, max_iter=1, progress=False)
    stopped = train_ann_mlp(images, labels, max_iter=3, eps=1e6, progress=False)
    three_epochs = train_ann_mlp(images, labels, max_iter=3, eps=1e-12, progress=False)
    np.testing.assert_array_equal(stopped.getWeights(1), one_epoch.getWeights(1))
    assert not np.array_equal(three_epochs.getWeights(1), one_epoch.getWeights(1))


def test_bad_input_is_a_clear_error(mnist):
    images = mnist["train_images"][:10]
    with pytest.raises(DataError, match="10 images but 9 labels"):
        train_ann_mlp(images, mnist["train_labels"][:9], progress=False)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        train_ann_mlp(images.astype(np.float32), mnist["train_labels"][:10], progress=False)
