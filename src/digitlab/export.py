"""ONNX export: a model as one self-contained .onnx file, verified against PyTorch before it is written.

    from digitlab.export import export_onnx
    export_onnx(None, "digitnet-real.onnx")             # the bundled model (or a run directory, a Model)
    model = digitlab.load_model("digitnet-real.onnx")    # classes, image shape, temperature: from the file

The graph (onnx_runtime.py) takes uint8 images, ink bright, any batch size, and gives float32
logits. The run's config.json travels in the file's metadata_props ("digitlab.config"), so a
loaded file knows its recipe, classes, image shape and calibration temperature;
"digitlab.parameters" holds the network's parameter count and "digitlab.verification" what
`verify_onnx` measured before the file was written. Why ONNX Runtime: onnx_runtime.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import BUNDLED, BUNDLED_LINE_RUN, BUNDLED_RUN, METRICS, WEIGHTS, shipped_name, weights_digest
from .data.lines import real_lines
from .data.orand import orand_strings
from .errors import ConfigError, DataError, ExportError
from .evaluate import predict_logits, run_dataset
from .files import atomic_write, output_file, read_json
from .inference import LineModel, Model, load_model
from .model_files import open_onnx
from .models import count_parameters
from .models.ctc import greedy_decode
from .onnx_runtime import (
    CALIBRATION_IMAGES,
    CONFIG_KEY,
    MAX_LOGIT_DIFF,
    PARAMETERS_KEY,
    VERIFICATION_KEY,
    LineSession,
    line_onnx_bytes,
    onnx_bytes,
    quantize_int8,
    with_metadata,
)
from .preprocess import LINE_HEIGHT
from .version import __version__

SAME_CLASS_MIN = 0.999  # an export must give PyTorch's class on at least this share of the test set
INT8_ACCURACY_LOSS = 0.001  # ...and an int8 one an accuracy at most this far (0.1 point) below PyTorch's


@dataclass
class Verification:
    """An ONNX model against PyTorch on a labelled set: the share of images where both give the
    same class, the largest |logit difference|, and the ONNX model's own accuracy. An int8 model
    (precision "int8") is held to the same class and to PyTorch's accuracy (at most
    INT8_ACCURACY_LOSS below it) instead of the logit tolerance: its logits move by ~0.6."""

    dataset: str
    split: str
    n: int
    same_class: float  # 0..1
    max_logit_diff: float
    accuracy: float  # 0..1, ONNX Runtime's predictions against the labels
    precision: str = "float32"
    reference_accuracy: float | None = None  # PyTorch's, on the same images

    @property
    def passed(self) -> bool:
        if self.same_class < SAME_CLASS_MIN:
            return False
        if self.precision == "int8":
            return self.reference_accuracy is None or self.accuracy >= self.reference_accuracy - INT8_ACCURACY_LOSS
        return self.max_logit_diff <= MAX_LOGIT_DIFF

    def __str__(self) -> str:
        same = (
            f"same class as PyTorch on {self.same_class * 100:.2f}% of {self.n:,} {self.dataset} {self.split} "
            f"images (>= {SAME_CLASS_MIN * 100:g}% needed)"
        )
        if self.precision == "int8":
            reference = "" if self.reference_accuracy is None else f" against PyTorch's {self.reference_accuracy:.2%}"
            return (
                f"{same}; accuracy {self.accuracy * 100:.2f}%{reference} (at most "
                f"{INT8_ACCURACY_LOSS * 100:g} point below it needed), max |logit difference| {self.max_logit_diff:.2g}"
            )
        return (
            f"{same}, max |logit difference| {self.max_logit_diff:.2g} (<= {MAX_LOGIT_DIFF:g}); "
            f"accuracy {self.accuracy * 100:.2f}%"
        )


@dataclass
class OnnxExport:
    """What `export_onnx` wrote."""

    path: Path
    size: int  # bytes
    exporter: str  # 'torchscript' or 'dynamo'
    parameters: int
    verification: Verification | None  # None when exported without verifying


def verify_onnx(
    onnx_model: str | Path | bytes, model=None, *, data_dir=None, dataset=None, split: str = "test"
) -> Verification:
    """Run an exported model with ONNX Runtime against PyTorch on its dataset's `split`.

    onnx_model: a .onnx file written by `export_onnx` (or its bytes); model: the PyTorch
    reference -- a Model, a run directory or None (the bundled model); dataset: a loaded
    Dataset, else the one named in the model's config is loaded (from data_dir). Returns the
    figures; whether they pass is `Verification.passed` (export_onnx refuses a failing one).
    """
    reference = model if isinstance(model, Model) else load_model(model, backend="torch")
    if reference.module is None:
        raise ConfigError(f"the reference for verifying an ONNX model must be a PyTorch model, not {reference}")
    session, config, _ = open_onnx(onnx_model)
    if tuple(config["dataset"]["image_shape"]) != reference.image_shape:
        raise ConfigError(
            f"the ONNX model takes {tuple(config['dataset']['image_shape'])} images, "
            f"the PyTorch model {reference.image_shape}"
        )
    if dataset is None:
        dataset = run_dataset(reference.config, data_dir=data_dir, progress=False)  # as training loaded it
    images, labels = dataset.split(split)
    expected = predict_logits(reference.module, images).numpy()
    got = session.logits(images.numpy())
    return Verification(
        dataset=dataset.name,
        split=split,
        n=len(labels),
        same_class=float((got.argmax(1) == expected.argmax(1)).mean()),
        max_logit_diff=float(np.abs(got - expected).max()),
        accuracy=float((got.argmax(1) == labels.numpy()).mean()),
        precision=config.get("export", {}).get("precision", "float32"),
        reference_accuracy=float((expected.argmax(1) == labels.numpy()).mean()),
    )


def verify_line_onnx(onnx_model: bytes, model: LineModel, *, data_dir=None) -> Verification:
    """A line model's export run with ONNX Runtime against PyTorch on its test lines (ORAND-CAR-A's
    dev split: measured, never trained on): the share of frames where both give the same best
    class, the largest |logit difference|, and the lines ONNX Runtime reads exactly (greedy).
    digitlab itself loads line models from their run directories (model_files.check_onnx says why)."""
    lines = real_lines(orand_strings("dev", data_dir))
    session = LineSession(onnx_model)
    same = frames = right = 0
    worst = 0.0
    for image, text in lines:
        x = image[None, None]
        with torch.no_grad():
            expected = model.module(torch.from_numpy(x)).float().numpy()[0]
        got = session.frames(x)[0]
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        frames += len(got)
        worst = max(worst, float(np.abs(got - expected).max()))
        right += "".join(str(c.label) for c in greedy_decode(np.exp(got - got.max(1, keepdims=True)))) == text
    return Verification(
        "orand-car-a dev lines", "test", len(lines), same / max(1, frames), worst, right / max(1, len(lines))
    )


def _source(path: Path | None) -> str | None:
    """Where the exported model came from, as its metadata says: a run directory, or for a model
    shipped in the package its name ("bundled" for the bundled digit and line models), not the path
    it has in one installation."""
    if path is None:
        return None
    if Path(path).resolve() in (BUNDLED_RUN.resolve(), BUNDLED_LINE_RUN.resolve()):
        return BUNDLED
    return shipped_name(path) or str(path)


def calibration_images(config: dict, data_dir=None, dataset=None, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """`n` of the run's own training images (a seeded random sample, uint8 (n, C, H, W)): what sets
    an int8 export's activation ranges. Never test images."""
    if dataset is None:
        dataset = run_dataset(config, data_dir=data_dir, progress=False)
    images, _ = dataset.split("train")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
    return images[order].numpy()


