"""`digitlab bench infer`: how fast a model answers on each inference path, and whether the paths agree.

    from digitlab.bench.infer import bench_infer
    report = bench_infer(models=["runs/digitnet-20261121-101500"])   # the bundled model comes first

Paths, each fed what the project keeps -- uint8 (N, C, H, W) MNIST test images, scaled to
[0, 1] inside (onnx_runtime.UInt8Images):
- eager: PyTorch eager, channels_last, under torch.inference_mode;
- compile: the same module through torch.compile (one specialised graph per batch size; the
  compilation is timed apart as its warm-up, and a failure is reported, not raised);
- onnx: ONNX Runtime on the in-memory export, as `load_model` runs a model on the CPU (batch
  norms folded into the convolutions: onnx_runtime.folded);
- onnx-unfolded: the same without the folding, what each option bought;
- int8: the run's int8 export as `load_model` runs it (the bundled model ships one: `digitlab export
  --int8`, onnx_runtime.quantize_int8: every convolution but the first, and the last layer), or for
  a run without one the same quantisation calibrated on CALIBRATION_IMAGES MNIST *training* images;
  int8-all: every convolution quantised, the first too (so calibrated, what the first one costs).

Per path: throughput in images/s at batch 256 and 1024 (batches of distinct test images, run
for `seconds` each after a warm-up), the latency of one image, p50 and p99 over `calls` calls
after a warm-up, and its agreement with plain eager PyTorch (`predict_logits`) on the whole
MNIST test set: the share of images with the same class, the largest |logit difference|, and
the accuracy (an int8 path is kept only where it gives the same class on >= 99.9% and loses at
most 0.1 point of accuracy: export.SAME_CLASS_MIN, export.INT8_ACCURACY_LOSS).
Targets (the issue): >= 20,000 images/s batched and <= 1 ms p50 for one image.
"""

from __future__ import annotations

import copy
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from ..api import load_dataset, load_model
from ..checkpoint import INT8, resolve_model
from ..errors import ConfigError
from ..evaluate import predict_logits
from ..export import INT8_ACCURACY_LOSS, SAME_CLASS_MIN, calibration_images
from ..files import write_json
from ..models import count_parameters
from ..onnx_runtime import CALIBRATION_IMAGES, OnnxSession, UInt8Images, onnx_bytes, quantize_int8, session_for
from .common import machine, write_section

START, END = "<!-- bench infer: begin -->", "<!-- bench infer: end -->"
HEADING = "## Inference speed (`digitlab bench infer`)"
PATHS = ("eager", "compile", "onnx-unfolded", "onnx", "int8-all", "int8")
BATCHES = (256, 1024)
TARGET_IMAGES_PER_S, TARGET_P50_MS = 20_000, 1.0
MIN_CALLS = 300  # single-image calls behind a p99: fewer and it is the third-slowest call, not a percentile
WARM_UP_CALLS = 50


class InferencePath:
    """One way of running a network: `logits(x)` for a uint8 (N, C, H, W) tensor -> (N, K) numpy."""

    def __init__(self, name: str, logits, setup_seconds: float = 0.0, fixed_shapes: bool = False):
        self.name = name
        self.logits = logits
        self.setup_seconds = setup_seconds  # the ONNX export and session, or torch.compile's compilations
        self.fixed_shapes = fixed_shapes  # compiled per batch size: a short last batch is padded


