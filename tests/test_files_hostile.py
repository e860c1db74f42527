"""Data files and model files built to exhaust memory or time, and malformed ones that used to end
in tracebacks (issue 18): each is refused with a DataError or CheckpointError -- `digitlab: error:`
and exit 2 from the CLI -- from what its headers say, before anything in proportion to their claims
is read, inflated, parsed or built.

Every hostile file is written here, in tmp_path, by streaming: a gzip bomb of 64 MiB of zeros is
64 KB on disk and never whole in memory. Where the old code would read a bomb, the test's own
bomb is small enough (at most ~200 MiB) that a regression fails the memory assertion instead of
hurting the machine; /dev/zero is read only in a child process with an address-space limit.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import load_file, save_file

import digitlab
from digitlab import files, model_files, models
from digitlab.api import BUNDLED_MODEL
from digitlab.bench.fuzz import bench_fuzz
from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.data.cifar import RECORD_BYTES, TEST_MEMBER, TRAIN_MEMBERS, read_cifar10_binary
from digitlab.data.idx import read_idx
from digitlab.errors import CheckpointError, DataError
from digitlab.files import read_json
from digitlab.models import MODELS, create_model, model_task
from digitlab.onnx_runtime import CONFIG_KEY, PARAMETERS_KEY, line_onnx_bytes, onnx_bytes, with_metadata
from memorytools import process_memory_mb

MIB = 1 << 20
# The limits as the messages state them (files.MAX_JSON_DEPTH, model_files.MAX_TENSORS), and the new
# functions reached through their modules: so that this file also runs, and fails, against the old code.
MAX_JSON_DEPTH, MAX_TENSORS = 32, 512


def peak_growth_mib(action) -> float:
    """How far this process's peak RSS rises above its RSS while `action()` runs (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = process_memory_mb(field="VmRSS")
    action()
    return process_memory_mb() - before


def refused_quickly(action, error, message: str, seconds: float = 2.0, mib: float = 24.0) -> None:
    """`action()` raises `error` matching `message`, within `seconds` and `mib` of peak RSS growth."""

    def run():
        with pytest.raises(error, match=message):
            action()

    started = time.perf_counter()
    growth = peak_growth_mib(run)
    assert time.perf_counter() - started < seconds
    assert growth < mib, f"peak RSS grew {growth:.0f} MiB"


def write_zeros(file, count: int, chunk: bytes = bytes(MIB)) -> None:
    for start in range(0, count, len(chunk)):
        file.write(chunk[: min(len(chunk), count - start)])


# --- IDX: gzip bombs behind headers that claim the world ------------------------------------------


def idx_bomb(path: Path, shape: tuple[int, ...], zeros: int = 64 * MIB) -> Path:
    """An IDX header announcing uint8 `shape`, then `zeros` zero bytes, gzipped as it is written."""
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape))
        write_zeros(file, zeros)
    return path


