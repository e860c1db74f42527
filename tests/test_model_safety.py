"""`--model` takes a run directory (config.json + model.safetensors) or an .onnx file from `digitlab
export`, and nothing else: pickles, tampered files and configs that do not match their weights are
refused with a CheckpointError (exit 2), and loading never runs code from the file.

Every model here is made from the bundled one; a malicious pickle would create a marker file if it
were ever unpickled.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import struct
import time
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

import digitlab
from digitlab.api import BUNDLED_MODEL
from digitlab.cli import main
from digitlab.errors import CheckpointError
from digitlab.onnx_runtime import CONFIG_KEY, PARAMETERS_KEY, onnx_bytes, with_metadata
from memorytools import process_memory_mb


class Marker:
    """Unpickling this creates `path`: the proof that a loader executed code from a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "UNPICKLED"
    yield path
    assert not path.exists(), "a model file was unpickled"


def assert_refused(capsys, model: Path, digit_png: Path, message: str) -> None:
    """`load_model` raises CheckpointError, and `digitlab predict --model` exits 2 with one line,
    both saying `message` (a regex)."""
    with pytest.raises(CheckpointError, match=message):
        digitlab.load_model(model)
    code = main(["predict", str(digit_png), "--model", str(model)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("digitlab: error:") and re.search(message, err), err
    assert "Traceback" not in err and not out


def run_copy(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(BUNDLED_MODEL, run)
    return run


# --- pickles ------------------------------------------------------------------------------------------


def torch_saved(path: Path) -> Path:
    torch.save(load_file(str(BUNDLED_MODEL / "model.safetensors")), path)
    return path


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("model.pt", lambda path, marker: torch_saved(path), "zip archive, as torch.save writes"),
        ("evil.pkl", lambda path, marker: path.write_bytes(pickle.dumps(Marker(marker))), r"Python pickle \(protocol"),
        # protocol 0 has no signature to tell it by: refused as not ONNX, and never unpickled
        (
            "evil-v0.pkl",
            lambda path, marker: path.write_bytes(pickle.dumps(Marker(marker), protocol=0)),
            "neither a run directory nor an .onnx file",
        ),
    ],
)
def test_a_pickle_given_as_the_model_is_refused_unopened(capsys, tmp_path, marker, digit_png, name, write, message):
    write(tmp_path / name, marker)
    assert_refused(capsys, tmp_path / name, digit_png, message)


@pytest.mark.parametrize("content", ["torch.save", "malicious pickle"])
def test_a_run_directory_whose_weights_are_a_pickle_is_refused(capsys, tmp_path, marker, digit_png, content):
    run = run_copy(tmp_path)
    if content == "torch.save":
        torch_saved(run / "model.safetensors")
    else:
        (run / "model.safetensors").write_bytes(pickle.dumps(Marker(marker)))
    assert_refused(capsys, run, digit_png, "model.safetensors is a .*digitlab never loads pickles")


# --- tampered safetensors headers ------------------------------------------------------------------


def tampered(change) -> bytes:
    """The bundled weights file with its JSON header changed by `change(header dict)`."""
    data = (BUNDLED_MODEL / "model.safetensors").read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    change(header)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def set_field(tensor: str, field: str, value):
    return lambda header: header[tensor].__setitem__(field, value)


BAD_HEADERS = {
    "not-json": lambda data: data[:8] + b"!" + data[9:],
    "offsets-past-the-end": lambda data: tampered(set_field("9.weight", "data_offsets", [162504, 10**12])),
    "huge-header-length": lambda data: struct.pack("<Q", 2**62) + data[8:],
    "shape-not-the-byte-count": lambda data: tampered(set_field("9.weight", "shape", [256, 64, 3, 3])),
    "dtype-not-the-byte-count": lambda data: tampered(set_field("9.weight", "dtype", "F64")),
    "cut-short": lambda data: data[:-100],
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_tampered_safetensors_file_is_refused(capsys, tmp_path, digit_png, case):
    run = run_copy(tmp_path)
    weights = run / "model.safetensors"
    weights.write_bytes(BAD_HEADERS[case](weights.read_bytes()))
    assert_refused(capsys, run, digit_png, "model.safetensors is not a valid safetensors file")


# --- configs that do not match their weights ---------------------------------------------------------


def edit_config(run: Path, change) -> None:
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


CONFIG_CHANGES = {
    "wider-layer": (
        lambda c: c["model"]["args"].__setitem__("widths", [32, 64, 256]),
        r"does not match the network in .*shape of 15.weight \(128, 64, 3, 3\) \(the config gives \(256",
    ),
    "no-model-args": (lambda c: c["model"].pop("args"), "describes no network .*needs a 'name' and an 'args'"),
    "unknown-argument": (
        lambda c: c["model"]["args"].__setitem__("dilation", 2),
        "unexpected keyword argument 'dilation'",
    ),
    "unknown-model": (lambda c: c["model"].__setitem__("name", "resnet152"), "unknown model 'resnet152'"),
    "no-dataset": (lambda c: c.pop("dataset"), "lacks KeyError\\('dataset'\\)"),
    "two-classes": (lambda c: c["dataset"].__setitem__("classes", ["odd", "even"]), r"not \(1, 2\) for its 2 classes"),
    "colour-images": (
        lambda c: c["dataset"].__setitem__("image_shape", [3, 32, 32]),
        r"describes no network digitlab can build for \[3, 32, 32\] images",
    ),
    "zero-temperature": (lambda c: c.__setitem__("calibration", {"temperature": 0}), "temperature must be a positive"),
}


@pytest.mark.parametrize("case", list(CONFIG_CHANGES))
def test_a_config_that_does_not_match_the_weights_is_refused(capsys, tmp_path, digit_png, case):
    change, message = CONFIG_CHANGES[case]
    run = run_copy(tmp_path)
    edit_config(run, change)
    assert_refused(capsys, run, digit_png, message)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda state: state.pop("23.weight"), "missing 23.weight"),
        (lambda state: state.__setitem__("extra.weight", torch.zeros(3)), "unexpected extra.weight"),
    ],
)
def test_weights_with_a_tensor_missing_or_extra_are_refused(capsys, tmp_path, digit_png, change, message):
    run = run_copy(tmp_path)
    state = load_file(str(run / "model.safetensors"))
    change(state)
    save_file(state, str(run / "model.safetensors"))
    assert_refused(capsys, run, digit_png, f"does not match the network .*{message}")