def eager_path(network: torch.nn.Module) -> InferencePath:
    module = UInt8Images(copy.deepcopy(network).cpu().to(memory_format=torch.channels_last)).eval()

    def logits(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return module(x.contiguous(memory_format=torch.channels_last)).numpy()

    return InferencePath("eager", logits)


def compile_path(network: torch.nn.Module, image_shape: tuple[int, int, int]) -> InferencePath:
    """torch.compile'd eager path, compiled here for every batch size the bench uses (1 and BATCHES)."""
    torch._dynamo.reset()  # each model starts from a clean cache (and recompile limit)
    module = UInt8Images(copy.deepcopy(network).cpu().to(memory_format=torch.channels_last)).eval()
    compiled = torch.compile(module, dynamic=False)

    def logits(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return compiled(x.contiguous(memory_format=torch.channels_last)).numpy()

    started = time.perf_counter()
    for batch in (1, *BATCHES):
        logits(torch.zeros(batch, *image_shape, dtype=torch.uint8))
    return InferencePath("compile", logits, time.perf_counter() - started, fixed_shapes=True)


def onnx_path(model, fold: bool = True) -> InferencePath:
    """ONNX Runtime: the model's own session for an .onnx file, else an in-memory export."""
    started = time.perf_counter()
    session = model.session if model.module is None else session_for(model.module, model.image_shape, fold=fold)
    run = session.session.run
    name = "onnx" if fold else "onnx-unfolded"
    return InferencePath(name, lambda x: run(["logits"], {"images": x.numpy()})[0], time.perf_counter() - started)


def int8_path(model, calibration: np.ndarray, float_first: bool = True) -> InferencePath:
    """ONNX Runtime on the export quantised to int8: the run's own int8 export where it has one
    (checkpoint.INT8, as `load_model` runs it: the bundled model's), else quantised here as
    `digitlab export --int8` would, calibrated on `calibration` (training images). Its setup time
    is the loading or the quantisation."""
    started = time.perf_counter()
    if float_first and model.path is not None and (Path(model.path) / INT8).is_file():
        session = load_model(model.path, device="cpu", precision="int8").session
    else:
        raw, _ = onnx_bytes(model.module, model.image_shape)
        session = OnnxSession(quantize_int8(raw, calibration, float_first=float_first))
    run = session.session.run
    name = "int8" if float_first else "int8-all"
    return InferencePath(name, lambda x: run(["logits"], {"images": x.numpy()})[0], time.perf_counter() - started)


def batched_logits(path: InferencePath, images: torch.Tensor, batch: int = max(BATCHES)) -> np.ndarray:
    out = []
    for chunk in images.split(batch):
        n = len(chunk)
        if path.fixed_shapes and n < batch:  # one compiled graph per shape: pad rather than recompile
            chunk = torch.cat([chunk, chunk.new_zeros(batch - n, *chunk.shape[1:])])
        out.append(path.logits(chunk)[:n])
    return np.concatenate(out)


def throughput(path: InferencePath, images: torch.Tensor, batch: int, seconds: float) -> float:
    """Images per second at `batch`, over distinct batches of `images` in turn, after a warm-up."""
    batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)] or [images[:batch]]
    for x in batches[:2]:
        path.logits(x)
    runs, started = 0, time.perf_counter()
    while True:
        path.logits(batches[runs % len(batches)])
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            return runs * len(batches[0]) / elapsed


def latency_ms(path: InferencePath, images: torch.Tensor, calls: int, warm_up: int = WARM_UP_CALLS) -> dict:
    """p50 and p99 milliseconds of one-image calls, each image a different test digit."""
    singles = [images[i : i + 1] for i in range(min(len(images), calls + warm_up))]
    for i in range(warm_up):
        path.logits(singles[i % len(singles)])
    times = np.empty(calls)
    for i in range(calls):
        x = singles[(warm_up + i) % len(singles)]
        started = time.perf_counter()
        path.logits(x)
        times[i] = time.perf_counter() - started
    ms = times * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "calls": calls}


