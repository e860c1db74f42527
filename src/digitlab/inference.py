"""Inference: a trained model loaded and ready to use, on ONNX Runtime or PyTorch.

    model = load_model(run_dir)                      # or an .onnx file, or None: the bundled model
    digits = model.predict(images)                   # (N, 28, 28) uint8 or floats in [0, 1] -> (N,)

`load_model` opens the files only after model_files.py has checked them (they are untrusted), and
picks the backend: ONNX Runtime on the CPU through an in-memory export (onnx_runtime.session_for),
PyTorch on a GPU or should that export fail. `Model` turns the arrays it is given into the uint8
batches a network takes (preprocess.to_uint8_images) and its logits into probabilities.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import BUNDLED, BUNDLED_LINE_RUN, BUNDLED_RUN, CONFIG, INT8, WEIGHTS, resolve_model, weights_digest
from .errors import CheckpointError, ConfigError, ExportError
from .evaluate import predict_logits
from .files import read_json
from .model_files import build_network, open_onnx, refuse_pickle
from .models import count_parameters, model_task
from .onnx_runtime import line_session_for, session_for
from .preprocess import LINE_HEIGHT, LINE_STRIDE, to_uint8_images
from .train import Run, pick_device

__all__ = ["BACKENDS", "BUNDLED_LINE_MODEL", "BUNDLED_MODEL", "LineModel", "Model", "load_line_model", "load_model"]


class Model:
    """A trained model ready to use: the network, its classes and the config that built it.

    It runs on one of two backends: `session` (ONNX Runtime, see onnx_runtime.py) when there is one,
    else `module` (PyTorch eager). A run directory loaded on the CPU has both -- the session
    for inference, the module for training-side work (summaries, export, verification); an
    .onnx file has only the session (module None).
    """

    def __init__(
        self,
        module: nn.Module | None,
        config: dict,
        path: Path | None = None,
        *,
        session=None,
        parameters: int | None = None,
    ):
        if module is None and session is None:
            raise ValueError("a Model needs a torch module or an ONNX Runtime session")
        self.module = module.eval() if module is not None else None
        self.session = session  # onnx_runtime.OnnxSession or None
        self.config = config
        self.path = path
        self.classes: tuple[str, ...] = tuple(config["dataset"]["classes"])
        self.image_shape: tuple[int, int, int] = tuple(config["dataset"]["image_shape"])
        # Probabilities are softmax(logits / temperature); a calibrated model records its own
        # temperature (evaluate.fit_temperature), others use 1.
        self.temperature: float = float(config.get("calibration", {}).get("temperature", 1.0))
        self._parameters = parameters

    def __repr__(self) -> str:
        return (
            f"Model({self.config['recipe']['name']!r}, model={self.config['model']['name']!r}, path={self.path}, "
            f"backend={self.backend!r})"
        )

    @property
    def backend(self) -> str:
        """'onnx' (ONNX Runtime) or 'torch' (PyTorch eager): what `logits` runs on."""
        return "onnx" if self.session is not None else "torch"

    @property
    def precision(self) -> str:
        """'int8' when `logits` runs an int8 export (`digitlab export --int8`), else 'float32'."""
        return "float32" if self.session is None else self.session.precision

    @property
    def parameter_count(self) -> int | None:
        """The network's parameters (as count_parameters counts them); None for an .onnx file
        whose metadata does not say."""
        return count_parameters(self.module) if self.module is not None else self._parameters

    def logits(self, images) -> np.ndarray:
        """(N, K) float32 logits for a batch of images, (H, W), (N, H, W) or (N, C, H, W): integers
        0..255 or floats in [0, 1], ink bright (preprocess.to_uint8_images). The one inference entry,
        on `backend`."""
        x = to_uint8_images(images, self.image_shape)
        if self.session is not None:
            return self.session.logits(x)
        return predict_logits(self.module, torch.from_numpy(x)).numpy()

    def predict_proba(self, images) -> np.ndarray:
        """(N, K) class probabilities for a batch of images.

        Raises CheckpointError when they are not finite numbers (a model whose weights hold NaN,
        say): NaN is not JSON, and the service and `--json` would emit it.
        """
        logits = torch.from_numpy(self.logits(images))
        probabilities = torch.softmax(logits / self.temperature, 1).numpy()
        if not np.isfinite(probabilities).all():
            bad = int((~np.isfinite(probabilities).all(1)).sum())
            raise CheckpointError(
                f"{self} computes NaN or infinite probabilities for {bad} of {len(probabilities)} "
                "image(s): its weights are damaged (NaN or enormous); retrain or re-export it"
            )
        return probabilities

    def predict(self, images) -> np.ndarray:
        """(N,) predicted class indices (for digits, the digit itself)."""
        return self.predict_proba(images).argmax(1)


class LineModel:
    """A trained line recognizer ready to read lines: each line input (preprocess.line_input: float32
    (LINE_HEIGHT, W), W a multiple of 4) -> its frames' class probabilities, (W / 4, K), the blank
    last. Decoding them into digits, boxes and confidences is read/sequence.py's.

    Runs on ONNX Runtime (`session`, an in-memory export) on the CPU, else PyTorch (`module`)."""

    task = "lines"

    def __init__(self, module: nn.Module | None, config: dict, path: Path | None = None, *, session=None):
        self.module = module.eval() if module is not None else None
        self.session = session  # onnx_runtime.LineSession or None
        self.config = config
        self.path = path
        self.classes: tuple[str, ...] = tuple(config["dataset"]["classes"])[:-1]  # the digits; the blank is last
        self.image_shape: tuple[int, int, int] = tuple(config["dataset"]["image_shape"])

    def __repr__(self) -> str:
        return f"LineModel({self.config['recipe']['name']!r}, path={self.path}, backend={self.backend!r})"

    @property
    def backend(self) -> str:
        return "onnx" if self.session is not None else "torch"

    @property
    def parameter_count(self) -> int | None:
        return count_parameters(self.module) if self.module is not None else None

    def frame_probabilities(self, inputs: list[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
        """Each line's frames' probabilities (W_i / 4, K), lines of similar width run together."""
        order = sorted(range(len(inputs)), key=lambda i: inputs[i].shape[1])
        out: list[np.ndarray] = [np.zeros((0, len(self.classes) + 1), np.float32)] * len(inputs)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            widest = max(inputs[i].shape[1] for i in chunk)
            batch = np.zeros((len(chunk), 1, LINE_HEIGHT, widest), np.float32)
            for k, i in enumerate(chunk):
                batch[k, 0, :, : inputs[i].shape[1]] = inputs[i]
            if self.session is not None:
                logits = self.session.frames(batch)
            else:
                with torch.no_grad():
                    device = next(self.module.parameters()).device
                    logits = self.module(torch.from_numpy(batch).to(device)).float().cpu().numpy()
            logits = logits - logits.max(2, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(2, keepdims=True)
            if not np.isfinite(probs).all():
                raise CheckpointError(f"{self} computes NaN or infinite probabilities: its weights are damaged")
            for k, i in enumerate(chunk):
                out[i] = probs[k, : inputs[i].shape[1] // LINE_STRIDE]
        return out


BUNDLED_LINE_MODEL = BUNDLED_LINE_RUN


BUNDLED_MODEL = BUNDLED_RUN
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "float32", "int8")
log = logging.getLogger(__name__)


def load_model(
    run: str | Path | Run | None = None, device: str | None = None, backend: str = "auto", precision: str = "auto"
) -> Model | LineModel:
    """Load a run directory (config.json + model.safetensors), or an .onnx file from `export_onnx`
    (`digitlab export`), as a `Model`.

    run: a path, or the name of a model shipped in the package (checkpoint.named_models:
    "digitnet-real", "linenet", ...; a path that exists wins over a name). With no run, or
    "bundled", the bundled default model (recipe digitnet-real, trained by digitlab itself; see
    weights/README.md) that works offline with no training.

    backend: 'auto' (the default) runs a model on the CPU with ONNX Runtime -- a run directory
    is exported to ONNX in memory at load (0.04 s; a process's first export also imports onnx,
    which torch's exporter needs, and ONNX Runtime: 0.7 s), and should that fail it runs on
    PyTorch, with a logged warning -- and a model on a GPU with PyTorch; 'torch': PyTorch eager only;
    'onnx': ONNX Runtime or an error. An .onnx file runs on ONNX Runtime only. ONNX Runtime
    uses torch.get_num_threads() threads.

    precision: for a run directory on ONNX Runtime. 'auto' (the default) runs the run's int8 export
    (INT8, `digitlab export RUN --int8 --onnx RUN/model-int8.onnx`: verified when it was written)
    where the run holds one made from its present weights, else float32; 'float32' never the int8
    file; 'int8' that file or an error. The bundled model ships one (weights/README.md: the same
    class as float32 on 99.98% of the MNIST test set, the same figures on every `bench read` set,
    about twice the images per second).

    A run of a line recipe (a model that reads lines, models.TASKS: `linenet`) loads as a `LineModel`.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if isinstance(run, Run):
        run = run.path
    path = resolve_model(BUNDLED if run is None else run)
    if path == BUNDLED_MODEL and not (path / WEIGHTS).is_file():
        raise CheckpointError(
            f"the bundled model is missing from this installation ({BUNDLED_MODEL}); pass a run directory"
        )
    if path.is_file():
        refuse_pickle(path)
        return _load_onnx(path, device, backend)
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a run directory (expected a folder with {CONFIG} and {WEIGHTS}) nor an .onnx file"
        )
    config = read_json(path / CONFIG)
    # Checked against the weights' header before it is built: the files are untrusted (model_files.py).
    module = build_network(config, path / CONFIG, path / WEIGHTS)
    lines = model_task(config["model"]["name"]) == "lines"
    model = LineModel(module, config, path) if lines else Model(module, config, path)
    device = pick_device(device)
    module.to(device)
    if backend == "onnx" and device.type != "cpu":
        raise ConfigError(f"backend 'onnx' runs on the CPU; {device} was asked for (use backend 'torch' or 'auto')")
    if precision == "int8" and (lines or backend == "torch" or device.type != "cpu"):
        raise ConfigError("precision 'int8' is for digit models on ONNX Runtime on the CPU (backend 'auto' or 'onnx')")
    if backend != "torch" and device.type == "cpu":
        int8 = None if lines or precision == "float32" else _int8_session(path, config, required=precision == "int8")
        try:
            if lines:
                model.session = line_session_for(module, LINE_HEIGHT)
            elif int8 is not None:
                model.session = int8
            else:
                model.session = session_for(module, model.image_shape)
        except Exception as err:  # noqa: BLE001 -- 'auto' falls back to PyTorch whatever went wrong
            if backend == "onnx":
                raise ExportError(f"{path} could not run on ONNX Runtime: {type(err).__name__}: {err}") from err
            log.warning(
                "digitlab: %s runs on PyTorch: ONNX Runtime could not take it (%s: %s)", path, type(err).__name__, err
            )
    return model


