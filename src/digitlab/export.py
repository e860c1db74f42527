"""ONNX: a model as one self-contained .onnx file, and ONNX Runtime as the inference path.

    from digitlab.export import export_onnx
    export_onnx(None, "digitnet-pen.onnx")             # the bundled model (or a run directory, a Model)
    model = digitlab.load_model("digitnet-pen.onnx")    # classes, image shape, temperature: from the file

The graph takes the images as the project keeps them: "images", uint8 (N, C, H, W), ink bright,
any batch size; it scales them to [0, 1] itself and runs the network (whose normalisation is its
own) to "logits", float32 (N, K). The run's config.json travels in the file's metadata_props
("digitlab.config"), so a loaded file knows its recipe, classes, image shape and calibration
temperature; "digitlab.parameters" holds the network's parameter count and
"digitlab.verification" what `verify_onnx` measured before the file was written.

Why ONNX Runtime (`digitlab bench infer` on 2 Zen 4 cores, the bundled digitnet-pen, BENCHMARKS.md):
11,590 images/s at batch 1024 and 0.146 ms p50 for one image, against PyTorch eager's 6,229
images/s and 0.415 ms -- with the same class on all 10,000 MNIST test images and logits within
2.4e-6. So `load_model` runs a run directory on ONNX Runtime through an in-memory export (the
TorchScript-based exporter; the torch.export-based one took 2.8 s against its 0.24 s when
measured, and is the fallback only).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import CheckpointError, ConfigError, DataError, ExportError
from .evaluate import predict_logits
from .files import atomic_write
from .models import count_parameters

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "logits"
CONFIG_KEY = "digitlab.config"
PARAMETERS_KEY = "digitlab.parameters"
VERIFICATION_KEY = "digitlab.verification"
SAME_CLASS_MIN = 0.999  # an export must give PyTorch's class on at least this share of the test set
MAX_LOGIT_DIFF = 1e-4  # ... and logits within this of PyTorch's (float32 reorderings give ~1e-6)
RUN_BATCH = 1024  # images per ONNX Runtime call: the first conv's output is ~100 MB at this size


class UInt8Images(nn.Module):
    """A network behind the input the project's images come as: uint8 0..255 -> x / 255 -> logits.

    The same scaling as `predict_logits`, inside the graph, so that callers hand over a quarter
    of the bytes of a float copy and never scale images themselves.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) uint8 -> (N, K) float32
        return self.network(images.float() / 255).float()


# --- torch -> ONNX ---------------------------------------------------------------------------------