def mnist_folder(root: Path, train_images: Path | None = None) -> Path:
    """A data directory whose mnist/ holds the four file names; tiny valid files but for `train_images`."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    small = {
        "train-images-idx3-ubyte.gz": (3, 28, 28),
        "train-labels-idx1-ubyte.gz": (3,),
        "t10k-images-idx3-ubyte.gz": (3, 28, 28),
        "t10k-labels-idx1-ubyte.gz": (3,),
    }
    for name, shape in small.items():
        header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        (folder / name).write_bytes(gzip.compress(header + bytes(int(np.prod(shape)))))
    if train_images is not None:
        shutil.move(train_images, folder / "train-images-idx3-ubyte.gz")
    return root


@pytest.mark.parametrize(
    "shape, message",
    [
        # the file: 2 MB of gzip inflating to 2 GiB, which took 2.4 GB and 21 s to be called truncated
        (
            (2**31, 2**31, 1),
            r"expected uint8 \(N, 28, 28\) with at most 60,000 items, but the header announces uint8 "
            r"of shape \(2147483648, 2147483648, 1\)",
        ),
        ((10**6, 28, 28), "with at most 60,000 items"),
    ],
)
def test_an_mnist_gzip_bomb_is_refused_from_its_header(tmp_path, shape, message):
    data_dir = mnist_folder(tmp_path / "data", idx_bomb(tmp_path / "bomb.gz", shape))
    refused_quickly(
        lambda: load_dataset("mnist", data_dir=data_dir, download=False, progress=False), DataError, message
    )


def test_the_mnist_reader_still_reads_a_subset(tmp_path):
    """The counts are maxima: 3 images of 28x28 read (the data tests serve such tiny sets)."""
    data = load_dataset("mnist", data_dir=mnist_folder(tmp_path / "data"), download=False, progress=False)
    assert data.train_images.shape == (3, 1, 28, 28) and data.test_labels.shape == (3,)


def test_read_idx_refuses_a_claim_over_its_limit_before_inflating(tmp_path):
    """With nothing known of the file, the claim itself is bounded (MAX_IDX_BYTES, 256 MiB)."""
    bomb = idx_bomb(tmp_path / "bomb.gz", (2**20, 2**20, 1))
    refused_quickly(lambda: read_idx(bomb), DataError, "more than the 256 MiB digitlab reads from an IDX file")


# --- CIFAR-10: members and headers larger than the archive's --------------------------------------


class Zeros(io.RawIOBase):
    """`size` zero bytes as a file, for tarfile.addfile to copy in chunks."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def cifar_archive(path: Path, sizes: dict[str, int] | None = None, before: list[tarfile.TarInfo] = ()) -> Path:
    """A CIFAR-10 binary archive of three zero records per batch, with `sizes` overriding some members'
    sizes (zeros, written by streaming) and the `before` headers (with their data) in front."""
    sizes = {name: 3 * RECORD_BYTES for name in TRAIN_MEMBERS + (TEST_MEMBER,)} | (sizes or {})
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for info in before:
            archive.addfile(info, Zeros(info.size))
        for name, size in sizes.items():
            info = tarfile.TarInfo(name)
            info.size = size
            archive.addfile(info, Zeros(size))
    return path


def test_cifar_batch_larger_than_a_batch_is_refused_from_its_tar_header(tmp_path):
    """The issue's archive held a 2 GiB data_batch_1.bin (4.6 GB, loaded as 700,000 records); here
    13,100 records (40 MB of zeros), which loaded too."""
    archive = cifar_archive(tmp_path / "cifar.tar.gz", {TRAIN_MEMBERS[0]: 13_100 * RECORD_BYTES})
    refused_quickly(
        lambda: read_cifar10_binary(archive),
        DataError,
        "data_batch_1.bin announces 40,256,300 bytes, more than the 30,730,000 of a CIFAR-10 batch",
    )


def long_header(kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "././@PaxHeader")
    info.type, info.size = kind, size
    return info


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE], ids=["gnu-longname", "pax"])
def test_a_huge_long_name_or_pax_header_is_refused_before_tarfile_reads_it(tmp_path, kind):
    """tarfile reads such a header whole, in one read: a 1 GiB long name took 2.4 GB. Here 64 MiB."""
    archive = cifar_archive(tmp_path / "cifar.tar.gz", before=[long_header(kind, 64 * MIB)])
    refused_quickly(
        lambda: read_cifar10_binary(archive),
        DataError,
        "a tar header announces 67,108,864 bytes of long names or attributes",
    )


def test_an_archive_inflating_past_the_real_ones_size_is_refused(tmp_path):
    """A 193 MiB member of no interest used to be inflated and skipped; the real archive is 176 MiB."""
    archive = cifar_archive(tmp_path / "cifar.tar.gz", before=[_sized("cifar-10-batches-bin/readme.html", 193 * MIB)])
    refused_quickly(lambda: read_cifar10_binary(archive), DataError, "inflates past 192 MiB")


