"""PNG figures of a run: training curves, confusion matrix, galleries of images.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot: no global figure state, nothing to close, and a user's interactive backend is untouched.
Every function writes its PNG under a temporary name in the target folder and renames it into
place, so a crash never leaves a half-written file, and returns the path written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError
from .files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def _new_figure(width: float, height: float) -> Figure:
    """A figure of width x height inches with an Agg canvas; constrained layout avoids overlaps."""
    # imported here: start-up time (0.5 s on 2 cores), which every importer of evaluate.py would pay
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_atomically(figure: Figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG at `path`, whole or not at all (files.atomic_write)."""
    return atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png"))


def _as_numpy(x) -> np.ndarray:
    """A numpy array from a (CPU or GPU) tensor, an array or a list, without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Epochs (from 1) and values of `key`, skipping epochs where it is missing or None."""
    points = [(epoch, row[key]) for epoch, row in enumerate(history, 1) if row.get(key) is not None]
    return [epoch for epoch, _ in points], [float(value) for _, value in points]


def plot_curves(history: list[dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side.

    `history` holds one dict per epoch with 'loss' and 'accuracy' (fraction 0..1) and optionally
    'val_loss' and 'val_accuracy'; a series missing or None in an epoch is drawn without it.
    """
    if not history:
        raise ConfigError("the history is empty: train for at least one epoch before plotting curves")
    from matplotlib import ticker  # imported here: start-up time, as in _new_figure (loaded by then)

    figure = _new_figure(11, 4.2)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    panels = [
        (loss_axes, "loss", "Loss", "cross-entropy", 1),
        (accuracy_axes, "accuracy", "Accuracy", "accuracy (%)", 100),  # fractions shown as percent
    ]
    for axes, key, title, ylabel, scale in panels:
        for prefix, label in (("", "train"), ("val_", "validation")):
            epochs, values = _series(history, prefix + key)
            if epochs:
                # Markers keep a one-epoch history (a single point, no line) visible.
                axes.plot(epochs, [value * scale for value in values], marker="o", markersize=4, label=label)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        # Half an epoch of margin each side: a single epoch would otherwise get ticks like 0.99, 1.01.
        axes.set_xlim(0.5, len(history) + 0.5)
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(True, alpha=0.3)
        if axes.lines:
            axes.legend()
    return _save_atomically(figure, path)


def plot_confusion(
    confusion: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
) -> Path:
    """Heatmap of a (K, K) confusion matrix (rows true, columns predicted) with every count written."""
    confusion = _as_numpy(confusion)
    k = len(class_names)
    if confusion.shape != (k, k):
        raise ConfigError(f"confusion matrix of shape {confusion.shape} does not match {k} class names")
    size = max(5.0, 0.6 * k + 2)  # about 0.6 inch per class keeps four-digit counts legible
    figure = _new_figure(size + 1, size)  # the extra inch is the colour bar's
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8)
    # White text where the cell is darker than the middle of the colour scale, black elsewhere.
    threshold = (confusion.min() + confusion.max()) / 2
    fontsize = max(5, min(10, 100 / k))
    for true in range(k):
        for predicted in range(k):
            count = confusion[true, predicted]
            color = "white" if count > threshold else "black"
            axes.text(predicted, true, f"{count:d}", ha="center", va="center", color=color, fontsize=fontsize)
    axes.set_xticks(range(k))
    axes.set_yticks(range(k))
    axes.set_yticklabels(class_names)
    # Digit names fit upright; names like Fashion-MNIST's 'T-shirt/top' would collide, so tilt them.
    if max(len(str(name)) for name in class_names) > 2:
        axes.set_xticklabels(class_names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        axes.set_xticklabels(class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return _save_atomically(figure, path)


def _save_gallery(
    images_uint8,
    titles: Sequence[str],
    colors: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """A near-square grid of (N, C, H, W) uint8 images (C = 1 grey or 3 RGB), one title each."""
    images = _as_numpy(images_uint8)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"images must be (N, C, H, W) with C = 1 or 3, got shape {images.shape}")
    if len(titles) != len(images):
        raise ConfigError(f"{len(images)} images but {len(titles)} labels: give one label per image")
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    figure = _new_figure(1.7 * columns, 1.8 * rows)
    for index, (image, title, color) in enumerate(zip(images, titles, colors)):
        axes = figure.add_subplot(rows, columns, index + 1)
        if image.shape[0] == 1:
            # Fixed vmin/vmax: a faint digit stays faint instead of being stretched to full contrast.
            axes.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axes.imshow(image.transpose(1, 2, 0), interpolation="nearest")  # CHW -> HWC
        axes.set_title(title, fontsize=7, color=color)
        axes.axis("off")
    return _save_atomically(figure, path)


def _true_pred_title(true: str, predicted: str, suffix: str = "") -> str:
    """'true X / pred Y' with a line break after the slash when long class names would overlap."""
    separator = " /\n" if len(true) + len(predicted) > 8 else " / "
    return f"true {true}{separator}pred {predicted}{suffix}"


def plot_errors(
    images_uint8,
    labels,
    predictions,
    confidences,
    class_names: Sequence[str],
    path: str | os.PathLike,
    max_images: int = 36,
) -> Path:
    """Gallery of misclassified images, each titled 'true X / pred Y (93%)'.

    The caller selects and orders the images (e.g. by `Metrics.errors`, most confident first);
    only the first `max_images` are drawn. With no images the figure says so.
    """
    images = _as_numpy(images_uint8)[:max_images]
    if len(images) == 0:
        figure = _new_figure(4, 1.5)
        figure.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=12)
        return _save_atomically(figure, path)
    labels, predictions, confidences = (_as_numpy(a)[:max_images] for a in (labels, predictions, confidences))
    titles = [
        _true_pred_title(class_names[int(true)], class_names[int(predicted)], f" ({confidence:.0%})")
        for true, predicted, confidence in zip(labels, predictions, confidences)
    ]
    return _save_gallery(images, titles, ["black"] * len(images), path)


def plot_samples(
    images_uint8,
    labels,
    class_names: Sequence[str],
    path: str | os.PathLike,
    n: int = 36,
    predictions=None,
) -> Path:
    """Gallery of the first `n` images titled with their class, and with the prediction if given.

    Wrong predictions are titled in red.
    """
    images = _as_numpy(images_uint8)[:n]
    if len(images) == 0:
        raise ConfigError("no images to plot")
    labels = _as_numpy(labels)[:n]
    if predictions is None:
        titles = [class_names[int(true)] for true in labels]
        colors = ["black"] * len(images)
    else:
        predictions = _as_numpy(predictions)[:n]
        titles = [
            _true_pred_title(class_names[int(true)], class_names[int(predicted)])
            for true, predicted in zip(labels, predictions)
        ]
        colors = ["black" if t == p else "red" for t, p in zip(labels, predictions)]
    return _save_gallery(images, titles, colors, path)


def plot_line_errors(lines: Sequence, truths: Sequence[str], reads: Sequence[str], path: str | os.PathLike) -> Path:
    """Misread lines of writing, one a row, each titled 'true 4071 / read 4011': `lines` are the
    line recognizer's inputs ((32, W) float, ink bright), drawn dark on light. With none, says so."""
    lines = list(lines)[:12]
    if not lines:
        figure = _new_figure(4, 1.5)
        figure.text(0.5, 0.5, "no misread lines", ha="center", va="center", fontsize=12)
        return _save_atomically(figure, path)
    widest = max(line.shape[1] for line in lines)
    figure = _new_figure(min(12, 1 + widest / 40), 0.9 * len(lines) + 0.3)
    for k, (line, true, read) in enumerate(zip(lines, truths, reads)):
        axes = figure.add_subplot(len(lines), 1, k + 1)
        padded = np.zeros((line.shape[0], widest), np.float32)
        padded[:, : line.shape[1]] = line
        axes.imshow(1 - padded, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        axes.set_title(f"true {true} / read {read or '(nothing)'}", fontsize=8, loc="left")
        axes.axis("off")
    return _save_atomically(figure, path)