def onnx_bytes(network: nn.Module, image_shape: tuple[int, int, int]) -> tuple[bytes, str]:
    """The network as a serialised ONNX model with a dynamic batch (no digitlab metadata yet),
    and the name of the exporter that made it: 'torchscript', else 'dynamo' if that one raised."""
    if any(t.device.type != "cpu" for t in (*network.parameters(), *network.buffers())):
        network = copy.deepcopy(network).cpu()
    wrapper = UInt8Images(network)
    modes = [(module, module.training) for module in wrapper.modules()]
    wrapper.eval()
    example = (torch.zeros(2, *image_shape, dtype=torch.uint8),)
    names = dict(input_names=[INPUT], output_names=[OUTPUT])
    try:
        try:
            buffer = io.BytesIO()
            with warnings.catch_warnings():  # torch warns that this exporter is deprecated; it is 12x faster
                warnings.simplefilter("ignore", DeprecationWarning)
                # ... and that tensors read as Python numbers (opencv-mlp's alpha, beta) become constants:
                # they are buffers fixed for the exported weights, so constants are right
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(wrapper, example, buffer, dynamo=False, **names,
                                  dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
            return buffer.getvalue(), "torchscript"
        except Exception as err:  # noqa: BLE001 -- any failure of the old exporter: try the new one
            log.warning("the TorchScript-based ONNX exporter failed (%s: %s); trying torch.export's",
                        type(err).__name__, err)
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(wrapper, example, dynamo=True, **names, dynamic_shapes=({0: batch},),
                                    verbose=False)
        return program.model_proto.SerializeToString(), "dynamo"
    finally:
        for module, training in modes:
            module.training = training


def with_metadata(model: bytes, entries: dict[str, str]) -> bytes:
    """The ONNX model with `entries` set in its metadata_props (replacing those keys, keeping others)."""
    import onnx

    proto = onnx.load_from_string(model)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


# --- ONNX Runtime --------------------------------------------------------------------------------


class OnnxSession:
    """An ONNX Runtime session (CPU) over a digitlab graph: uint8 (N, C, H, W) -> float32 logits (N, K).

    threads: ONNX Runtime's intra-op threads (default: torch.get_num_threads(), which
    `digitlab serve --threads` and `bench --threads` set). Safe to call from several threads.
    """

    def __init__(self, model: bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # the graph is one chain: nothing runs beside anything
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only, not notes on its graph optimisations
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def logits(self, images: np.ndarray, batch_size: int = RUN_BATCH) -> np.ndarray:
        """(N, K) float32 logits of (N, C, H, W) uint8 images, `batch_size` at a time."""
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8:
            raise ConfigError(f"the ONNX model takes uint8 images (0..255), got {images.dtype}")
        return np.concatenate([self.session.run([OUTPUT], {INPUT: images[i:i + batch_size]})[0]
                               for i in range(0, max(len(images), 1), batch_size)])

    def check_signature(self, image_shape: tuple[int, ...], num_classes: int, name: str) -> None:
        """Refuse a graph whose input or output is not what digitlab's export writes."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        want_in = f'one input "{INPUT}", uint8 (batch, {", ".join(map(str, image_shape))})'
        want_out = f'one output "{OUTPUT}", float (batch, {num_classes})'
        if (len(inputs) != 1 or inputs[0].name != INPUT or inputs[0].type != "tensor(uint8)"
                or list(inputs[0].shape[1:]) != list(image_shape) or len(inputs[0].shape) != 4):
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise CheckpointError(f"{name} has input(s) {got}; expected {want_in}")
        if (len(outputs) != 1 or outputs[0].name != OUTPUT or outputs[0].type != "tensor(float)"
                or len(outputs[0].shape) != 2 or outputs[0].shape[1] != num_classes):
            got = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
            raise CheckpointError(f"{name} has output(s) {got}; expected {want_out}")


def open_onnx(source: str | Path | bytes, threads: int | None = None) -> tuple[OnnxSession, dict, int | None]:
    """A digitlab .onnx file (or its bytes) as (session, the run's config, parameter count or None).

    A file that is not ONNX, is damaged, lacks digitlab's metadata or holds metadata that is not
    what digitlab writes, has another signature, or reads external data, uses operators other than
    those digitlab's export writes, or holds a tensor of unbounded or enormous shape
    (model_files.check_onnx) is refused with a CheckpointError that says so. All but the
    signature are checked before ONNX Runtime creates a session (which can allocate).
    """
    from .checkpoint import loads_json
    from .model_files import check_config, check_onnx

    name = "the ONNX model" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as err:
            raise CheckpointError(f"cannot read {source}: {err.strerror or err}") from err
    metadata = check_onnx(data, name)  # graph and metadata, before ONNX Runtime sees the file
    text = metadata.get(CONFIG_KEY)
    if text is None:
        raise CheckpointError(f"{name} is an ONNX model without digitlab's metadata ({CONFIG_KEY!r}): only files "
                              "written by `digitlab export` know their classes, image shape and calibration")
    config = loads_json(text, f"{name}'s {CONFIG_KEY!r}")
    check_config(config, f"{name}'s {CONFIG_KEY!r}")
    try:
        session = OnnxSession(data, threads)
    except ImportError as err:
        raise CheckpointError(f"loading {name} needs ONNX Runtime: pip install onnxruntime ({err})") from err
    except Exception as err:  # noqa: BLE001 -- ONNX Runtime's own errors (InvalidProtobuf, Fail, ...)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise CheckpointError(f"{name} is not a valid ONNX model (damaged, or not ONNX at all): {reason}") from err
    session.check_signature(tuple(config["dataset"]["image_shape"]), len(config["dataset"]["classes"]), name)
    parameters = metadata.get(PARAMETERS_KEY)  # check_onnx made sure it is a decimal count
    return session, config, int(parameters) if parameters else None


def session_for(network: nn.Module, image_shape: tuple[int, int, int], threads: int | None = None) -> OnnxSession:
    """An ONNX Runtime session computing what `network` computes, exported in memory (~0.25 s).

    Checked on a few random images before it is trusted: same class, logits within tolerance.
    """
    model, _ = onnx_bytes(network, image_shape)
    session = OnnxSession(model, threads)
    probe = torch.randint(0, 256, (8, *image_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = predict_logits(network, probe).numpy()
    got = session.logits(probe.numpy())
    diff = float(np.abs(got - expected).max())
    if diff > MAX_LOGIT_DIFF * max(1.0, float(np.abs(expected).max())) or (got.argmax(1) != expected.argmax(1)).any():
        raise ExportError(f"the ONNX export differs from PyTorch on random images (max |logit difference| {diff:.3g})")
    return session


# --- export and verification -----------------------------------------------------------------------


@dataclass
class Verification:
    """An ONNX model against PyTorch on a labelled set: the share of images where both give the
    same class, the largest |logit difference|, and the ONNX model's own accuracy."""

    dataset: str
    split: str
    n: int
    same_class: float  # 0..1
    max_logit_diff: float
    accuracy: float  # 0..1, ONNX Runtime's predictions against the labels

    @property
    def passed(self) -> bool:
        return self.same_class >= SAME_CLASS_MIN and self.max_logit_diff <= MAX_LOGIT_DIFF

    def __str__(self) -> str:
        return (f"same class as PyTorch on {self.same_class * 100:.2f}% of {self.n:,} {self.dataset} {self.split} "
                f"images (>= {SAME_CLASS_MIN * 100:g}% needed), max |logit difference| {self.max_logit_diff:.2g} "
                f"(<= {MAX_LOGIT_DIFF:g}); accuracy {self.accuracy * 100:.2f}%")


@dataclass
class OnnxExport:
    """What `export_onnx` wrote."""

    path: Path
    size: int  # bytes
    exporter: str  # 'torchscript' or 'dynamo'
    parameters: int
    verification: Verification | None  # None when exported without verifying


def verify_onnx(onnx_model: str | Path | bytes, model=None, *, data_dir=None, dataset=None,
                split: str = "test") -> Verification:
    """Run an exported model with ONNX Runtime against PyTorch on its dataset's `split`.

    onnx_model: a .onnx file written by `export_onnx` (or its bytes); model: the PyTorch
    reference -- a Model, a run directory or None (the bundled model); dataset: a loaded
    Dataset, else the one named in the model's config is loaded (from data_dir). Returns the
    figures; whether they pass is `Verification.passed` (export_onnx refuses a failing one).
    """
    from .api import Model, load_dataset, load_model

    reference = model if isinstance(model, Model) else load_model(model, backend="torch")
    if reference.module is None:
        raise ConfigError(f"the reference for verifying an ONNX model must be a PyTorch model, not {reference}")
    session, config, _ = open_onnx(onnx_model)
    if tuple(config["dataset"]["image_shape"]) != reference.image_shape:
        raise ConfigError(f"the ONNX model takes {tuple(config['dataset']['image_shape'])} images, "
                          f"the PyTorch model {reference.image_shape}")
    if dataset is None:
        dataset = load_dataset(reference.config["dataset"]["name"], data_dir=data_dir, progress=False)
    images, labels = dataset.split(split)
    expected = predict_logits(reference.module, images).numpy()
    got = session.logits(images.numpy())
    return Verification(
        dataset=dataset.name, split=split, n=len(labels),
        same_class=float((got.argmax(1) == expected.argmax(1)).mean()),
        max_logit_diff=float(np.abs(got - expected).max()),
        accuracy=float((got.argmax(1) == labels.numpy()).mean()))


def export_onnx(model_or_run=None, path: str | Path = "model.onnx", *, verify: bool = True, data_dir=None,
                dataset=None) -> OnnxExport:
    """Write a model as a self-contained .onnx file, whole or not at all.

    model_or_run: a Model, a run directory, or None for the bundled model. With `verify` (the
    default) the export is first run with ONNX Runtime on the test set of the model's dataset:
    unless it gives PyTorch's class on >= 99.9% of the images with logits within 1e-4, nothing
    is written and ExportError says why. Returns what was written, with the verification.
    """
    from .api import Model, load_model

    model = model_or_run if isinstance(model_or_run, Model) else load_model(model_or_run, backend="torch")
    if model.module is None:
        raise ExportError(f"{model.path} is an ONNX model already; export the run directory it came from")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give the .onnx file to write, e.g. {path / 'model.onnx'}")
    if any(folder.exists() and not folder.is_dir() for folder in path.parents):
        raise ExportError(f"cannot write {path}: {next(f for f in path.parents if f.exists())} is a file, not a folder")
    parameters = count_parameters(model.module)
    try:
        raw, exporter = onnx_bytes(model.module, model.image_shape)
    except Exception as err:  # noqa: BLE001 -- both exporters failed: say so, without a traceback
        raise ExportError(f"{model} could not be exported to ONNX: {type(err).__name__}: {err}") from err
    config = {**model.config, "export": {"format": "onnx", "exporter": exporter, "digitlab_version": __version__,
                                         "torch_version": torch.__version__,
                                         "source": None if model.path is None else str(model.path)}}
    metrics = Path(model.path) / "metrics.json" if model.path is not None else None
    if "evaluation" not in config and metrics is not None and metrics.is_file():
        from .checkpoint import read_json

        # what the run's evaluation measured, as /api/models shows it (a diverged run's loss is NaN)
        measured = read_json(metrics, allow_nan=True)
        config["evaluation"] = {key: measured.get(key) for key in ("dataset", "split", "n", "accuracy")}
    data = with_metadata(raw, {CONFIG_KEY: json.dumps(config), PARAMETERS_KEY: str(parameters)})
    verification = None
    if verify:
        try:
            verification = verify_onnx(data, model, data_dir=data_dir, dataset=dataset)
        except DataError as err:
            raise ExportError(f"cannot verify the export without the {model.config['dataset']['name']} test set: "
                              f"{err} (or export without verifying: --no-verify)") from err
        if not verification.passed:
            raise ExportError(f"the ONNX export of {model} does not compute what PyTorch computes: {verification}; "
                              f"{path} was not written")
        data = with_metadata(data, {VERIFICATION_KEY: json.dumps(asdict(verification))})
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err}") from err
    return OnnxExport(path=path, size=len(data), exporter=exporter, parameters=parameters, verification=verification)