def _sized(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def test_an_archive_of_thousands_of_members_is_refused(tmp_path):
    archive = cifar_archive(tmp_path / "cifar.tar.gz", before=[_sized(f"empty-{i}", 0) for i in range(2000)])
    refused_quickly(lambda: read_cifar10_binary(archive), DataError, "holds more than 64 members")


def test_the_bounded_reader_still_reads_a_whole_archive(tmp_path):
    archive = cifar_archive(tmp_path / "cifar.tar.gz", before=[_sized("cifar-10-batches-bin/readme.html", 88)])
    train_images, train_labels, test_images, _ = read_cifar10_binary(archive)
    assert train_images.shape == (15, 3, 32, 32) and test_images.shape == (3, 3, 32, 32)


# --- run directories: config.json -----------------------------------------------------------------


def assert_refused(capsys, model: Path, digit_png: Path, message: str, *args: str) -> None:
    """`load_model` raises CheckpointError, and `digitlab predict --model` exits 2 with one line, both
    saying `message` (a regex), and printing nothing on stdout (no NaN for --json)."""
    with pytest.raises(CheckpointError, match=message):
        digitlab.load_model(model)
    code = main(["predict", str(digit_png), "--model", str(model), *args])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("digitlab: error:") and re.search(message, err), err
    assert "Traceback" not in err and not out


def run_copy(tmp_path: Path, config: str | None = None) -> Path:
    run = tmp_path / "run"
    shutil.copytree(BUNDLED_MODEL, run)
    if config is not None:
        (run / "config.json").write_text(config)
    return run


def bundled_config() -> dict:
    return json.loads((BUNDLED_MODEL / "config.json").read_text())


def edited_config(change) -> str:
    config = bundled_config()
    change(config)
    return json.dumps(config)


CONFIG_TEXTS = {
    "nested-100000-deep": ("[" * 100_000 + "]" * 100_000, f"nested deeper than {MAX_JSON_DEPTH} levels"),
    "nested-900-deep": ('{"recipe": ' + "[" * 900 + "]" * 900 + "}", f"nested deeper than {MAX_JSON_DEPTH}"),
    "5000-digit-integer": ('{"recipe": {"seed": ' + "9" * 5000 + "}}", "Exceeds the limit .4300 digits"),
    "nan-temperature": (
        edited_config(lambda c: c.__setitem__("calibration", {"temperature": 1})).replace(
            '"temperature": 1', '"temperature": NaN'
        ),
        "NaN is not a JSON number",
    ),
    "not-utf8": ("", "not valid JSON"),
    "temperature-1e-320": (
        edited_config(lambda c: c.__setitem__("calibration", {"temperature": 1e-320})),
        r"temperature must be a positive number from 0.001 to 1000, not 1e-320",
    ),
    "temperature-huge-int": (
        edited_config(lambda c: c.__setitem__("calibration", {"temperature": 10**400})),
        "temperature must be a positive number",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_TEXTS))
def test_a_malformed_config_json_is_refused_with_exit_2(capsys, tmp_path, digit_png, case):
    text, message = CONFIG_TEXTS[case]
    run = run_copy(tmp_path, text)
    if case == "not-utf8":
        (run / "config.json").write_bytes(b'{"recipe": "\xff"}')
    assert_refused(capsys, run, digit_png, message, "--json")


def test_a_config_json_that_is_a_folder_is_refused(capsys, tmp_path, digit_png):
    run = run_copy(tmp_path)
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    assert_refused(capsys, run, digit_png, r"config.json is a folder, not a JSON file")


def test_a_config_json_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    """Opening a FIFO to read waited for a writer forever."""
    run = run_copy(tmp_path)
    (run / "config.json").unlink()
    os.mkfifo(run / "config.json")
    outcome = []

    def load():
        try:
            digitlab.load_model(run)
        except CheckpointError as err:
            outcome.append(str(err))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # the old behaviour: open() blocks; a writer's open and close releases it
        os.close(os.open(run / "config.json", os.O_WRONLY))
        thread.join(timeout=10)
        pytest.fail("reading a FIFO as config.json waited for a writer")
    assert outcome and "config.json is a FIFO (named pipe), not a JSON file" in outcome[0]


def test_a_config_json_linked_to_dev_zero_is_refused_without_reading_it(tmp_path, digit_png):
    """/dev/zero was read until memory ran out (20 GB in a minute, measured). In a child process
    limited to 4 GiB of address space, so that a regression ends in MemoryError, not on the machine."""
    run = run_copy(tmp_path)
    (run / "config.json").unlink()
    (run / "config.json").symlink_to("/dev/zero")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "predict", str(digit_png), "--model", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("digitlab: error:") and "config.json is a device, not a JSON file" in result.stderr


def mlp_weights(run: Path, layers: int) -> None:
    """model.safetensors of an mlp with `layers` hidden layers of width 1, config.json naming it."""
    config = bundled_config()
    config["model"] = {"name": "mlp", "args": {"hidden": [1] * layers}}
    (run / "config.json").write_text(json.dumps(config))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in create_model("mlp", hidden=(1,) * layers).state_dict().items()}
    save_file({k: torch.zeros(shape) for k, shape in shapes.items()}, str(run / "model.safetensors"))