def _int8_session(path: Path, config: dict, required: bool):
    """The run's INT8 export as a session, or None where the run has none, or one that is damaged or
    made from other weights (then a warning says so); with `required`, a CheckpointError instead."""
    file = path / INT8
    if not file.is_file():
        if required:
            raise CheckpointError(
                f"{path} has no int8 export ({INT8}); write one with `digitlab export {path} --int8 --onnx {file}`"
            )
        return None
    session, problem = None, None
    try:
        session, exported, _ = open_onnx(file)
        export = exported.get("export") if isinstance(exported.get("export"), dict) else {}
        if export.get("precision") != "int8":
            problem = "it is not an int8 export"
        elif exported.get("dataset") != config.get("dataset") or exported.get("model") != config.get("model"):
            problem = "it was exported from another model"
        elif export.get("weights_sha256") != weights_digest(path / WEIGHTS):
            problem = f"it was exported from other weights than the run's {WEIGHTS} (export it again)"
    except CheckpointError as err:
        problem = f"it cannot be run: {err.summary}"
    if problem is None:
        return session
    if required:
        raise CheckpointError(f"{file} cannot stand in for the run's weights: {problem}")
    log.warning("digitlab: %s runs in float32: %s %s", path, file.name, problem)
    return None


def _load_onnx(path: Path, device: str | None, backend: str) -> Model:
    """An .onnx file from `export_onnx` as a Model on ONNX Runtime (its config from its metadata)."""
    if backend == "torch":
        raise ConfigError(
            f"{path} is an ONNX model: it runs on ONNX Runtime only (backend 'auto' or 'onnx'); "
            "for PyTorch load the run directory it was exported from"
        )
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"{path} is an ONNX model: it runs on the CPU, not {device!r}")
    try:
        session, config, parameters = open_onnx(path)
    except CheckpointError as err:
        if path.suffix.lower() == ".onnx":
            raise
        raise CheckpointError(
            f"{path} is neither a run directory nor an .onnx file from `digitlab export`: {err}"
        ) from err
    return Model(None, config, path, session=session, parameters=parameters)


def load_line_model(run: str | Path | Run | None = None, device: str | None = None, backend: str = "auto") -> LineModel:
    """A line recognizer: a run directory of a line recipe, or None for the bundled one
    (weights/linenet, made by `digitlab train linenet`); ConfigError for a run of a digit model."""
    if run is None:
        if not (BUNDLED_LINE_MODEL / WEIGHTS).is_file():
            raise CheckpointError(f"the bundled line model is missing from this installation ({BUNDLED_LINE_MODEL})")
        run = BUNDLED_LINE_MODEL
    model = load_model(run, device, backend)
    if not isinstance(model, LineModel):
        raise ConfigError(f"{run} is a model of single digits, not a line recognizer (a run of `linenet`)")
    return model
