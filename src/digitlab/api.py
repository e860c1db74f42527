"""The Python API: what the CLI and the service call, and nothing else. It names the public functions
and calls the stages that do the work: data, train, inference, evaluate, preprocess, read.

    import digitlab
    ds = digitlab.load_dataset("mnist")
    run = digitlab.train("keras-mlp-dropout", epochs=1)
    metrics = digitlab.evaluate(run.path)
    model = digitlab.load_model(run.path)
    digits = model.predict(ds.test_images[:5, 0])   # (5, 28, 28) -> (5,)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Dataset, load_dataset
from .distributed import Cluster
from .ensemble import make_ensemble
from .errors import ConfigError
from .evaluate import LineMetrics, Metrics, evaluate_line_run, evaluate_run
from .inference import BUNDLED_MODEL, LineModel, Model, load_line_model, load_model  # noqa: F401 (BUNDLED_MODEL: digitlab.api's, for importers)
from .preprocess import MAX_PIXELS, ImageSource, load_image, to_mnist_style, to_uint8_digit
from .read import MAX_SIDE, METHODS, UNSURE_BELOW, Reading
from .read import annotate as annotate_image
from .read import read as read_image
from .read.marks import digit_marks
from .train import Run, RunOptions, fit, interrupted_text, say

__all__ = [
    "LineModel",
    "Model",
    "Prediction",
    "Run",
    "load_dataset",
    "train",
    "evaluate",
    "ensemble",
    "load_model",
    "load_line_model",
    "predict",
    "read",
    "annotate",
]


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
    val_split: float | None = None,
    subset: int | None = None,
    settings: list[str] | None = None,
    dataset: Dataset | None = None,
    data: list[str | Path] | None = None,
    init: str | Path | None = None,
    evaluate_after: bool = True,
    progress: bool = True,
    keep: str | None = None,
    tensorboard: bool = False,
) -> Run:
    """Train a named recipe, write its run directory, then evaluate it on the test set.

    recipe: a name from `digitlab recipes` (None with `resume`); epochs, batch_size, lr,
    seed: override the recipe's fields; device: 'auto' (CUDA if present), 'cpu' or 'cuda';
    out: the folder that gets runs/<recipe>-<timestamp>/; resume: a run directory to continue
    from its last complete checkpoint; val_split: hold out this fraction of the training set
    for per-epoch validation (None: 0.1 with `data`, else 0: validate on the test set, as the
    tutorials do); data: train on these sources instead of the recipe's dataset -- dataset names,
    folders with one subfolder of images per class (DIR/0/ ... DIR/9/) and CSV files of file,label
    rows, joined; each image prepared as `predict` prepares it; the test split is the named
    datasets' test splits, or with none named the held-out part; recorded for `resume`; init: a run
    directory, or "bundled" for the bundled model, whose weights the run starts from (fine-tuning;
    the recipe's network must be the same, tensor for tensor), recorded in config.json;
    subset: train on a seeded random subset of this many training images; settings: more
    recipe fields as "FIELD=VALUE" strings, e.g. ["schedule=onecycle", "label_smoothing=0.1"];
    keep: which epoch's weights the run keeps, "last" (None: the default, and a resumed run's own
    choice) or "best" (the best validation accuracy; needs val_split), recorded in config.json's
    "kept"; tensorboard: per-epoch scalars into RUN/tensorboard/ (the tensorboard package,
    `pip install 'digitlab[tensorboard]'`); progress: the header, bars and epoch lines on stderr.
    With a validation split the run is calibrated at the end: config.json's "calibration" holds
    the temperature fitted on it (evaluate.fit_temperature), as the bundled model's does.

    Started by torchrun, each process calls this and they train together (distributed.py);
    only rank 0 writes and evaluates the run, and the others return a Run with rank > 0.
    """
    cluster = Cluster.from_environment()  # several processes when started by torchrun
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}  # None: the recipe's own
    options = RunOptions(
        dataset=dataset,
        data_dir=data_dir,
        out=out,
        resume=resume,
        device=device,
        val_split=(0.1 if data and resume is None else 0.0) if val_split is None else val_split,
        subset=subset,
        settings=tuple(settings or ()),
        data=tuple(str(s) for s in data or ()),
        init=init,
        progress=progress,
        cluster=cluster,
        overrides=overrides,
        keep=keep,
        tensorboard=tensorboard,
    )
    run = fit(recipe, options)
    if evaluate_after and cluster.main:
        try:
            evaluate(run.path, data_dir=data_dir, dataset=dataset or run.dataset, progress=progress)
        except KeyboardInterrupt:
            if progress:
                say(interrupted_text(run.path, run.recipe.epochs, run.recipe.epochs, options))
            raise
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
    precision: str = "auto",
) -> Metrics | LineMetrics:
    """Evaluate a run on a split of its dataset: 'test', 'train', or 'val' (the images a
    --val-split run held out of training).

    Writes into `out` (default: the run directory) metrics[-SPLIT].json, report[-SPLIT].txt,
    confusion[-SPLIT].png, errors[-SPLIT].png, samples[-SPLIT].png and, from history.json,
    curves.png. The test split keeps the plain names DESIGN.md lists. `run` may be an .onnx
    file from `export_onnx`; it has no run directory to write into, so `out` is then required.
    `run` may be a shipped model's name (as `load_model` takes it); the package is never written
    into: by default its files go to runs/evaluate-NAME/ (evaluate.evaluation_folder).
    precision: as `load_model`'s (a run's int8 export is measured where it would be run).
    """
    model = load_model(run, device=device, precision=precision)
    if isinstance(model, LineModel):  # a line recognizer: read on its test lines (ORAND-CAR-A dev)
        return evaluate_line_run(model, split, out=out, data_dir=data_dir)
    return evaluate_run(model, split, out=out, dataset=dataset, data_dir=data_dir, progress=progress)


def ensemble(runs: list[str | Path | Run], out: str | Path, shifts: int = 0) -> Path:
    """One model from several runs of digit models on the same data: their probabilities averaged
    (each at its own calibration temperature), written as a new run directory `out` that load_model,
    evaluate, export and serve take like any run; its ONNX export is one graph holding every member.
    shifts=1: over the image and its four one-pixel shifts too (test-time augmentation; then one run
    is enough). Returns `out`."""
    return make_ensemble([run.path if isinstance(run, Run) else run for run in runs], out, shifts)


@dataclass
class Prediction:
    """One image's reading: the class, its probability, the top 3, and the 28x28 input the model saw.

    digit_marks: how many digit-sized marks stand side by side in the image (read.marks), 0 when
    none do (one digit); 2 or more say the image is a string of digits, which `read` reads whole.
    None where it was not looked for (pixels given MNIST-style, `prepare=False`).
    """

    digit: str
    confidence: float
    top3: list[tuple[str, float]]
    probabilities: list[float]
    model_input: np.ndarray  # (28, 28) uint8, ink bright: what preprocessing made of the image
    digit_marks: int | None = None

    @property
    def several_digits(self) -> bool:
        """Whether the image holds several digits side by side (then `read` is what reads it)."""
        return (self.digit_marks or 0) >= 2

    def __repr__(self) -> str:  # one line: not the ten probabilities and the 28x28 array
        top3 = ", ".join(f"({d!r}, {p:.3f})" for d, p in self.top3)
        marks = "" if self.digit_marks is None else f", digit_marks={self.digit_marks}"
        shape = "x".join(map(str, self.model_input.shape))
        return (
            f"Prediction(digit={self.digit!r}, confidence={self.confidence:.3f}, top3=[{top3}]{marks}, "
            f"model_input=<{shape} {self.model_input.dtype}>)"
        )

    def to_json(self) -> dict:
        out = {
            "digit": self.digit,
            "confidence": self.confidence,
            "top3": [{"digit": d, "probability": p} for d, p in self.top3],
            "probabilities": self.probabilities,
        }
        if self.digit_marks is not None:
            out["digit_marks"] = self.digit_marks
        return out


def predict(
    images: ImageSource | list[ImageSource],
    model: Model | str | Path | None = None,
    *,
    prepare: bool = True,
    max_pixels: int = MAX_PIXELS,
    count_marks: bool = True,
) -> list[Prediction]:
    """Read one digit per image: each is prepared MNIST-style (preprocess.to_mnist_style) first.

    images: one image or a list (paths, bytes, PIL images or arrays, any common format);
    model: a loaded Model, a run directory, a shipped model's name, or None for the bundled default model;
    prepare: False when the images already are MNIST-style (28, 28) arrays, ink bright (uint8,
    or float in [0, 1]): the model then sees them as they are; max_pixels: larger images are
    refused (preprocess.ImageTooLargeError) from their header, before they are decoded.
    count_marks: look for several digits in each prepared image (Prediction.digit_marks; about
    1 ms for a 28x28 digit, 30-70 ms for a phone photo); the prediction itself is the same.
    """
    model = _digit_model(model)
    batch = images if isinstance(images, list) else [images]
    marks: list[int | None] = [None] * len(batch)
    if prepare:
        prepared = []
        for i, image in enumerate(batch):
            grey = load_image(image, max_pixels=max_pixels)  # decoded once, for both
            prepared.append(to_mnist_style(grey))
            if count_marks:
                marks[i] = digit_marks(grey, MAX_SIDE)
        inputs = np.stack(prepared)  # (N, 28, 28) uint8
    else:
        inputs = np.stack([to_uint8_digit(image) for image in batch])
    probabilities = model.predict_proba(inputs)
    predictions = []
    for x, p, n in zip(inputs, probabilities, marks):
        order = np.argsort(-p)[:3]
        predictions.append(
            Prediction(
                digit=model.classes[order[0]],
                confidence=float(p[order[0]]),
                top3=[(model.classes[i], float(p[i])) for i in order],
                probabilities=[float(v) for v in p],
                model_input=x,
                digit_marks=n,
            )
        )
    return predictions


def _digit_model(model: Model | str | Path | None) -> Model:
    """A loaded 28x28 digit model: the one given, a run directory or shipped model's name, or the
    bundled default. ConfigError for a line recognizer (a LineModel), which reads whole lines."""
    if not isinstance(model, (Model, LineModel)):
        model = load_model(model)
    if isinstance(model, LineModel):
        raise ConfigError(
            f"{model.path} is a line recognizer, not a model of single digits: give it as the line model "
            "(`read --line-model`), and a digit model here"
        )
    if model.image_shape != (1, 28, 28):
        raise ConfigError(f"reading digits needs a model of 28x28 grey digits; {model} takes {model.image_shape}")
    return model


def read(
    image: ImageSource,
    model: Model | str | Path | None = None,
    *,
    unsure_below: float = UNSURE_BELOW,
    max_pixels: int = MAX_PIXELS,
    method: str = "auto",
    line_model: LineModel | str | Path | None = None,
) -> Reading:
    """Read the lines of digits in a photo or scan: text, and each digit's box and confidence.
    Every box (Digit.box, Line.box) is (x, y, w, h): left, top, width and height in pixels of the
    image as given (a large photo is read shrunk, its boxes mapped back).

    model: a loaded Model, a run directory, a shipped model's name, or None for the bundled default model;
    unsure_below: digits whose top probability is lower read as '?' (not guessed);
    max_pixels: larger images are refused from their header, before they are decoded;
    method: "auto" (the default: each line read both ways and the likelier kept), "segment" (cut
    into digits, each classified by `model`) or "sequence" (each line read whole by the line
    recognizer); line_model: a LineModel, a `linenet` run directory, or None for the bundled one.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown reading method {method!r}; use {', '.join(METHODS)}")
    lines = None if method == "segment" else _line_model(line_model)
    return read_image(
        image, _digit_model(model), unsure_below=unsure_below, max_pixels=max_pixels, method=method, line_model=lines
    )


_BUNDLED_LINES: list[LineModel] = []  # the bundled line model, loaded once per process (1.3 s: its ONNX export)


def _line_model(line_model: LineModel | str | Path | None) -> LineModel:
    """A loaded line recognizer: the one given, a run directory, or the bundled one (loaded once)."""
    if isinstance(line_model, LineModel):
        return line_model
    if line_model is not None:
        return load_line_model(line_model)
    if not _BUNDLED_LINES:
        _BUNDLED_LINES.append(load_line_model())
    return _BUNDLED_LINES[0]


def annotate(
    image: ImageSource, reading: Reading, *, max_pixels: int = MAX_PIXELS, confidence: bool = False
) -> np.ndarray:
    """The image (H, W, 3) uint8 RGB with `reading`'s boxes and digits drawn on it (read.annotate;
    an image under 256 pixels on its shorter side is enlarged first by a whole factor, its boxes
    with it); confidence: each digit's probability drawn under its box too ('98%')."""
    return annotate_image(image, reading, max_pixels=max_pixels, confidence=confidence)