def peak_rss_growth_mib(action) -> float:
    """How far this process's peak RSS rises above its RSS while `action()` runs (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = process_memory_mb(field="VmRSS")
    action()
    return process_memory_mb() - before


def test_a_config_describing_an_enormous_network_is_refused_at_once_without_allocating(tmp_path, capsys, digit_png):
    """Widths of 10^6 would make 36 TB of 3x3 convolution weights; the network is built on the meta
    device and compared with the weights' header first, so nothing of that size is ever asked for."""
    run = run_copy(tmp_path)
    edit_config(run, lambda c: c["model"]["args"].__setitem__("widths", [10**6] * 3))

    def load():
        with pytest.raises(CheckpointError, match=r"shape of 1.weight \(32, 1, 5, 5\) \(the config gives \(1000000"):
            digitlab.load_model(run)

    started = time.perf_counter()
    growth = peak_rss_growth_mib(load)
    assert time.perf_counter() - started < 1.0
    assert growth < 50  # MiB; the first real layer alone would be 95 MiB
    assert_refused(capsys, run, digit_png, "does not match the network")


# --- ONNX files -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_proto() -> onnx.ModelProto:
    """The bundled model exported as `digitlab export` writes it (metadata included), unverified."""
    model = digitlab.load_model(backend="torch")
    raw, _ = onnx_bytes(model.module, model.image_shape)
    data = with_metadata(raw, {CONFIG_KEY: json.dumps(model.config), PARAMETERS_KEY: "113898"})
    return onnx.load_from_string(data)


def external_weights(proto: onnx.ModelProto) -> None:
    """The largest initializer read from a file elsewhere on the machine instead of the model."""
    tensor = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/hostname")


def custom_domain(proto: onnx.ModelProto) -> None:
    proto.graph.node[0].domain = "com.example.kernels"
    proto.opset_import.add(domain="com.example.kernels", version=1)


def ort_config(proto: onnx.ModelProto) -> None:
    proto.metadata_props.add(key="ort_config", value=json.dumps({"session_options": {"intra_op_num_threads": 64}}))


def local_function(proto: onnx.ModelProto) -> None:
    function = proto.functions.add()
    function.name, function.domain = "Relu2", ""


@pytest.mark.parametrize(
    "change, message",
    [
        (external_weights, "refers to external data"),
        (custom_domain, r"outside the standard ONNX domain \(com.example.kernels\)"),
        (ort_config, r"metadata digitlab does not write \(ort_config\)"),
        (local_function, r"defines functions of its own \(Relu2\)"),
    ],
)
def test_an_onnx_file_beyond_what_digitlab_export_writes_is_refused(
    capsys, tmp_path, onnx_proto, digit_png, change, message
):
    proto = onnx.ModelProto()
    proto.CopyFrom(onnx_proto)
    change(proto)
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    assert_refused(capsys, path, digit_png, message)


def test_the_unchanged_export_loads(tmp_path, onnx_proto, digit_png):
    """The checks above refuse only what they should: the same file untouched loads and predicts."""
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_proto.SerializeToString())
    model = digitlab.load_model(path)
    assert model.backend == "onnx" and digitlab.predict(digit_png, model)[0].digit == "7"


# --- no code path can unpickle ------------------------------------------------------------------------


def test_no_source_file_calls_a_pickle_loader():
    """A static guard: nothing in digitlab calls a loader that can unpickle."""
    loaders = re.compile(
        r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|joblib\.load|dill\.load|"
        r"np\.load\(|numpy\.load\(|torch\.jit\.load|marshal\.loads?\("
    )
    source = Path(digitlab.__file__).parent
    found = [
        f"{path.relative_to(source)}:{number}"
        for path in sorted(source.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if loaders.search(line)
    ]
    assert found == []