def test_a_config_of_thousands_of_layers_is_refused_in_milliseconds(capsys, tmp_path, digit_png):
    """20,000 layers (61 KB of JSON) took 56 s to build on the meta device before the weights check
    refused them, 100,000 more than 150 s; here 5,000 (about 15 s that way)."""
    run = run_copy(
        tmp_path, edited_config(lambda c: c.__setitem__("model", {"name": "mlp", "args": {"hidden": [1] * 5000}}))
    )
    refused_quickly(
        lambda: digitlab.load_model(run),
        CheckpointError,
        f"describes a network of 10,002 tensors, more than the {MAX_TENSORS}",
        seconds=1.0,
    )
    assert_refused(capsys, run, digit_png, "describes a network of 10,002 tensors")


def test_weights_with_more_tensors_than_any_network_are_refused(capsys, tmp_path, digit_png):
    """A config and weights that agree, of 600 tensors (299 layers): still refused, unbuilt."""
    run = run_copy(tmp_path)
    mlp_weights(run, 299)
    assert_refused(capsys, run, digit_png, f"holds 600 tensors, more than the {MAX_TENSORS}")


def test_the_tensor_counts_are_those_of_the_networks():
    """models.tensor_count, which refuses before anything is built, against the built networks."""
    cases = [(name, {}) for name in MODELS] + [
        ("mlp", {"hidden": [3] * 7, "activation": "tanh", "dropout": 0.5}),
        ("mlp", {"hidden": []}),
        ("opencv-mlp", {"hidden": [4, 4, 4]}),
        ("digitnet", {"widths": [8, 8, 8], "in_shape": [3, 32, 32]}),
        ("keras-cnn", {"in_shape": [3, 32, 32], "num_classes": 4}),
    ]
    for name, args in cases:
        with torch.device("meta"):
            network = create_model(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
        assert models.tensor_count({"name": name, "args": args}) == len(network.state_dict()), (name, args)
    assert set(MODELS) <= {name for name, _ in cases}


def test_a_model_computing_nan_is_refused_instead_of_emitting_nan(capsys, tmp_path, digit_png):
    """NaN is not JSON: `predict --json` and the service printed it for a model with a NaN weight."""
    run = run_copy(tmp_path)
    state = load_file(str(run / "model.safetensors"))
    last_bias = [name for name, tensor in state.items() if name.endswith(".bias") and tensor.shape == (10,)][-1]
    state[last_bias][3] = float("nan")  # the output layer's: one class's logit is NaN
    save_file(state, str(run / "model.safetensors"))
    for backend in ("torch", "auto"):
        with pytest.raises(CheckpointError, match="computes NaN or infinite probabilities for 1 of 1 image"):
            digitlab.predict(digit_png, digitlab.load_model(run, backend=backend))
    code = main(["predict", str(digit_png), "--model", str(run), "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and "NaN" not in out and err.startswith("digitlab: error:"), (out, err)


def test_json_readers_refuse_what_is_not_json_and_keep_what_is(tmp_path):
    assert files.loads_json('{"a": "[[[[{{{{", "b": ["\\"]]]\\\\"]}', "x") == {"a": "[[[[{{{{", "b": ['"]]]\\']}
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert files.loads_json(nested, "x") == json.loads(nested)
    with pytest.raises(CheckpointError, match="x is not valid JSON: Infinity is not a JSON number"):
        files.loads_json("[1, Infinity]", "x")
    history = tmp_path / "history.json"
    history.write_text('[{"epoch": 1, "loss": NaN}]')  # what json.dumps writes for a diverged run
    assert np.isnan(read_json(history, allow_nan=True)[0]["loss"])
    with pytest.raises(CheckpointError, match="NaN is not a JSON number"):
        read_json(history)
    (tmp_path / "big.json").write_bytes(b" " * (8 * MIB + 1))
    with pytest.raises(CheckpointError, match="larger than the 8 MiB"):
        read_json(tmp_path / "big.json")
    with pytest.raises(CheckpointError, match="is missing"):
        read_json(tmp_path / "absent.json")


# --- ONNX files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_data() -> bytes:
    """The bundled model as `digitlab export` writes it (metadata included), unverified."""
    model = digitlab.load_model(backend="torch")
    raw, _ = onnx_bytes(model.module, model.image_shape)
    return with_metadata(raw, {CONFIG_KEY: json.dumps(model.config), PARAMETERS_KEY: str(model.parameter_count)})


def constant_of_shape(data: bytes, values: int, strip: bool) -> bytes:
    """The issue's file: logits + ReduceSum(ConstantOfShape([values])), which ONNX Runtime folds to a
    constant while it creates the session (250,000,000 floats: a 2.3 GB peak). Here 25,000,000."""
    proto = onnx.load_from_string(data)
    graph = proto.graph
    last = graph.node[-1]
    last.output[0] = "logits_before"
    graph.initializer.append(helper.make_tensor("bomb_shape", TensorProto.INT64, [1], [values]))
    graph.node.extend(
        [
            helper.make_node(
                "ConstantOfShape",
                ["bomb_shape"],
                ["bomb"],
                value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            ),
            helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], keepdims=0),
            helper.make_node("Add", ["logits_before", "bomb_sum"], [graph.output[0].name]),
        ]
    )
    if strip:
        del proto.metadata_props[:]
    return proto.SerializeToString()


@pytest.mark.parametrize("strip", [False, True], ids=["with-metadata", "metadata-stripped"])
def test_an_onnx_graph_that_allocates_at_load_is_refused_before_a_session(
    capsys, tmp_path, onnx_data, digit_png, strip
):
    path = tmp_path / "bomb.onnx"
    path.write_bytes(constant_of_shape(onnx_data, 25_000_000, strip))
    message = r"uses operators digitlab's export never writes \(ConstantOfShape, ReduceSum\)"
    refused_quickly(lambda: digitlab.load_model(path), CheckpointError, message, mib=50)
    assert_refused(capsys, path, digit_png, message)


def huge_padding(data: bytes) -> bytes:
    """The first convolution padded by 2000 pixels a side: only operators the export writes, but a
    (batch, 32, 2014, 2014) tensor -- 500 MB per image -- at the first prediction."""
    proto = onnx.load_from_string(data)
    conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    pads = next(attribute for attribute in conv.attribute if attribute.name == "pads")
    pads.ints[:] = [2000] * 4
    return proto.SerializeToString()


def test_an_onnx_graph_of_enormous_tensors_is_refused_unrun(capsys, tmp_path, onnx_data, digit_png):
    path = tmp_path / "padded.onnx"
    path.write_bytes(huge_padding(onnx_data))
    assert_refused(capsys, path, digit_png, r"holds \d[\d,]+ values per image, more than the 262,144")


@pytest.mark.parametrize(
    "key, value, message",
    [
        (PARAMETERS_KEY, "²", r"'digitlab.parameters' is '²', not a count of parameters"),
        (PARAMETERS_KEY, "9" * 5000, "not a count of parameters"),
        (CONFIG_KEY, "[" * 5000 + "]" * 5000, f"nested deeper than {MAX_JSON_DEPTH} levels"),
        (
            CONFIG_KEY,
            json.dumps({**bundled_config(), "calibration": {"temperature": 1e-320}}),
            "temperature must be a positive number from 0.001",
        ),
    ],
)
def test_onnx_metadata_that_digitlab_does_not_write_is_refused(
    capsys, tmp_path, onnx_data, digit_png, key, value, message
):
    path = tmp_path / "model.onnx"
    path.write_bytes(with_metadata(onnx_data, {key: value}))
    assert_refused(capsys, path, digit_png, message)


def test_onnx_metadata_that_is_not_utf8_is_refused(capsys, tmp_path, onnx_data, digit_png):
    """Found by `bench fuzz`: protobuf gives such a proto2 string as bytes, and loads_json raised TypeError."""
    data = with_metadata(onnx_data, {PARAMETERS_KEY: "marker-\u00e9"})
    assert data.count("marker-\u00e9".encode()) == 1
    path = tmp_path / "model.onnx"
    path.write_bytes(data.replace("marker-\u00e9".encode(), b"marker-\xff\xfe"))
    assert_refused(capsys, path, digit_png, "is damaged: its metadata is not UTF-8 text")


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_every_registered_network_exports_to_a_graph_check_onnx_accepts(in_shape):
    """ONNX_OPERATORS is whole: the export of each digit model (each activation of mlp) passes
    check_onnx. A line model's export is for other runtimes (the next test)."""
    variants = [(name, {}) for name in MODELS if name != "mlp" and model_task(name) == "digits"]
    variants += [("mlp", {"activation": activation}) for activation in ("relu", "sigmoid", "tanh")]
    seen = set()
    for name, args in variants:
        raw, _ = onnx_bytes(create_model(name, in_shape=in_shape, **args), in_shape)
        assert model_files.check_onnx(raw, name) == {}
        seen |= {node.op_type for node in onnx.load_from_string(raw).graph.node}
    assert seen <= model_files.ONNX_OPERATORS


def test_a_line_models_export_is_refused_for_the_operators_that_size_tensors_from_the_width():
    raw = line_onnx_bytes(create_model("linenet"), 32)
    with pytest.raises(CheckpointError, match="operators digitlab's export never writes .*ConstantOfShape"):
        model_files.check_onnx(raw, "linenet")


def test_the_unchanged_export_loads_and_predicts(tmp_path, onnx_data, digit_png):
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_data)
    model = digitlab.load_model(path)
    assert model.parameter_count == 307_882 and digitlab.predict(digit_png, model)[0].digit == "7"


# --- bench fuzz tries these kinds of input ---------------------------------------------------------


def test_a_short_fuzz_of_model_files_finds_only_digitlab_errors(tmp_path):
    """150 generated config.json files and .onnx files (fuzz_inputs.model_files) through
    `predict --model`; the full run's figures are in BENCHMARKS.md. It found one bug at once:
    ONNX metadata that is not UTF-8 came back from protobuf as bytes (a TypeError)."""
    report = bench_fuzz(
        150, seed=3, targets=("model",), results=None, markdown=None, failures=tmp_path / "failures", progress=False
    )
    (row,) = report["targets"]
    assert row["failures"] == [] and report["failures"] == 0, row["failures"]
    counts = row["outcomes"]["predict --model"]
    assert sum(counts.values()) == 150 and 0 < counts.get("accepted", 0) < 150 and "FAILURE" not in counts
    assert row["peak_rss_mib"] < 2048