def bench_model(
    model,
    images: torch.Tensor,
    paths=PATHS,
    seconds: float = 3.0,
    calls: int = 1000,
    progress: bool = True,
    labels: torch.Tensor | None = None,
    calibration: np.ndarray | None = None,
) -> dict:
    """Every path of one model: throughput, latency, agreement with eager on `images` (and the
    accuracy on `labels`); the int8 paths are calibrated on `calibration` (training images)."""
    reference = predict_logits(model.module, images).numpy() if model.module is not None else None
    rows = {}
    for name in paths:
        row: dict = {}
        rows[name] = row
        if model.module is None and name != "onnx":
            row["error"] = "an .onnx file runs on ONNX Runtime only"
            continue
        try:
            if name == "eager":
                path = eager_path(model.module)
            elif name == "compile":
                path = compile_path(model.module, model.image_shape)
            elif name.startswith("int8"):
                if calibration is None:
                    raise ConfigError("the int8 paths need calibration images")
                path = int8_path(model, calibration, float_first=name == "int8")
            else:
                path = onnx_path(model, fold=name == "onnx")
        except Exception as err:  # noqa: BLE001 -- a path that cannot run is a finding, not a crash
            row["error"] = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
            if progress:
                print(f"  {name}: failed: {row['error']}", flush=True)
            continue
        row["setup_seconds"] = path.setup_seconds
        for batch in BATCHES:
            row[f"images_per_s_{batch}"] = throughput(path, images, batch, seconds)
        row.update(latency_ms(path, images, calls))
        got = batched_logits(path, images)
        if labels is not None:
            row["accuracy"] = float((got.argmax(1) == labels.numpy()).mean())
        if reference is not None:
            row["same_class"] = float((got.argmax(1) == reference.argmax(1)).mean())
            row["max_logit_diff"] = float(np.abs(got - reference).max())
            if labels is not None:
                float_accuracy = float((reference.argmax(1) == labels.numpy()).mean())
                row["accuracy_loss"] = float_accuracy - row["accuracy"]
                row["kept"] = row["same_class"] >= SAME_CLASS_MIN and row["accuracy_loss"] <= INT8_ACCURACY_LOSS
        best = max(row[f"images_per_s_{b}"] for b in BATCHES)
        row["target_met"] = best >= TARGET_IMAGES_PER_S and row["p50_ms"] <= TARGET_P50_MS
        if progress:
            print(
                f"  {name}: {row['images_per_s_256']:,.0f} / {row['images_per_s_1024']:,.0f} images/s at batch "
                f"256 / 1024, one image p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f} ms"
                + (f", compiled in {path.setup_seconds:.1f} s" if name == "compile" else ""),
                flush=True,
            )
    return {
        "recipe": model.config["recipe"]["name"],
        "path": None if model.path is None else str(model.path),
        "parameters": model.parameter_count if model.module is None else count_parameters(model.module),
        "agreement_images": len(images),
        "paths": rows,
    }


def bench_infer(
    models: list | None = None,
    *,
    paths=PATHS,
    seconds: float = 3.0,
    calls: int = 1000,
    threads: int | None = None,
    data_dir=None,
    quick: bool = False,
    results: Path | None = Path("benchmarks/results/infer.json"),
    markdown: Path | None = Path("BENCHMARKS.md"),
    progress: bool = True,
) -> dict:
    """Benchmark the bundled model and each of `models` (run directories, .onnx files or shipped
    models' names) on every path; write `results` (JSON) and the BENCHMARKS.md section (None:
    don't). quick: a smoke test of the machinery (0.2 s per throughput, 30 calls, 1,000 images):
    its figures mean nothing."""
    unknown = set(paths) - set(PATHS)
    if unknown or not paths:
        raise ConfigError(f"unknown inference paths {sorted(unknown)}; choose from {list(PATHS)}")
    if quick:
        seconds, calls = 0.2, 30
    elif calls < MIN_CALLS or seconds <= 0:
        raise ConfigError(
            f"calls must be at least {MIN_CALLS} (a p99 needs them) and seconds positive, got {calls} and {seconds}"
        )
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(threads)
    loaded = [load_model(None, device="cpu", backend="torch")]
    loaded += [
        load_model(m, device="cpu", backend="torch" if resolve_model(m).is_dir() else "auto") for m in models or []
    ]
    mnist = load_dataset("mnist", data_dir=data_dir, progress=False)
    images = mnist.test_images[:1000] if quick else mnist.test_images
    labels = mnist.test_labels[: len(images)]
    # Calibration for the int8 paths quantised here: MNIST training images, sampled as an export samples
    # a run's own (export.calibration_images), never test images.
    calibration = calibration_images(loaded[0].config, dataset=mnist)
    rows = []
    for model in loaded:
        if model.image_shape != tuple(mnist.image_shape):
            raise ConfigError(f"{model} does not take MNIST's {tuple(mnist.image_shape)} images")
        if progress:
            print(f"{model.config['recipe']['name']} ({model.path}):", flush=True)
        rows.append(bench_model(model, images, paths, seconds, calls, progress, labels, calibration))
    report = {
        "command": "digitlab bench infer"
        + (
            " " + " ".join(sys.argv[3:])
            if sys.argv[1:3] == ["bench", "infer"]
            else "".join(f" --model {m}" for m in models or [])
        ),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "calls": calls,
        "quick": quick,
        "models": rows,
    }
    if results is not None:
        write_json(Path(results), report)
    if markdown is not None:
        publish(report, Path(markdown))
    return report


