"""What `--model` accepts, checked before anything is built from it.

A model is either a run directory -- config.json (parsed as JSON) and model.safetensors (a JSON
header, then raw tensor bytes) -- or an .onnx file written by `digitlab export` (a protobuf that
ONNX Runtime interprets). None of these can run code when loaded. Pickles can (torch.save's
.pt/.pth files hold one, and unpickling calls whatever the file names), so digitlab never
unpickles: a pickle given as a model is named as one and refused. `build_network` builds a run
directory's network and `open_onnx` an .onnx file's ONNX Runtime session, each only once the checks
below have passed.

Every model file is untrusted input:
- config.json could describe an enormous network (widths of 10^6 would allocate terabytes), one
  of 20,000 layers (61 KB of JSON that took 56 s to build even on the meta device), one that does
  not take the images it names, or one with more outputs than classes. So the tensors its
  arguments imply are counted first (models.tensor_count) against the safetensors header's,
  then the network is built on the meta device (shapes only, no memory) and every tensor's shape
  compared with the header; only then is it built and filled, and run on an empty batch of its
  images (which allocates nothing) to check that it takes them and gives one output per class.
- an ONNX file could point at external data (any file on the machine, read into a tensor), use
  operators from other domains (custom kernels), carry metadata that ONNX Runtime acts on
  ("ort_config"), or hold operators that allocate what the graph's data says: ConstantOfShape
  of 250,000,000 (+187 bytes to a good export) made ONNX Runtime fold 1 GB of zeros while it
  created the session, peaking at 2.3 GB. So only the operators digitlab's export writes are
  accepted, and every tensor's shape is inferred and bounded, before ONNX Runtime sees the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .checkpoint import load_weights
from .errors import CheckpointError
from .files import loads_json
from .models import create_model_from_config, model_task, tensor_count
from .onnx_runtime import CONFIG_KEY, METADATA_KEYS, PARAMETERS_KEY, OnnxSession

# The first bytes of files that are pickles, or carry one.
PICKLE_SIGNATURES = {
    b"PK\x03\x04": "a zip archive, as torch.save writes (with a pickle inside)",
    b"\x93NUMPY": "a numpy .npy file (which may hold pickled objects)",
    **{b"\x80" + bytes([protocol]): f"a Python pickle (protocol {protocol})" for protocol in range(2, 6)},
}
MODEL_FORMS = "a run directory (config.json + model.safetensors) or an .onnx file from `digitlab export`"
ONNX_DOMAINS = ("", "ai.onnx")  # the standard operators: all that digitlab's export writes
# Every operator type the export of a registered model writes (each model, each activation, 28x28
# grey and 32x32 colour: tests/test_files_hostile.py checks that the list is whole). None of them
# sizes its output from data; their shapes all follow from the weights, the attributes and the
# input's shape, which shape inference bounds below.
ONNX_OPERATORS = frozenset(
    {
        "Add",
        "BatchNormalization",
        "Cast",
        "Clip",  # ensembles (models/ensemble.py): Softmax, Clip and Log average the members' probabilities
        "Constant",
        "Conv",
        "DequantizeLinear",  # int8 exports (onnx_runtime.quantize_int8): elementwise, the size of their input
        "Div",
        "Flatten",
        "Gemm",
        "Identity",
        "Log",
        "MaxPool",
        "Mul",
        "QuantizeLinear",
        "Relu",
        "Sigmoid",
        "Softmax",
        "Split",
        "Squeeze",
        "Sub",
        "Tanh",
    }
)
# Digitnet's export has 26 nodes and an mlp of the most layers MAX_TENSORS allows about 130.
MAX_ONNX_NODES = 1024
# Values in any one tensor of the graph for one image: digitnet's largest is 25,088 (32x28x28),
# keras-cnn's 21,632. Ten times digitnet's at RUN_BATCH = 1024 images is 1 GiB of float32.
MAX_TENSOR_VALUES = 1 << 18
# Tensors (parameters and buffers) in one network: digitnet has 22 (40 with two convolutions a stage),
# an mlp 2 per layer, an ensemble its members' (models/ensemble.py: at most 8 members). 512 lets an
# mlp have 255 layers, which is built on the meta device in 0.07 s (2 busy EPYC cores).
MAX_TENSORS = 512
# calibration.temperature: evaluate.fit_temperature searches [1/20, 20], which this holds 50 times
# over. Within it, logits / T stays finite in float32 for any logit below 3e35, so softmax never
# turns a temperature into NaN (1e-320 passed the old check and gave NaN to every probability).
TEMPERATURE_RANGE = (1e-3, 1e3)


def refuse_pickle(path: Path) -> None:
    """Raise CheckpointError, saying what the file is, when it is a pickle or carries one."""
    try:
        with open(path, "rb") as file:
            start = file.read(6)
    except OSError:
        return  # unreadable: the loader that opens it next says so
    for signature, kind in PICKLE_SIGNATURES.items():
        if start.startswith(signature):
            raise CheckpointError(
                f"{path} is {kind}: digitlab never loads pickles, because loading one can run "
                f"any code it names. A model is {MODEL_FORMS}."
            )


# --- run directories: config.json + model.safetensors ----------------------------------------------


def check_config(config, name: str) -> None:
    """Raise CheckpointError unless `config` has the fields a Model reads, of the right types."""
    try:
        recipe, model, dataset = config["recipe"]["name"], config["model"]["name"], config["dataset"]
        classes, image_shape = dataset["classes"], dataset["image_shape"]
        temperature = config.get("calibration", {}).get("temperature", 1.0)
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{name} lacks {err!r}: not a digitlab run configuration") from err
    problems = []
    if not (isinstance(recipe, str) and isinstance(model, str)):
        problems.append("recipe and model names must be strings")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        problems.append(f"dataset.classes must be a list of names, not {classes!r:.80}")
    if not (
        isinstance(image_shape, list) and len(image_shape) == 3 and all(type(d) is int and d > 0 for d in image_shape)
    ):
        problems.append(f"dataset.image_shape must be [C, H, W], positive integers, not {image_shape!r:.80}")
    low, high = TEMPERATURE_RANGE
    if not (type(temperature) in (int, float) and low <= temperature <= high):  # NaN fails both comparisons
        problems.append(
            f"calibration.temperature must be a positive number from {low:g} to {high:g}, not {temperature!r:.80}"
        )
    if problems:
        raise CheckpointError(f"{name} is not a valid digitlab run configuration: {'; '.join(problems)}")


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from a safetensors file's header (validated against the file's size;
    no tensor is read)."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as file:
            names = file.keys()
            if len(names) > MAX_TENSORS:
                raise CheckpointError(
                    f"{path} holds {len(names):,} tensors, more than the {MAX_TENSORS} of any network digitlab builds"
                )
            return {name: tuple(file.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err


def build_network(config: dict, config_path: Path, weights_path: Path) -> nn.Module:
    """The network `config` describes, filled with the weights at `weights_path`.

    Refused with a CheckpointError when the config is malformed, names a network that cannot be
    built, does not match the weights tensor for tensor (these before anything of the network's
    size is allocated), does not take its images, or gives another number of outputs than it has
    classes.
    """
    shapes = weight_shapes(weights_path)
    check_config(config, str(config_path))
    implied = tensor_count(config["model"])
    if implied is not None and implied > MAX_TENSORS:  # refused before anything is built: one layer took ~3 ms
        raise CheckpointError(
            f"{config_path} describes a network of {implied:,} tensors, more than the {MAX_TENSORS} "
            f"of any network digitlab builds ({weights_path} holds {len(shapes)})"
        )
    image_shape, classes = config["dataset"]["image_shape"], config["dataset"]["classes"]
    try:
        with torch.device("meta"):
            network = create_model_from_config(config["model"])
    except Exception as err:  # noqa: BLE001 -- the factories' arguments are untrusted: whatever they raise
        raise _unbuildable(config_path, image_shape, err) from err
    expected = {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()}
    if expected != shapes:
        raise CheckpointError(
            f"{weights_path} does not match the network in {config_path}: {_differences(expected, shapes)}"
        )
    # Shapes checked: the network is no larger than the weights file. Build it and fill it.
    network = create_model_from_config(config["model"])
    network.load_state_dict(load_weights(weights_path))
    outputs = (1, *_output_shape(network, image_shape, config_path))
    # A digit model gives one score per class; a line model one per class for each of its frames.
    wanted = "(1, frames, {k})" if model_task(config["model"]["name"]) == "lines" else "(1, {k})"
    if len(outputs) != wanted.count(",") + 1 or outputs[-1] != len(classes):
        raise CheckpointError(
            f"{config_path}: the network's output for one image has shape {outputs}, "
            f"not {wanted.format(k=len(classes))} for its {len(classes)} classes"
        )
    return network


def _output_shape(network: nn.Module, image_shape: list[int], config_path: Path) -> tuple[int, ...]:
    """The shape of the network's output for one image, less the batch: what it makes of a batch of
    no images of `image_shape`, run on the CPU.

    An empty batch allocates nothing however large the images or the layers (a 4096-channel
    convolution of 100,000 x 100,000 images: no memory, 0.5 ms), yet every layer checks the
    shapes it is given as for real images: on 729 pairs of built and given shapes of every model,
    it failed where one image on the meta device failed and gave the same shapes otherwise. The
    meta device is not used for this: its elementwise kernels are Python functions whose first
    call imports torch._dynamo (1 s of the 4 s `digitlab predict` took).
    """
    training = network.training
    try:
        with torch.no_grad():
            return tuple(network.eval()(torch.zeros(0, *image_shape)).shape[1:])
    except Exception as err:  # noqa: BLE001 -- the network is the untrusted config's: whatever it raises
        raise _unbuildable(config_path, image_shape, err) from err
    finally:
        network.train(training)


def _unbuildable(config_path: Path, image_shape: list[int], err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{config_path} describes no network digitlab can build for {image_shape} images: {type(err).__name__}: {err}"
    )


def _differences(expected: dict[str, tuple], found: dict[str, tuple], most: int = 3) -> str:
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    resized = [
        f"{name} {found[name]} (the config gives {expected[name]})"
        for name in expected
        if name in found and found[name] != expected[name]
    ]
    parts = [
        f"{label} {', '.join(names[:most])}{' ...' if len(names) > most else ''}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape of", resized))
        if names
    ]
    return "; ".join(parts)


# --- ONNX ---------------------------------------------------------------------------------------


def open_onnx(source: str | Path | bytes, threads: int | None = None) -> tuple[OnnxSession, dict, int | None]:
    """A digitlab .onnx file (or its bytes) as (session, the run's config, parameter count or None).

    A file that is not ONNX, is damaged, lacks digitlab's metadata or holds metadata that is not
    what digitlab writes, has another signature, or reads external data, uses operators other than
    those digitlab's export writes, or holds a tensor of unbounded or enormous shape
    (model_files.check_onnx) is refused with a CheckpointError that says so. All but the
    signature are checked before ONNX Runtime creates a session (which can allocate).
    """
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
        raise CheckpointError(
            f"{name} is an ONNX model without digitlab's metadata ({CONFIG_KEY!r}): only files "
            "written by `digitlab export` know their classes, image shape and calibration"
        )
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


def check_onnx(data: bytes, name: str) -> dict[str, str]:
    """The metadata of an ONNX model, once its protobuf is parsed and checked; only parses it.

    Raises CheckpointError when the model reads external data, uses operators outside the standard
    domain or other than those digitlab's export writes, carries metadata other than digitlab's or
    a parameter count that is not a number, or has a tensor whose shape cannot be inferred or
    holds more than MAX_TENSOR_VALUES values per image.
    """
    import onnx  # imported here: start-up time (0.8 s), only for .onnx files
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_from_string(data)  # the bytes only: external data is never fetched here
    except (DecodeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{name} is not a valid ONNX model (damaged, or not ONNX at all): {err}") from err
    if not proto.graph.node:  # an empty file parses as an empty model
        raise CheckpointError(f"{name} is not a valid ONNX model (damaged, or not ONNX at all): it has no graph")
    external = sorted(
        {
            _text(tensor.name) or "(unnamed)"
            for tensor in _tensors(proto)
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data)
        }
    )
    if external:
        raise CheckpointError(
            f"{name} refers to external data for {', '.join(external[:3])}: a model from `digitlab "
            "export` holds all its weights in the one file"
        )
    domains = {_text(opset.domain) for opset in proto.opset_import} | {_text(node.domain) for node in _nodes(proto)}
    foreign = sorted(domains - set(ONNX_DOMAINS))
    if foreign:
        raise CheckpointError(
            f"{name} uses operators from outside the standard ONNX domain ({', '.join(foreign)}): "
            "digitlab runs only the standard operators its export writes"
        )
    if proto.functions:
        names = ", ".join(_text(function.name) for function in proto.functions[:3])
        raise CheckpointError(f"{name} defines functions of its own ({names}): digitlab's export writes none")
    # proto2 strings that are not UTF-8 come back as bytes (found by `bench fuzz`: a TypeError in loads_json)
    if not all(isinstance(p.key, str) and isinstance(p.value, str) for p in proto.metadata_props):
        raise CheckpointError(f"{name} is damaged: its metadata is not UTF-8 text")
    extra = sorted({p.key for p in proto.metadata_props} - set(METADATA_KEYS))
    if extra:
        raise CheckpointError(
            f"{name} carries metadata digitlab does not write ({', '.join(extra[:5])}); "
            "ONNX Runtime can act on some keys (ort_config), so only digitlab's are accepted"
        )
    metadata = {p.key: p.value for p in proto.metadata_props}
    _refuse_line_models(metadata, name)
    parameters = metadata.get(PARAMETERS_KEY)
    # isdigit() alone takes "²", which int() refuses; 15 digits is a quadrillion parameters
    if parameters is not None and not (parameters.isascii() and parameters.isdigit() and len(parameters) <= 15):
        raise CheckpointError(f"{name}'s {PARAMETERS_KEY!r} is {parameters!r:.40}, not a count of parameters")
    _check_graph(proto, name)
    return metadata


def _refuse_line_models(metadata: dict[str, str], name: str) -> None:
    """A line recognizer's export (`digitlab export` of a linenet run) is for other runtimes: its graph
    sizes tensors from the width of the line it is given (Shape, Reshape, ConstantOfShape), which is
    what digitlab refuses to run from an untrusted file; digitlab loads line models from their run
    directory (config.json + model.safetensors)."""
    try:
        config = loads_json(metadata.get(CONFIG_KEY, "{}"), name)  # its depth checked before parsing
        model = config["model"]["name"] if isinstance(config, dict) else None
    except (CheckpointError, KeyError, TypeError):
        return  # open_onnx reports a damaged config in its own words
    if isinstance(model, str) and model_task(model) == "lines":
        raise CheckpointError(
            f"{name} is a line recognizer exported for other runtimes (ONNX Runtime, ...): digitlab loads "
            "line models from their run directory, since their graph sizes tensors from the line's width"
        )


def _check_graph(proto, name: str) -> None:
    """Refuse operators digitlab's export does not write, and tensors whose shapes, inferred from
    the graph alone, are unknown or larger than MAX_TENSOR_VALUES per image (batch counted as 1)."""
    import onnx  # imported here: start-up time, as in check_onnx

    nodes = list(_nodes(proto))
    if len(nodes) > MAX_ONNX_NODES:
        raise CheckpointError(
            f"{name} has {len(nodes):,} operators, more than the {MAX_ONNX_NODES} of any network digitlab exports"
        )
    foreign = sorted({_text(node.op_type) for node in nodes} - ONNX_OPERATORS)
    if foreign:
        raise CheckpointError(
            f"{name} uses operators digitlab's export never writes ({', '.join(foreign[:5])}): only "
            "those of digitlab's own networks are run, since others can allocate what their data asks"
        )
    inputs = proto.graph.input
    dims = inputs[0].type.tensor_type.shape.dim if len(inputs) == 1 else []
    batch = dims[0].dim_param if dims else ""
    del proto.graph.value_info[:]  # inferred afresh: a shape the file states is not evidence
    try:
        # Not strict: a node whose shape cannot be inferred is left unknown, and refused below by name.
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True)
    except (onnx.shape_inference.InferenceError, ValueError) as err:
        raise CheckpointError(f"{name} is not a valid ONNX model: {str(err)[:300]}") from err
    known = {value.name: value for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    for output in (output for node in inferred.graph.node for output in node.output if output):
        value = known.get(output)
        tensor = value.type.tensor_type if value is not None and value.type.HasField("tensor_type") else None
        sizes = (
            [
                d.dim_value if d.HasField("dim_value") else 1 if batch and d.dim_param == batch else None
                for d in tensor.shape.dim
            ]
            if tensor is not None and tensor.HasField("shape")
            else [None]
        )
        if None in sizes:
            raise CheckpointError(
                f"{name}: the shape of {output!r} does not follow from the graph's input and "
                "weights, as it does in every network digitlab exports"
            )
        if math.prod(sizes) > MAX_TENSOR_VALUES:
            raise CheckpointError(
                f"{name}: {output!r} holds {math.prod(sizes):,} values per image, more than the "
                f"{MAX_TENSOR_VALUES:,} digitlab allows (its own networks' largest: 25,088)"
            )


def _text(value: str | bytes) -> str:
    """A protobuf string field as text: proto2 gives one that is not UTF-8 as bytes."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _graphs(graph):
    """`graph` and every subgraph in its nodes' attributes (If, Loop, Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def _nodes(proto):
    for graph in _graphs(proto.graph):
        yield from graph.node


def _tensors(proto):
    """Every tensor the model stores: initializers (dense and sparse) and tensor attributes."""
    for graph in _graphs(proto.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                sparse_tensors = list(attribute.sparse_tensors)
                if attribute.HasField("sparse_tensor"):
                    sparse_tensors.append(attribute.sparse_tensor)
                for sparse in sparse_tensors:
                    yield from (sparse.values, sparse.indices)
