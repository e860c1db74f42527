"""ONNX in memory and ONNX Runtime: the graph digitlab's models become, and the session that runs it.

The graph takes the images as the project keeps them: "images" (INPUT), uint8 (N, C, H, W), ink
bright, any batch size; it scales them to [0, 1] itself and runs the network (whose normalisation is
its own) to "logits" (OUTPUT), float32 (N, K). A file written by `digitlab export` also carries, in
its metadata_props, the run's config.json (CONFIG_KEY), the network's parameter count
(PARAMETERS_KEY) and what export.verify_onnx measured (VERIFICATION_KEY).

Why ONNX Runtime (`digitlab bench infer` on 2 Zen 4 cores, the bundled digitnet-pen, BENCHMARKS.md):
11,590 images/s at batch 1024 and 0.146 ms p50 for one image, against PyTorch eager's 6,229
images/s and 0.415 ms -- with the same class on all 10,000 MNIST test images and logits within
2.4e-6. So `inference.load_model` runs a run directory on ONNX Runtime through `session_for`, an
in-memory export (the TorchScript-based exporter; the torch.export-based one took 2.8 s against its
0.24 s when measured, and is the fallback only).

Below model_files.py (which checks a file against these keys before `OnnxSession` sees it) and
export.py (which writes the files); onnx and onnxruntime are imported only by the functions that use
them, for start-up time.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, ConfigError, ExportError
from .evaluate import predict_logits
from .models import evaluating

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "logits"
CONFIG_KEY = "digitlab.config"
PARAMETERS_KEY = "digitlab.parameters"
VERIFICATION_KEY = "digitlab.verification"
METADATA_KEYS = (CONFIG_KEY, PARAMETERS_KEY, VERIFICATION_KEY)  # all the metadata digitlab writes
MAX_LOGIT_DIFF = 1e-4  # an export's logits lie within this of PyTorch's (float32 reorderings give ~1e-6)
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


# --- torch -> ONNX, in memory ----------------------------------------------------------------------


def folded(network: nn.Module) -> nn.Module:
    """The same function with every batch norm folded into the convolution before it: a copy,
    in eval mode (the folding uses the running statistics), or `network` itself where nothing folds.

    Only a flat nn.Sequential is rewritten (digitnet, keras-cnn); other networks are returned as
    they are. Conv -> BN becomes one Conv with a bias. digitnet's stages are Conv -> MaxPool -> BN
    -> ReLU: a batch norm whose every scale is positive commutes with the max (max(a x + b) =
    a max(x) + b for a > 0), and ReLU with it too, so the stage becomes Conv -> ReLU -> MaxPool,
    which ONNX Runtime fuses into one convolution kernel and a pool; a negative scale leaves that
    stage as it is. Measured on the bundled digitnet-real (`digitlab bench infer`, 2-core EPYC): see
    BENCHMARKS.md "Inference speed". Logits move by float rounding only (1.4e-6 on the MNIST test).
    """
    if not isinstance(network, nn.Sequential) or not any(isinstance(m, nn.BatchNorm2d) for m in network):
        return network
    layers = list(network)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        conv = layers[i]
        pool = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], nn.MaxPool2d) else None
        after = i + 1 + (pool is not None)
        norm = layers[after] if after < len(layers) else None
        if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats):
            out.append(copy.deepcopy(conv))
            i += 1
            continue
        scale = (norm.weight if norm.affine else torch.ones_like(norm.running_var)).detach() / torch.sqrt(
            norm.running_var + norm.eps
        )
        if pool is not None and not bool((scale > 0).all()):
            out.append(copy.deepcopy(conv))
            i += 1
            continue
        shift = norm.bias.detach() if norm.affine else torch.zeros_like(scale)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
        )
        with torch.no_grad():
            fused.weight.copy_(conv.weight.detach() * scale.view(-1, *[1] * (conv.weight.dim() - 1)))
            fused.bias.copy_((bias - norm.running_mean) * scale + shift)
        out.append(fused)
        i = after + 1
        if pool is not None and i < len(layers) and isinstance(layers[i], nn.ReLU):
            out.append(nn.ReLU())
            i += 1
        if pool is not None:
            out.append(copy.deepcopy(pool))
    return nn.Sequential(*out).eval()


def onnx_bytes(network: nn.Module, image_shape: tuple[int, int, int], *, fold: bool = True) -> tuple[bytes, str]:
    """The network as a serialised ONNX model with a dynamic batch (no digitlab metadata yet),
    and the name of the exporter that made it: 'torchscript', else 'dynamo' if that one raised.
    Batch norms are folded into their convolutions first (`folded`) unless not `fold` (which
    `digitlab bench infer` measures as "ONNX Runtime, unfolded")."""
    if any(t.device.type != "cpu" for t in (*network.parameters(), *network.buffers())):
        network = copy.deepcopy(network).cpu()
    if fold:
        with evaluating(network):
            network = folded(network)
    wrapper = UInt8Images(network)
    example = (torch.zeros(2, *image_shape, dtype=torch.uint8),)
    names = dict(input_names=[INPUT], output_names=[OUTPUT])
    with evaluating(wrapper):
        try:
            buffer = io.BytesIO()
            with warnings.catch_warnings():  # torch warns that this exporter is deprecated; it is 12x faster
                warnings.simplefilter("ignore", DeprecationWarning)
                # ... and that tensors read as Python numbers (opencv-mlp's alpha, beta) become constants:
                # they are buffers fixed for the exported weights, so constants are right
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # ... and that the pads of a shifted view (an ensemble's --shifts: a negative F.pad) are
                # sliced by a step of -1, which it does not fold: the graph is right, one node longer
                warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
                torch.onnx.export(
                    wrapper,
                    example,
                    buffer,
                    dynamo=False,
                    **names,
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                )
            return buffer.getvalue(), "torchscript"
        except Exception as err:  # noqa: BLE001 -- any failure of the old exporter: try the new one
            log.warning(
                "the TorchScript-based ONNX exporter failed (%s: %s); trying torch.export's", type(err).__name__, err
            )
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(wrapper, example, dynamo=True, **names, dynamic_shapes=({0: batch},), verbose=False)
        return program.model_proto.SerializeToString(), "dynamo"


def with_metadata(model: bytes, entries: dict[str, str]) -> bytes:
    """The ONNX model with `entries` set in its metadata_props (replacing those keys, keeping others)."""
    import onnx  # imported here: start-up time (0.8 s), only for writing metadata

    proto = onnx.load_from_string(model)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


# --- int8 ------------------------------------------------------------------------------------------

CALIBRATION_IMAGES = 2000  # training images whose activations set the int8 ranges
CALIBRATION_BATCH = 200


def quantize_int8(model: bytes, calibration: np.ndarray, *, float_first: bool = True) -> bytes:
    """The ONNX model (from `onnx_bytes`) with its convolutions and its last layer in int8: static
    quantisation (onnxruntime.quantization, QDQ format, weights per output channel, activation
    ranges from `calibration`, (N, C, H, W) uint8 training images -- never test images).

    The first convolution stays in float32 (unless not `float_first`, which `digitlab bench infer`
    measures as "int8, every convolution"): with one input channel it is 2% of digitnet-real's
    multiply-adds but took 26% of its int8 time (ONNX Runtime's int8 convolution has little to
    gain from a dot product one channel deep), and in float32 it costs a fraction of that.
    Measured on the bundled digitnet-real: BENCHMARKS.md "Inference speed". The quantised graph
    needs no metadata of its own; `with_metadata` adds digitlab's as for any export.
    """
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.ascontiguousarray(calibration)
    if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
        raise ConfigError(f"calibration images must be a non-empty uint8 (N, C, H, W) array, got {images.shape}")

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory(prefix="digitlab-int8-") as folder:
        plain, prepared, quantized = (Path(folder) / name for name in ("plain.onnx", "prepared.onnx", "int8.onnx"))
        plain.write_bytes(model)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)  # shapes inferred, graph tidied
        convolutions = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        logger = logging.getLogger()  # the quantiser logs a warning per 1-D weight it leaves per-tensor
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            quantize_static(
                str(prepared),
                str(quantized),
                Batches(),
                quant_format=QuantFormat.QDQ,  # ONNX Runtime's own advice for int8 on x86-64
                per_channel=True,
                nodes_to_exclude=convolutions[:1] if float_first else [],
            )
        finally:
            logger.setLevel(level)
        proto = onnx.load(str(quantized))
    # The quantiser declares Microsoft's and other opsets it may use; its QDQ graph uses only the
    # standard ones, and digitlab runs no file declaring others (model_files.check_onnx).
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [opset for opset in proto.opset_import if opset.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    del proto.metadata_props[:]  # the quantiser's notes to itself ("onnx.quant.pre_process"): digitlab writes its own
    return proto.SerializeToString()


# --- ONNX Runtime ---------------------------------------------------------------------------------


class OnnxSession:
    """An ONNX Runtime session (CPU) over a digitlab graph: uint8 (N, C, H, W) -> float32 logits (N, K).

    threads: ONNX Runtime's intra-op threads (default: torch.get_num_threads(), which
    `digitlab serve --threads` and `bench --threads` set). Safe to call from several threads.
    """

    def __init__(self, model: bytes, threads: int | None = None):
        import onnxruntime as ort  # imported here: start-up time, only where a model runs on it

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # the graph is one chain: nothing runs beside anything
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only, not notes on its graph optimisations
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = _precision(self.metadata)

    def logits(self, images: np.ndarray, batch_size: int = RUN_BATCH) -> np.ndarray:
        """(N, K) float32 logits of (N, C, H, W) uint8 images, `batch_size` at a time."""
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8:
            raise ConfigError(f"the ONNX model takes uint8 images (0..255), got {images.dtype}")
        return np.concatenate(
            [
                self.session.run([OUTPUT], {INPUT: images[i : i + batch_size]})[0]
                for i in range(0, max(len(images), 1), batch_size)
            ]
        )

    def check_signature(self, image_shape: tuple[int, ...], num_classes: int, name: str) -> None:
        """Refuse a graph whose input or output is not what digitlab's export writes."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        want_in = f'one input "{INPUT}", uint8 (batch, {", ".join(map(str, image_shape))})'
        want_out = f'one output "{OUTPUT}", float (batch, {num_classes})'
        if (
            len(inputs) != 1
            or inputs[0].name != INPUT
            or inputs[0].type != "tensor(uint8)"
            or list(inputs[0].shape[1:]) != list(image_shape)
            or len(inputs[0].shape) != 4
        ):
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise CheckpointError(f"{name} has input(s) {got}; expected {want_in}")
        if (
            len(outputs) != 1
            or outputs[0].name != OUTPUT
            or outputs[0].type != "tensor(float)"
            or len(outputs[0].shape) != 2
            or outputs[0].shape[1] != num_classes
        ):
            got = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
            raise CheckpointError(f"{name} has output(s) {got}; expected {want_out}")