def _export_config(model, exporter: str, int8: bool) -> dict:
    """The config.json an export carries: the run's, with how it was exported, and the evaluation
    the run measured (not for int8: the run's figure is float32's; the verification measures it)."""
    config = {
        **model.config,
        "export": {
            "format": "onnx",
            "exporter": exporter,
            "digitlab_version": __version__,
            "torch_version": torch.__version__,
            "source": _source(model.path),
            "precision": "int8" if int8 else "float32",
        },
    }
    if model.path is not None and (Path(model.path) / WEIGHTS).is_file():
        # what load_model checks before it runs a run's INT8 file in place of its weights
        config["export"]["weights_sha256"] = weights_digest(Path(model.path) / WEIGHTS)
    if int8:
        config.pop("evaluation", None)
        return config
    metrics = Path(model.path) / METRICS if model.path is not None else None
    if "evaluation" not in config and metrics is not None and metrics.is_file():
        # what the run's evaluation measured, as /api/models shows it (a diverged run's loss is NaN)
        measured = read_json(metrics, allow_nan=True)
        config["evaluation"] = {key: measured.get(key) for key in ("dataset", "split", "n", "accuracy")}
    return config


def _quantized(raw: bytes, model, config: dict, data_dir, dataset) -> bytes:
    """The export quantised to int8, calibrated on the run's training images (noted in `config`)."""
    try:
        calibration = calibration_images(model.config, data_dir, dataset)
    except DataError as err:
        raise ExportError(
            f"an int8 export is calibrated on the run's training images, and they cannot be loaded: {err.summary}",
            details=err.details,
        ) from err
    config["export"]["calibration"] = f"{len(calibration):,} training images"
    return quantize_int8(raw, calibration)


