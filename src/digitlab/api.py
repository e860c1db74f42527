"""The Python API: what the CLI (and later the service) call, and nothing else.

    import digitlab
    ds = digitlab.load_dataset("mnist")
    run = digitlab.train("keras-mlp-dropout", epochs=1)
    metrics = digitlab.evaluate(run.path)
    model = digitlab.load_model(run.path)
    digits = model.predict(ds.test_images[:5, 0])   # (5, 28, 28) -> (5,)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import plots
from .checkpoint import CONFIG, HISTORY, METRICS, WEIGHTS, read_json, write_json, write_text
from .data import Dataset, load_dataset
from .distributed import Cluster
from .errors import CheckpointError, ConfigError, ExportError
from .evaluate import Metrics, compute_metrics, predict_logits
from .model_files import build_network, refuse_pickle
from .models import count_parameters
from .preprocess import MAX_PIXELS, ImageError, ImageSource, to_mnist_style
from .read import UNSURE_BELOW, Reading
from .read import annotate as annotate_image
from .read import read as read_image
from .train import Run, fit, pick_device, split_validation

__all__ = ["Model", "Prediction", "Run", "load_dataset", "train", "evaluate", "load_model", "predict", "read",
           "annotate"]


class Model:
    """A trained model ready to use: the network, its classes and the config that built it.

    It runs on one of two backends: `session` (ONNX Runtime, see export.py) when there is one,
    else `module` (PyTorch eager). A run directory loaded on the CPU has both -- the session
    for inference, the module for training-side work (summaries, export, verification); an
    .onnx file has only the session (module None).
    """

    def __init__(self, module: nn.Module | None, config: dict, path: Path | None = None, *, session=None,
                 parameters: int | None = None):
        if module is None and session is None:
            raise ValueError("a Model needs a torch module or an ONNX Runtime session")
        self.module = module.eval() if module is not None else None
        self.session = session  # export.OnnxSession or None
        self.config = config
        self.path = path
        self.classes: tuple[str, ...] = tuple(config["dataset"]["classes"])
        self.image_shape: tuple[int, int, int] = tuple(config["dataset"]["image_shape"])
        # Probabilities are softmax(logits / temperature); a calibrated model records its own
        # temperature (evaluate.fit_temperature), others use 1.
        self.temperature: float = float(config.get("calibration", {}).get("temperature", 1.0))
        self._parameters = parameters

    def __repr__(self) -> str:
        return (f"Model({self.config['recipe']['name']!r}, model={self.config['model']['name']!r}, path={self.path}, "
                f"backend={self.backend!r})")

    @property
    def backend(self) -> str:
        """'onnx' (ONNX Runtime) or 'torch' (PyTorch eager): what `logits` runs on."""
        return "onnx" if self.session is not None else "torch"

    @property
    def parameter_count(self) -> int | None:
        """The network's parameters (as count_parameters counts them); None for an .onnx file
        whose metadata does not say."""
        return count_parameters(self.module) if self.module is not None else self._parameters

    def _as_uint8_batch(self, images) -> torch.Tensor:
        """Accept (H, W), (N, H, W), (N, C, H, W) arrays: uint8 0..255 or float 0..1, ink bright."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        c, h, w = self.image_shape
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3 and c == 1:
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ConfigError(f"expected images of shape (N, {h}, {w}) or (N, {c}, {h}, {w}), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point():
            raise ConfigError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ConfigError("float images must lie in [0, 1] (ink bright on a dark ground)")
        return (x * 255).round().to(torch.uint8)

    def logits(self, images) -> np.ndarray:
        """(N, K) float32 logits for a batch of images: the one inference entry, on `backend`."""
        x = self._as_uint8_batch(images)
        if self.session is not None:
            return self.session.logits(x.cpu().numpy())
        return predict_logits(self.module, x).numpy()

    def predict_proba(self, images) -> np.ndarray:
        """(N, K) class probabilities for a batch of images.

        Raises CheckpointError when they are not finite numbers (a model whose weights hold NaN,
        say): NaN is not JSON, and the service and `--json` would emit it.
        """
        logits = torch.from_numpy(self.logits(images))
        probabilities = torch.softmax(logits / self.temperature, 1).numpy()
        if not np.isfinite(probabilities).all():
            bad = int((~np.isfinite(probabilities).all(1)).sum())
            raise CheckpointError(f"{self} computes NaN or infinite probabilities for {bad} of {len(probabilities)} "
                                  "image(s): its weights are damaged (NaN or enormous); retrain or re-export it")
        return probabilities

    def predict(self, images) -> np.ndarray:
        """(N,) predicted class indices (for digits, the digit itself)."""
        return self.predict_proba(images).argmax(1)


BUNDLED_MODEL = Path(__file__).with_name("weights") / "digitnet-pen"
BACKENDS = ("auto", "torch", "onnx")
log = logging.getLogger(__name__)


def load_model(run: str | Path | Run | None = None, device: str | None = None, backend: str = "auto") -> Model:
    """Load a run directory (config.json + model.safetensors), or an .onnx file from `export_onnx`
    (`digitlab export`), as a `Model`.

    With no run, the bundled default model (recipe digitnet-pen, trained by digitlab itself;
    see weights/README.md) that works offline with no training.

    backend: 'auto' (the default) runs a model on the CPU with ONNX Runtime -- a run directory
    is exported to ONNX in memory at load (~0.25 s), and should that fail it runs on PyTorch,
    with a logged warning -- and a model on a GPU with PyTorch; 'torch': PyTorch eager only;
    'onnx': ONNX Runtime or an error. An .onnx file runs on ONNX Runtime only. ONNX Runtime
    uses torch.get_num_threads() threads.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if run is None:
        if not (BUNDLED_MODEL / WEIGHTS).is_file():
            raise CheckpointError(f"the bundled model is missing from this installation ({BUNDLED_MODEL}); "
                                  "pass a run directory")
        run = BUNDLED_MODEL
    if isinstance(run, Run):
        run = run.path
    path = Path(run)
    if path.is_file():
        refuse_pickle(path)
        return _load_onnx(path, device, backend)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a run directory (expected a folder with {CONFIG} and {WEIGHTS}) "
                              "nor an .onnx file")
    config = read_json(path / CONFIG)
    # Checked against the weights' header before it is built: the files are untrusted (model_files.py).
    module = build_network(config, path / CONFIG, path / WEIGHTS)
    model = Model(module, config, path)
    device = pick_device(device)
    module.to(device)
    if backend == "onnx" and device.type != "cpu":
        raise ConfigError(f"backend 'onnx' runs on the CPU; {device} was asked for (use backend 'torch' or 'auto')")
    if backend != "torch" and device.type == "cpu":
        from .export import session_for

        try:
            model.session = session_for(module, model.image_shape)
        except Exception as err:  # noqa: BLE001 -- 'auto' falls back to PyTorch whatever went wrong
            if backend == "onnx":
                raise ExportError(f"{path} could not run on ONNX Runtime: {type(err).__name__}: {err}") from err
            log.warning("digitlab: %s runs on PyTorch: ONNX Runtime could not take it (%s: %s)", path,
                        type(err).__name__, err)
    return model


def _load_onnx(path: Path, device: str | None, backend: str) -> Model:
    """An .onnx file from `export_onnx` as a Model on ONNX Runtime (its config from its metadata)."""
    from .export import open_onnx

    if backend == "torch":
        raise ConfigError(f"{path} is an ONNX model: it runs on ONNX Runtime only (backend 'auto' or 'onnx'); "
                          "for PyTorch load the run directory it was exported from")
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"{path} is an ONNX model: it runs on the CPU, not {device!r}")
    try:
        session, config, parameters = open_onnx(path)
    except CheckpointError as err:
        if path.suffix.lower() == ".onnx":
            raise
        raise CheckpointError(f"{path} is neither a run directory nor an .onnx file from `digitlab export`: "
                              f"{err}") from err
    return Model(None, config, path, session=session, parameters=parameters)


def train(
    recipe: str | None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    val_split: float = 0.0,
    subset: int | None = None,
    settings: list[str] | None = None,
    dataset: Dataset | None = None,
    evaluate_after: bool = True,
    progress: bool = True,
) -> Run:
    """Train a named recipe, write its run directory, then evaluate it on the test set.

    recipe: a name from `digitlab recipes` (None with `resume`); epochs, batch_size, lr,
    seed: override the recipe's fields; device: 'auto' (CUDA if present), 'cpu' or 'cuda';
    out: the folder that gets runs/<recipe>-<timestamp>/; resume: a run directory to continue
    from its last complete checkpoint; val_split: hold out this fraction of the training set
    for per-epoch validation (default: validate on the test set, as the tutorials do);
    subset: train on a seeded random subset of this many training images; settings: more
    recipe fields as "FIELD=VALUE" strings, e.g. ["schedule=onecycle", "label_smoothing=0.1"].

    Started by torchrun, each process calls this and they train together (distributed.py);
    only rank 0 writes and evaluates the run, and the others return a Run with rank > 0.
    """
    cluster = Cluster.from_environment()  # several processes when started by torchrun
    run = fit(recipe, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, data_dir=data_dir,
              out=out, resume=resume, val_split=val_split, subset=subset, settings=settings, dataset=dataset,
              progress=progress, cluster=cluster)
    if evaluate_after and cluster.main:
        evaluate(run.path, data_dir=data_dir, dataset=dataset, progress=progress)
    return run


def evaluate(
    run: str | Path | Run,
    split: str = "test",
    *,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    dataset: Dataset | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Metrics:
    """Evaluate a run on a split of its dataset: 'test', 'train', or 'val' (the images a
    --val-split run held out of training).

    Writes into `out` (default: the run directory) metrics[-SPLIT].json, report[-SPLIT].txt,
    confusion[-SPLIT].png, errors[-SPLIT].png, samples[-SPLIT].png and, from history.json,
    curves.png. The test split keeps the plain names DESIGN.md lists. `run` may be an .onnx
    file from `export_onnx`; it has no run directory to write into, so `out` is then required.
    """
    model = load_model(run, device=device)
    config = model.config
    if out is None and not Path(model.path).is_dir():
        raise ConfigError(f"{model.path} is a file, not a run directory: say where the report and plots go (--out DIR)")
    if dataset is None:
        dataset = load_dataset(config["dataset"]["name"], data_dir=data_dir, progress=progress)
    if tuple(dataset.image_shape) != model.image_shape:
        raise ConfigError(f"the model takes {model.image_shape} images, {dataset.name} has {dataset.image_shape}")
    if split == "val":  # the held-out part of the training set, rebuilt from the run's seed
        train_config = config["train"]
        if not train_config.get("val_split"):
            raise ConfigError(f"{model.path} was trained without --val-split: it has no validation split")
        _, _, images, labels = split_validation(dataset, train_config["val_split"], train_config["subset"],
                                                config["recipe"]["seed"])
    else:
        images, labels = dataset.split(split)
    metrics = compute_metrics(model.logits(images), labels, dataset.classes)

    folder = Path(out) if out is not None else model.path
    folder.mkdir(parents=True, exist_ok=True)
    tag = "" if split == "test" else f"-{split}"
    header = f"{config['recipe']['name']} on {dataset.name} {split} ({len(labels)} images)\n"
    write_text(folder / f"report{tag}.txt", header + f"accuracy {metrics.accuracy:.4f}  loss {metrics.loss:.4f}\n\n"
               + metrics.report + "\n")
    plots.plot_confusion(metrics.confusion, dataset.classes, folder / f"confusion{tag}.png",
                         title=f"{config['recipe']['name']} — {dataset.name} {split}")
    wrong = metrics.errors[:36]
    plots.plot_errors(images[wrong], metrics.labels[wrong], metrics.predictions[wrong], metrics.confidences[wrong],
                      dataset.classes, folder / f"errors{tag}.png")
    plots.plot_samples(images, labels, dataset.classes, folder / f"samples{tag}.png",
                       predictions=metrics.predictions)
    history_path = Path(model.path) / HISTORY
    if history_path.is_file():
        history = read_json(history_path, allow_nan=True)  # a diverged run's losses are NaN
        if history:
            plots.plot_curves(history, folder / "curves.png")
    # Last: a run directory with metrics.json has been evaluated whole (train.plan_resume relies on it).
    write_json(folder / (METRICS if split == "test" else f"metrics{tag}.json"),
               {"run": str(model.path), "dataset": dataset.name, "split": split, **metrics.to_json()})
    return metrics


@dataclass
class Prediction:
    """One image's reading: the class, its probability, the top 3, and the 28x28 input the model saw."""

    digit: str
    confidence: float
    top3: list[tuple[str, float]]
    probabilities: list[float]
    model_input: np.ndarray  # (28, 28) uint8, ink bright: what preprocessing made of the image

    def to_json(self) -> dict:
        return {"digit": self.digit, "confidence": self.confidence,
                "top3": [{"digit": d, "probability": p} for d, p in self.top3],
                "probabilities": self.probabilities}


def predict(images: ImageSource | list[ImageSource], model: Model | str | Path | None = None, *,
            prepare: bool = True, max_pixels: int = MAX_PIXELS) -> list[Prediction]:
    """Read one digit per image: each is prepared MNIST-style (preprocess.to_mnist_style) first.

    images: one image or a list (paths, bytes, PIL images or arrays, any common format);
    model: a loaded Model, a run directory, or None for the bundled default model;
    prepare: False when the images already are MNIST-style (28, 28) arrays, ink bright (uint8,
    or float in [0, 1]): the model then sees them as they are; max_pixels: larger images are
    refused (preprocess.ImageTooLargeError) from their header, before they are decoded.
    """
    model = _digit_model(model)
    batch = images if isinstance(images, list) else [images]
    if prepare:
        inputs = np.stack([to_mnist_style(image, max_pixels=max_pixels) for image in batch])  # (N, 28, 28) uint8
    else:
        inputs = np.stack([_as_model_input(image) for image in batch])
    probabilities = model.predict_proba(inputs)
    predictions = []
    for x, p in zip(inputs, probabilities):
        order = np.argsort(-p)[:3]
        predictions.append(Prediction(
            digit=model.classes[order[0]], confidence=float(p[order[0]]),
            top3=[(model.classes[i], float(p[i])) for i in order], probabilities=[float(v) for v in p],
            model_input=x))
    return predictions


def _as_model_input(image) -> np.ndarray:
    """A prepared (28, 28) digit as uint8, ink bright: from uint8, or float in [0, 1]."""
    array = np.asarray(image)
    if array.shape != (28, 28):
        raise ImageError(f"a prepared digit must be a (28, 28) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise ImageError(f"a prepared digit must hold finite numbers, got {array.dtype}")
    if array.dtype.kind == "f":
        if array.min() < 0 or array.max() > 1:
            raise ImageError("a float digit must hold values in [0, 1] (or give uint8 0-255)")
        return np.round(array * 255).astype(np.uint8)
    if array.min() < 0 or array.max() > 255:
        raise ImageError("an integer digit must hold values in 0-255")
    return array.astype(np.uint8)


def _digit_model(model: Model | str | Path | None) -> Model:
    """A loaded 28x28 digit model: the one given, a run directory, or the bundled default."""
    if not isinstance(model, Model):
        model = load_model(model)
    if model.image_shape != (1, 28, 28):
        raise ConfigError(f"reading digits needs a model of 28x28 grey digits; {model} takes {model.image_shape}")
    return model


def read(image: ImageSource, model: Model | str | Path | None = None, *,
         unsure_below: float = UNSURE_BELOW, max_pixels: int = MAX_PIXELS) -> Reading:
    """Read the lines of digits in a photo or scan: text, and each digit's box and confidence.

    model: a loaded Model, a run directory, or None for the bundled default model;
    unsure_below: digits whose top probability is lower read as '?' (not guessed);
    max_pixels: larger images are refused from their header, before they are decoded.
    """
    return read_image(image, _digit_model(model), unsure_below=unsure_below, max_pixels=max_pixels)


def annotate(image: ImageSource, reading: Reading, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image (H, W, 3) uint8 RGB with `reading`'s boxes and digits drawn on it (read.annotate)."""
    return annotate_image(image, reading, max_pixels=max_pixels)