def _precision(metadata: dict[str, str]) -> str:
    """'int8' for a graph whose digitlab config says `digitlab export --int8` wrote it, else 'float32'."""
    import json

    try:
        export = json.loads(metadata.get(CONFIG_KEY, "{}")).get("export")
    except (ValueError, AttributeError):  # model_files.open_onnx refuses such a file before it is run
        return "float32"
    return "int8" if isinstance(export, dict) and export.get("precision") == "int8" else "float32"


def session_for(
    network: nn.Module, image_shape: tuple[int, int, int], threads: int | None = None, *, fold: bool = True
) -> OnnxSession:
    """An ONNX Runtime session computing what `network` computes, exported in memory (0.04 s; 0.7 s
    for a process's first: torch's exporter imports onnx, 0.6 s, whose ml_dtypes is most of it).

    Checked on a few random images before it is trusted: same class, logits within tolerance.
    """
    model, _ = onnx_bytes(network, image_shape, fold=fold)
    session = OnnxSession(model, threads)
    probe = torch.randint(0, 256, (8, *image_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = predict_logits(network, probe).numpy()
    got = session.logits(probe.numpy())
    diff = float(np.abs(got - expected).max())
    if diff > MAX_LOGIT_DIFF * max(1.0, float(np.abs(expected).max())) or (got.argmax(1) != expected.argmax(1)).any():
        raise ExportError(f"the ONNX export differs from PyTorch on random images (max |logit difference| {diff:.3g})")
    return session


# --- line models: float lines of any width in, frames out ---------------------------------------------

LINES_INPUT, FRAMES_OUTPUT = "lines", "frames"


class FloatFrames(nn.Module):
    """A line network behind a float32 output: (N, 1, LINE_HEIGHT, W) in [0, 1] -> (N, W / 4, K)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        return self.network(lines).float()


def line_onnx_bytes(network: nn.Module, line_height: int) -> bytes:
    """A line network as a serialised ONNX model taking "lines", float32 (batch, 1, line_height,
    width), any batch and width (a multiple of 4), and giving "frames", float32 logits (batch,
    width / 4, K); the TorchScript-based exporter (its LSTM becomes ONNX's LSTM)."""
    if any(t.device.type != "cpu" for t in (*network.parameters(), *network.buffers())):
        network = copy.deepcopy(network).cpu()
    wrapper = FloatFrames(network)
    buffer = io.BytesIO()
    with evaluating(wrapper):
        with warnings.catch_warnings():  # deprecated, 12x faster than the new one (above); and an LSTM's
            warnings.simplefilter("ignore", DeprecationWarning)  # batch_first is only a note to the exporter
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                wrapper,
                (torch.zeros(2, 1, line_height, 64),),
                buffer,
                dynamo=False,
                input_names=[LINES_INPUT],
                output_names=[FRAMES_OUTPUT],
                dynamic_axes={LINES_INPUT: {0: "batch", 3: "width"}, FRAMES_OUTPUT: {0: "batch", 1: "frames"}},
            )
    return buffer.getvalue()


class LineSession:
    """An ONNX Runtime session over a line graph: float32 (N, 1, H, W) lines -> (N, W / 4, K) logits."""

    def __init__(self, model: bytes, threads: int | None = None):
        import onnxruntime as ort  # imported here: start-up time, as in OnnxSession

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def frames(self, lines: np.ndarray) -> np.ndarray:
        return self.session.run([FRAMES_OUTPUT], {LINES_INPUT: np.ascontiguousarray(lines, np.float32)})[0]


def line_session_for(network: nn.Module, line_height: int, threads: int | None = None) -> LineSession:
    """A LineSession computing what `network` computes, exported in memory and checked on random
    lines of two widths: the same best class in every frame, logits within tolerance."""
    session = LineSession(line_onnx_bytes(network, line_height), threads)
    generator = torch.Generator().manual_seed(0)
    with evaluating(network):
        for width in (64, 200):
            probe = torch.rand(3, 1, line_height, width, generator=generator)
            with torch.no_grad():
                expected = network(probe).float().numpy()
            got = session.frames(probe.numpy())
            diff = float(np.abs(got - expected).max())
            if (
                diff > MAX_LOGIT_DIFF * max(1.0, float(np.abs(expected).max()))
                or (got.argmax(2) != expected.argmax(2)).any()
            ):
                raise ExportError(
                    f"the ONNX export differs from PyTorch on random lines (max |logit difference| {diff:.3g})"
                )
    return session
