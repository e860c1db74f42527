"""Evaluation: logits of a model on whole in-memory datasets, and the metrics computed from them.

`predict_logits` runs a model over uint8 images in batches; `compute_metrics` turns logits and
labels into a `Metrics` (accuracy, mean cross-entropy, confusion matrix, per-class precision,
recall and F1, and scikit-learn's classification report). Neither loads a model nor writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from .errors import ConfigError


@dataclass(eq=False)  # eq=False: `==` on numpy fields would be ambiguous rather than useful
class Metrics:
    """Everything measured on one labelled set, sample arrays included (see `to_json` for a summary).

    `per_class` maps each class name to its precision, recall, f1 (0..1) and support (count);
    `averages` holds scikit-learn's 'macro avg' and 'weighted avg' rows of the same four keys.
    """

    accuracy: float  # fraction correct, 0..1
    loss: float  # mean cross-entropy in nats
    labels: np.ndarray  # (N,) int64, true classes
    predictions: np.ndarray  # (N,) int64, argmax of the logits
    probabilities: np.ndarray  # (N, K) float32, softmax of the logits
    class_names: tuple[str, ...]  # (K,)
    confusion: np.ndarray  # (K, K) int64, rows = true class, columns = predicted class
    per_class: dict[str, dict[str, float]]
    averages: dict[str, dict[str, float]]
    report: str  # classification report text, as scikit-learn prints it

    @property
    def confidences(self) -> np.ndarray:
        """(N,) float32: the probability the model gave its own prediction."""
        return self.probabilities[np.arange(len(self.predictions)), self.predictions]

    @property
    def errors(self) -> np.ndarray:
        """Indices of misclassified samples, the most confidently wrong first (a gallery's order)."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        # A stable sort keeps equally confident errors in dataset order, so galleries are reproducible.
        return wrong[np.argsort(-self.confidences[wrong], kind="stable")]

    def to_json(self) -> dict:
        """A small JSON-serialisable summary for metrics.json: no per-sample arrays."""
        return {
            "n": int(len(self.labels)),
            "accuracy": self.accuracy,
            "loss": self.loss,
            "class_names": list(self.class_names),
            "per_class": self.per_class,
            "macro_avg": self.averages["macro avg"],
            "weighted_avg": self.averages["weighted avg"],
            "confusion": self.confusion.tolist(),
        }


def _as_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A numpy view of a tensor (on any device), an array or a list."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64; subtracting the row maximum keeps exp() from overflowing."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _score_row(row: dict) -> dict[str, float]:
    """One row of scikit-learn's report dict with plain Python numbers and 'f1' for 'f1-score'."""
    return {
        "precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "f1": float(row["f1-score"]),
        "support": int(row["support"]),
    }


def compute_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str],
) -> Metrics:
    """Metrics of (N, K) logits against (N,) integer labels for the K classes named in order.

    Every class gets a row in the confusion matrix and the report even when absent from the
    labels and predictions (its precision, recall and F1 are then 0), so matrices of different
    runs on the same dataset always line up.
    """
    logits = _as_numpy(logits)
    labels = _as_numpy(labels).astype(np.int64)
    class_names = tuple(str(name) for name in class_names)
    k = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise ConfigError(
            f"logits of shape {tuple(logits.shape)} do not match {k} class names: "
            f"the model's output count must equal the dataset's number of classes"
        )
    if labels.shape != (logits.shape[0],):
        raise ConfigError(f"{logits.shape[0]} logits but labels of shape {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ConfigError("no samples to evaluate")
    if labels.min() < 0 or labels.max() >= k:
        raise ConfigError(f"labels must lie in 0..{k - 1}, found {labels.min()}..{labels.max()}")

    log_probs = _log_softmax(logits)  # (N, K) float64
    predictions = log_probs.argmax(axis=1).astype(np.int64)
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())

    classes = list(range(k))
    # digits=4: MNIST models differ in the second decimal of a percent, which 2 digits would hide.
    report_args = dict(labels=classes, target_names=class_names, zero_division=0, digits=4)
    rows = classification_report(labels, predictions, output_dict=True, **report_args)
    return Metrics(
        accuracy=float((predictions == labels).mean()),
        loss=loss,
        labels=labels,
        predictions=predictions,
        probabilities=np.exp(log_probs).astype(np.float32),
        class_names=class_names,
        confusion=confusion_matrix(labels, predictions, labels=classes).astype(np.int64),
        per_class={name: _score_row(rows[name]) for name in class_names},
        averages={avg: _score_row(rows[avg]) for avg in ("macro avg", "weighted avg")},
        report=classification_report(labels, predictions, **report_args),
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; CPU for a model that has neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict_logits(
    model: torch.nn.Module,
    images_uint8: torch.Tensor,
    batch_size: int = 2048,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(N, K) float32 logits on the CPU for (N, C, H, W) uint8 images, in eval mode and without grad.

    Each batch is moved to `device` (default: the model's own) as uint8 and only there scaled
    to float32 in [0, 1]: a quarter of the bytes of a float copy cross to the accelerator. The
    model's normalisation, if any, is its own business. Every submodule's train/eval mode is
    restored afterwards, so a mid-training evaluation leaves e.g. frozen BatchNorm layers frozen.
    """
    if images_uint8.dtype != torch.uint8:
        raise ConfigError(f"predict_logits takes uint8 images (0..255), got {images_uint8.dtype}")
    if images_uint8.ndim != 4:
        raise ConfigError(f"images must be (N, C, H, W), got shape {tuple(images_uint8.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)

    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            logits = [
                model(batch.to(device).float() / 255).float().cpu()
                for batch in images_uint8.split(batch_size)  # an empty set gives one empty batch
            ]
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(logits)


def fit_temperature(logits: torch.Tensor | np.ndarray, labels) -> float:
    """The temperature T minimising the mean cross-entropy of softmax(logits / T) (Guo et al., 2017).

    Scaling logits changes no prediction, only how sure the probabilities say the model is:
    label smoothing, for one, trains a model to stay below ~0.9 on every image, so a
    threshold on its raw probabilities would doubt digits it reads correctly. Golden-section
    search over log T in [1/20, 20]; the loss is convex in 1/T.
    """
    z = torch.as_tensor(_as_numpy(logits), dtype=torch.float64)
    y = torch.as_tensor(_as_numpy(labels), dtype=torch.long)

    def loss(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / np.exp(log_t), y))

    lo, hi = -np.log(20.0), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))