def publish(report: dict, markdown: Path) -> None:
    what = {
        "eager": "PyTorch eager (channels_last)",
        "compile": "torch.compile",
        "onnx-unfolded": "ONNX Runtime, batch norms as they are",
        "onnx": "ONNX Runtime (batch norms folded)",
        "int8-all": "ONNX Runtime int8, every convolution",
        "int8": "ONNX Runtime int8, the first convolution float",
    }
    lines = [
        START,
        "| model | path | images/s, batch 256 | images/s, batch 1024 | one image p50 | p99 | same class as "
        "eager | max logit diff | MNIST test accuracy | targets | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["models"]:
        for name, r in row["paths"].items():
            label = f"`{row['recipe']}`"
            if "error" in r:
                lines.append(f"| {label} | {what[name]} | failed | | | | | | | | {r['error']} |")
                continue
            same = f"{r['same_class'] * 100:.2f}%" if "same_class" in r else "—"
            diff = f"{r['max_logit_diff']:.1e}" if "max_logit_diff" in r else "—"
            accuracy = f"{r['accuracy'] * 100:.2f}%" if "accuracy" in r else "—"
            note = {
                "compile": f"compilation {r['setup_seconds']:.1f} s (3 batch sizes)",
                "onnx-unfolded": f"export + session {r['setup_seconds']:.2f} s",
                "onnx": f"export + session {r['setup_seconds']:.2f} s",
            }.get(name, f"quantisation {r['setup_seconds']:.1f} s" if name.startswith("int8") else "")
            if name.startswith("int8") and "kept" in r:
                note += "; kept" if r["kept"] else "; NOT kept: it changes the class or loses accuracy"
            lines.append(
                f"| {label} | {what[name]} | {r['images_per_s_256']:,.0f} | {r['images_per_s_1024']:,.0f} | "
                f"{r['p50_ms']:.3f} ms | {r['p99_ms']:.3f} ms | {same} | {diff} | {accuracy} | "
                f"{'met' if r['target_met'] else 'NOT met'} | {note} |"
            )
    quick = " QUICK SMOKE RUN: these figures mean nothing." if report["quick"] else ""
    threads = f"{report['threads']} thread{'s' if report['threads'] != 1 else ''}"
    lines += [
        "",
        f"`{report['command']}` on {report['date']}: {report['machine']}, torch {report['torch']}, "
        f"ONNX Runtime {report['onnxruntime']}, {threads}. Throughput over distinct "
        f"MNIST test images for {report['seconds']:g} s per batch size after a warm-up; one-image "
        f"latency over {report['calls']:,} calls after {WARM_UP_CALLS}; agreement with plain eager "
        f"PyTorch on {report['models'][0]['agreement_images']:,} MNIST test images; int8: a run's own int8 "
        f"export where it has one (the bundled model's), else quantised here, calibrated on "
        f"{CALIBRATION_IMAGES:,} MNIST training images (int8-all always), kept where it gives eager's class on >= "
        f"{SAME_CLASS_MIN:.1%} of the test images and loses at most {INT8_ACCURACY_LOSS * 100:g} point of "
        f"accuracy. Targets: >= {TARGET_IMAGES_PER_S:,} images/s batched and <= {TARGET_P50_MS:g} ms p50 for "
        f"one image.{quick}",
        END,
    ]
    write_section(
        markdown,
        START,
        END,
        "\n".join(lines),
        HEADING + "\n\nThe same model run six ways on the CPU, uint8 images in, logits out. "
        "`load_model` uses ONNX Runtime on the CPU (onnx_runtime.py), PyTorch where that fails.\n\n",
    )
