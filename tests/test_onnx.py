"""ONNX export and ONNX Runtime as the inference path: the bundled model exported by `digitlab export`,
checked against PyTorch on the real MNIST test set, and used wherever a run directory is."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import cv2
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

import digitlab
from digitlab import export, onnx_runtime
from digitlab.cli import main
from digitlab.data.synth import make_page
from digitlab.errors import CheckpointError, ConfigError, ExportError
from digitlab.evaluate import predict_logits
from digitlab.serve import create_app


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_data_dir):
    """`digitlab export --onnx FILE` of the bundled model: (exit code, what it printed, the file)."""
    path = tmp_path_factory.mktemp("onnx") / "digitnet-real.onnx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", "--onnx", str(path), "--data-dir", str(shared_data_dir)])
    return code, out.getvalue(), path


@pytest.fixture(scope="module")
def onnx_file(exported):
    return exported[2]


@pytest.fixture(scope="module")
def bundled_torch():
    return digitlab.load_model(backend="torch")


def write_digit(path, mnist, index) -> str:
    """An MNIST test digit drawn large, dark on light, as a PNG; returns its label."""
    big = cv2.resize(mnist.test_images[index, 0].numpy(), (112, 112), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), 255 - big)
    return str(mnist.test_labels[index].item())


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- export and verification --------------------------------------------------------------------


def test_export_writes_one_verified_self_contained_file(exported, bundled_torch):
    code, out, path = exported
    assert code == 0, out
    assert "verified with ONNX Runtime" in out and "307,882 parameters" in out
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left beside it

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == "images" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]  # any batch size
    assert graph_output.name == "logits" and graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    metadata = {p.key: p.value for p in proto.metadata_props}
    config = json.loads(metadata["digitlab.config"])
    assert config["recipe"]["name"] == "digitnet-real" and config["dataset"]["classes"] == list("0123456789")
    assert config["calibration"]["temperature"] == bundled_torch.temperature
    assert int(metadata["digitlab.parameters"]) == 307_882
    verification = json.loads(metadata["digitlab.verification"])  # measured on the real test set
    # verified on the test splits the bundled model was trained beside: MNIST, USPS, ORAND dev, Optdigits, HwD
    assert verification["dataset"] == "mnist+usps+orand-car-a+optdigits+hwd-1000" and verification["split"] == "test"
    assert verification["n"] == 13_597
    assert verification["same_class"] >= 0.999 and verification["max_logit_diff"] <= 1e-4
    assert verification["accuracy"] >= 0.99  # 99.12% measured on the 13,597 joined test images


def test_the_file_computes_what_pytorch_computes_on_the_whole_test_set(onnx_file, bundled_torch, mnist):
    """Measured here, apart from the export's own verification: PyTorch logits vs the file's."""
    expected = predict_logits(bundled_torch.module, mnist.test_images).numpy()
    model = digitlab.load_model(onnx_file)
    got = model.logits(mnist.test_images)
    assert got.dtype == np.float32 and got.shape == (10_000, 10)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == mnist.test_labels.numpy()).mean() >= 0.995


def test_the_file_loads_as_a_model_that_predicts_as_the_run(onnx_file, bundled_torch, mnist):
    model = digitlab.load_model(onnx_file)
    assert model.backend == "onnx" and model.module is None and model.path == onnx_file
    assert model.classes == bundled_torch.classes and model.image_shape == (1, 28, 28)
    assert model.temperature == bundled_torch.temperature and model.parameter_count == 307_882
    images = mnist.test_images[:500, 0].numpy()
    assert np.array_equal(model.predict(images), bundled_torch.predict(images))
    assert np.abs(model.predict_proba(images) - bundled_torch.predict_proba(images)).max() < 1e-5
    assert np.array_equal(model.predict(images[0]), model.predict(images[:1]))  # one (28, 28) image
    assert np.allclose(model.predict_proba(images[:7] / 255.0), model.predict_proba(images[:7]), atol=1e-6)


def test_folding_batch_norms_computes_the_same_function_with_fewer_operators(bundled_torch, mnist):
    """onnx_runtime.folded: every batch norm of digitnet-real goes into its convolution (those after
    a pool too: its scales are all positive), ReLU before the pool; the logits move by rounding only.
    A batch norm with a negative scale after a pool must stay where it is (max does not commute)."""
    import copy

    import torch

    network = bundled_torch.module
    fused = onnx_runtime.folded(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in network) == 6  # the original is untouched
    expected = predict_logits(network, mnist.test_images[:2000]).numpy()
    assert np.abs(predict_logits(fused, mnist.test_images[:2000]).numpy() - expected).max() < 1e-4
    flipped = copy.deepcopy(network)
    with torch.no_grad():
        flipped[6].weight[0] = -flipped[6].weight[0]  # the batch norm after the first pool
    refolded = onnx_runtime.folded(flipped)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in refolded) == 1
    images = mnist.test_images[:500]
    assert np.abs(predict_logits(refolded, images).numpy() - predict_logits(flipped, images).numpy()).max() < 1e-4


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, shared_data_dir):
    path = tmp_path_factory.mktemp("int8") / "digitnet-real-int8.onnx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", "--int8", "--onnx", str(path), "--data-dir", str(shared_data_dir)])
    return code, out.getvalue(), path


def test_int8_export_is_verified_and_runs_wherever_a_model_does(int8_export, bundled_torch, mnist):
    code, out, path = int8_export
    assert code == 0, out
    assert "verified with ONNX Runtime" in out and "against PyTorch's" in out
    proto = onnx.load(str(path))
    assert {opset.domain for opset in proto.opset_import} <= {"", "ai.onnx"}
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in proto.graph.node}
    assert path.stat().st_size < 400_000  # int8 weights: a quarter of the float file's 1.2 MB
    metadata = {p.key: p.value for p in proto.metadata_props}
    config = json.loads(metadata["digitlab.config"])
    assert config["export"]["precision"] == "int8" and config["export"]["calibration"] == "2,000 training images"
    verification = json.loads(metadata["digitlab.verification"])
    assert verification["precision"] == "int8" and verification["same_class"] >= 0.999
    assert verification["accuracy"] >= verification["reference_accuracy"] - 0.001
    assert config["evaluation"]["accuracy"] == verification["accuracy"]  # its own figure, not the float run's
    model = digitlab.load_model(path)
    images = mnist.test_images[:2000]
    assert (model.predict(images) == bundled_torch.predict(images)).mean() >= 0.999


def test_int8_export_of_a_line_model_or_without_training_data_is_refused(capsys, tmp_path):
    from digitlab.inference import BUNDLED_LINE_MODEL

    code, _, err = run_cli(capsys, "export", BUNDLED_LINE_MODEL, "--int8", "--onnx", tmp_path / "l.onnx")
    assert code == 2 and "int8 export is for digit models" in err
    code, _, err = run_cli(capsys, "export", "--int8", "--onnx", tmp_path / "m.onnx", "--data-dir", tmp_path)
    assert code == 2 and "calibrated on the run's training images" in err
    assert list(tmp_path.iterdir()) == []


def test_backends_torch_and_onnx_give_the_same_classes(mnist):
    images = mnist.test_images[:1000]
    torch_model = digitlab.load_model(backend="torch")
    onnx_model = digitlab.load_model(backend="onnx", precision="float32")
    default = digitlab.load_model()
    assert (torch_model.backend, onnx_model.backend, default.backend) == ("torch", "onnx", "onnx")
    assert (torch_model.precision, onnx_model.precision, default.precision) == ("float32", "float32", "int8")
    assert onnx_model.module is not None and default.module is not None  # the network stays beside the session
    assert np.array_equal(torch_model.predict(images), onnx_model.predict(images))
    assert np.abs(torch_model.logits(images) - onnx_model.logits(images)).max() <= 1e-4
    # the bundled model runs its shipped int8 export: the same class on >= 99.9% (all 1,000 here)
    assert (default.predict(images) == torch_model.predict(images)).mean() >= 0.999
    with pytest.raises(ConfigError, match="unknown backend"):
        digitlab.load_model(backend="tensorrt")
    with pytest.raises(ConfigError, match="unknown precision"):
        digitlab.load_model(precision="fp16")
    with pytest.raises(ConfigError, match="int8' is for digit models on ONNX Runtime"):
        digitlab.load_model(backend="torch", precision="int8")


def test_a_runs_int8_file_is_used_only_for_the_weights_it_was_made_from(tmp_path, caplog):
    """checkpoint.INT8 stands in for the run's weights only while they are the ones it was exported
    from (its sha256); a stale or damaged one leaves the run in float32 with a warning, or is an
    error when int8 is asked for."""
    import shutil

    from digitlab.checkpoint import INT8, WEIGHTS
    from digitlab.inference import BUNDLED_MODEL

    run = tmp_path / "run"
    shutil.copytree(BUNDLED_MODEL, run)
    assert digitlab.load_model(run).precision == "int8"
    assert digitlab.load_model(run, precision="int8").precision == "int8"
    weights = (run / WEIGHTS).read_bytes()
    (run / WEIGHTS).write_bytes(weights[:-4] + bytes(4))  # other weights: the last float changed
    with caplog.at_level(logging.WARNING):
        assert digitlab.load_model(run).precision == "float32"
    assert "exported from other weights" in caplog.text
    with pytest.raises(CheckpointError, match="cannot stand in for the run's weights: it was exported from other"):
        digitlab.load_model(run, precision="int8")
    (run / WEIGHTS).write_bytes(weights)
    (run / INT8).write_bytes(b"not onnx")
    assert digitlab.load_model(run).precision == "float32"
    (run / INT8).unlink()
    with pytest.raises(CheckpointError, match="has no int8 export"):
        digitlab.load_model(run, precision="int8")


def test_predict_takes_a_precision(capsys, tmp_path, mnist):
    label = write_digit(tmp_path / "digit.png", mnist, 0)
    for precision in ("auto", "float32", "int8"):
        code, out, _ = run_cli(capsys, "predict", tmp_path / "digit.png", "--precision", precision, "--json")
        assert code == 0 and json.loads(out)[0]["digit"] == label
    import shutil

    from digitlab.checkpoint import INT8
    from digitlab.inference import BUNDLED_MODEL

    shutil.copytree(BUNDLED_MODEL, tmp_path / "run", ignore=shutil.ignore_patterns(INT8))
    args = ("predict", tmp_path / "digit.png", "--model", tmp_path / "run", "--json")
    code, out, _ = run_cli(capsys, *args)  # auto: float32, the run has no int8 export
    assert code == 0 and json.loads(out)[0]["digit"] == label
    code, _, err = run_cli(capsys, *args, "--precision", "int8")
    assert code == 2 and "has no int8 export" in err


def test_an_onnx_file_runs_on_onnx_runtime_only(onnx_file):
    with pytest.raises(ConfigError, match="ONNX Runtime only"):
        digitlab.load_model(onnx_file, backend="torch")
    assert digitlab.load_model(onnx_file, backend="onnx").backend == "onnx"


def test_auto_falls_back_to_pytorch_with_a_warning_when_export_fails(monkeypatch, caplog, mnist):
    def broken(*_args, **_kwargs):
        raise RuntimeError("no exporter today")

    monkeypatch.setattr(onnx_runtime, "onnx_bytes", broken)
    assert digitlab.load_model().precision == "int8"  # the bundled int8 export needs no exporter
    with caplog.at_level(logging.WARNING):
        model = digitlab.load_model(precision="float32")
    assert model.backend == "torch"
    assert "runs on PyTorch" in caplog.text and "no exporter today" in caplog.text
    assert model.predict(mnist.test_images[:20]).tolist() == mnist.test_labels[:20].tolist()
    with pytest.raises(ExportError, match="no exporter today"):
        digitlab.load_model(backend="onnx", precision="float32")


# --- failures leave nothing behind ----------------------------------------------------------------


def test_export_errors_exit_2_and_write_nothing(capsys, tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    cases = [
        (["/nonexistent/run", "--onnx", tmp_path / "x.onnx"], "not a run directory"),
        (["--onnx", tmp_path / "a-file" / "x.onnx"], "is a file, not a folder"),
        (["--onnx", tmp_path / "a-folder"], "is a folder"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, "export", *args, "--no-verify")
        assert code == 2 and err.startswith("digitlab: error:") and message in err, err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "a-folder"]


def test_a_failed_verification_writes_nothing_and_keeps_the_old_file(capsys, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the file from before")
    failing = export.Verification("mnist", "test", 10_000, same_class=0.98, max_logit_diff=0.3, accuracy=0.97)
    monkeypatch.setattr(export, "verify_onnx", lambda *args, **kwargs: failing)
    code, _, err = run_cli(capsys, "export", "--onnx", target)
    assert code == 2 and "does not compute what PyTorch computes" in err and "98.00%" in err
    assert target.read_bytes() == b"the file from before"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def without_metadata(onnx_file, path):
    proto = onnx.load(str(onnx_file))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))


def with_config(onnx_file, path, **dataset_changes):
    metadata = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    config = json.loads(metadata["digitlab.config"])
    config["dataset"].update(dataset_changes)
    path.write_bytes(onnx_runtime.with_metadata(onnx_file.read_bytes(), {"digitlab.config": json.dumps(config)}))


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("truncated.onnx", lambda src, dst: dst.write_bytes(src.read_bytes()[:100_000]), "not a valid ONNX model"),
        ("text.onnx", lambda src, dst: dst.write_text("this is not a model\n"), "not a valid ONNX model"),
        ("empty.onnx", lambda src, dst: dst.write_bytes(b""), "not a valid ONNX model"),
        ("plain.onnx", without_metadata, "without digitlab's metadata"),
        ("other-shape.onnx", lambda src, dst: with_config(src, dst, image_shape=[1, 32, 32]), "expected one input"),
        ("weights.bin", lambda src, dst: dst.write_bytes(b"\x00" * 64), "neither a run directory nor an .onnx file"),
    ],
)
def test_a_damaged_or_foreign_onnx_file_is_refused_with_exit_2(capsys, tmp_path, onnx_file, mnist, name, make, message):
    make(onnx_file, tmp_path / name)
    with pytest.raises(CheckpointError, match=message):
        digitlab.load_model(tmp_path / name)
    write_digit(tmp_path / "digit.png", mnist, 0)
    for command in ("predict", "read"):
        code, out, err = run_cli(capsys, command, tmp_path / "digit.png", "--model", tmp_path / name)
        assert code == 2 and err.startswith("digitlab: error:") and message in err and str(name) in err
        assert "Traceback" not in err and not out


# --- every command and the service take the file ----------------------------------------------------


def test_predict_and_read_commands_take_the_onnx_file(capsys, tmp_path, onnx_file, mnist):
    truth = [write_digit(tmp_path / f"digit{i}.png", mnist, i) for i in range(5)]
    code, out, _ = run_cli(
        capsys, "predict", *[tmp_path / f"digit{i}.png" for i in range(5)], "--model", onnx_file, "--json"
    )
    assert code == 0 and [row["digit"] for row in json.loads(out)] == truth

    images, labels = mnist.test_images[:, 0].numpy(), mnist.test_labels.numpy()
    page, page_truth = make_page(
        np.random.default_rng(5), (images, labels), n_lines=2, n_digits=5, touching=False, ruled=False
    )
    cv2.imwrite(str(tmp_path / "page.png"), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))
    code, out, _ = run_cli(capsys, "read", tmp_path / "page.png", "--model", onnx_file, "--json")
    assert code == 0 and json.loads(out)[0]["text"] == page_truth.text


def test_evaluate_takes_the_onnx_file_and_wants_out(capsys, tmp_path, onnx_file, shared_data_dir):
    code, _, err = run_cli(capsys, "evaluate", onnx_file, "--data-dir", shared_data_dir)
    assert code == 2 and "--out" in err
    code, out, _ = run_cli(capsys, "evaluate", onnx_file, "--out", tmp_path / "eval", "--data-dir", shared_data_dir)
    assert code == 0 and "accuracy 99." in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 13_597 and metrics["accuracy"] >= 0.99
    assert (tmp_path / "eval" / "confusion.png").is_file() and not (onnx_file.parent / "metrics.json").exists()


def test_the_service_answers_with_the_onnx_file(onnx_file, mnist):
    images, labels = mnist.test_images[:20, 0].numpy(), mnist.test_labels[:20].numpy()
    with TestClient(create_app(onnx_file)) as client:
        (info,) = client.get("/api/models").json()["models"]
        assert info["name"] == "digitnet-real" and info["backend"] == "onnx" and not info["bundled"]
        assert info["precision"] == "float32"
        assert info["parameters"] == 307_882 and info["path"] == str(onnx_file)
        assert info["evaluation"]["accuracy"] >= 0.995 and info["temperature"] < 1
        digits = [client.post("/api/predict", json={"pixels": image.tolist()}).json()["digit"] for image in images]
    assert digits == [str(label) for label in labels]


# --- the inference benchmark's machinery -----------------------------------------------------------


def test_bench_infer_quick_reports_every_path_and_a_compile_failure(tmp_path, monkeypatch, shared_data_dir):
    import torch

    from digitlab.bench.infer import bench_infer

    def no_compiler(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    report = bench_infer(
        [],
        quick=True,
        data_dir=shared_data_dir,
        results=tmp_path / "infer.json",
        markdown=tmp_path / "BENCHMARKS.md",
        progress=False,
    )
    (row,) = report["models"]
    paths = row["paths"]
    assert paths["compile"]["error"] == "RuntimeError: no C++ compiler"
    for name in ("eager", "onnx-unfolded", "onnx"):
        r = paths[name]
        assert r["images_per_s_256"] > 0 and r["images_per_s_1024"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["same_class"] >= 0.999 and r["max_logit_diff"] <= 1e-4
    for name in ("int8", "int8-all"):  # quantised: the class kept, the logits moved (by ~0.6 when measured)
        r = paths[name]
        assert r["images_per_s_1024"] > 0 and r["same_class"] >= 0.99 and 1e-3 < r["max_logit_diff"] < 5
        assert abs(r["accuracy"] - paths["eager"]["accuracy"]) <= 0.01 and r["kept"] == (
            r["same_class"] >= 0.999 and r["accuracy_loss"] <= 0.001
        )
    assert json.loads((tmp_path / "infer.json").read_text())["quick"] is True
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench infer: begin -->" in text and "ONNX Runtime" in text and "no C++ compiler" in text
    with pytest.raises(ConfigError, match="at least 300"):
        bench_infer([], calls=100, data_dir=shared_data_dir, results=None, markdown=None)