def export_onnx(
    model_or_run=None,
    path: str | Path = "model.onnx",
    *,
    verify: bool = True,
    data_dir=None,
    dataset=None,
    int8: bool = False,
) -> OnnxExport:
    """Write a model as a self-contained .onnx file, whole or not at all.

    model_or_run: a Model, a run directory, a shipped model's name (checkpoint.named_models), or
    None for the bundled model; path: the file to
    write, ending .onnx, in a folder that exists (files.output_file: a missing folder is an
    error, never created; checked before the work). With `verify` (the
    default) the export is first run with ONNX Runtime on the test set of the model's dataset:
    unless it gives PyTorch's class on >= 99.9% of the images with logits within 1e-4, nothing
    is written and ExportError says why. Returns what was written, with the verification.

    int8: quantise the convolutions and the last layer to int8 (onnx_runtime.quantize_int8),
    calibrated on CALIBRATION_IMAGES of the run's own training images (so the training data must
    be at hand even without verifying); verified to give PyTorch's class on >= 99.9% of the test
    set and an accuracy at most 0.1 point below PyTorch's. Digit models only.
    """
    path = output_file(path, (".onnx",), "an ONNX model")  # before any work: its folder exists, it ends .onnx
    given = model_or_run
    model = given if isinstance(given, (Model, LineModel)) else load_model(given, backend="torch")
    if model.module is None:
        raise ExportError(f"{model.path} is an ONNX model already; export the run directory it came from")
    if int8 and isinstance(model, LineModel):
        raise ConfigError("int8 export is for digit models; a line model exports in float32 only")
    parameters = count_parameters(model.module)
    try:
        if isinstance(model, LineModel):
            raw, exporter = line_onnx_bytes(model.module, LINE_HEIGHT), "torchscript"
        else:
            raw, exporter = onnx_bytes(model.module, model.image_shape)
    except Exception as err:  # noqa: BLE001 -- both exporters failed: say so, without a traceback
        raise ExportError(f"{model} could not be exported to ONNX: {type(err).__name__}: {err}") from err
    config = _export_config(model, exporter, int8)
    if int8:
        raw = _quantized(raw, model, config, data_dir, dataset)
    data = with_metadata(raw, {CONFIG_KEY: json.dumps(config), PARAMETERS_KEY: str(parameters)})
    verification = None
    if verify:
        try:
            if isinstance(model, LineModel):
                verification = verify_line_onnx(data, model, data_dir=data_dir)
            else:
                verification = verify_onnx(data, model, data_dir=data_dir, dataset=dataset)
        except DataError as err:
            raise ExportError(
                f"cannot verify the export without the {model.config['dataset']['name']} test set "
                f"(or export without verifying: --no-verify): {err.summary}",
                details=err.details,
            ) from err
        if not verification.passed:
            raise ExportError(
                f"the ONNX export of {model} does not compute what PyTorch computes: {verification}; "
                f"{path} was not written"
            )
        entries = {VERIFICATION_KEY: json.dumps(asdict(verification))}
        if int8:  # what /api/models and `digitlab models` show as its accuracy: the int8 model's own
            config["evaluation"] = {
                "dataset": verification.dataset,
                "split": verification.split,
                "n": verification.n,
                "accuracy": verification.accuracy,
            }
            entries[CONFIG_KEY] = json.dumps(config)
        data = with_metadata(data, entries)
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err}") from err
    return OnnxExport(path=path, size=len(data), exporter=exporter, parameters=parameters, verification=verification)
