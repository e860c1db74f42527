"""`digitlab bench speed`: how fast digitlab trains, trick by trick and against the usual tools.

One invocation, one machine, every contender in its own fresh process (so that imports,
thread pools and peak memory do not leak from one into the next):

1. `fast` over seeds: training seconds to >= 99.0% (data loading reported apart), the
   arithmetic rate reached (GFLOP/s from the model's counted FLOPs) against this CPU's
   measured matrix-multiply peak; `fast-995` likewise for >= 99.5%.
2. Each trick of `fast` undone on its own (bf16, channels-last, one-cycle, batch size, narrow
   early layers, threads, torch.compile) and uint8-on-device against a float copy of the data.
3. Peers: Keras 3 (TensorFlow backend) on the same classic recipes, a conventional PyTorch
   loop with a DataLoader as in pytorch/examples (same model as `fast`), scikit-learn's
   MLPClassifier on the MLP recipe, and time to 99% of `fast` against Keras' `keras-cnn`.
4. Peak resident memory of training (each worker) and of the service.

Workers run as `python -m digitlab.bench.speed WORKER JSON` and print one `RESULT {json}` line.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torch.utils.flop_counter import FlopCounterMode

from ..data import load_dataset
from ..errors import ConfigError
from ..files import write_json
from ..models import create_model
from ..recipes import get_recipe
from ..train import RunOptions, bf16_supported, evaluate_loss_accuracy, fit, model_arguments
from .common import (
    LoadTestError,
    free_port,
    machine,
    post,
    process_memory_mb,
    request_bodies,
    start_service,
    stop_service,
    write_section,
)

START, END = "<!-- bench speed: begin -->", "<!-- bench speed: end -->"
RESULT = "RESULT "
TARGET_FAST_SECONDS, TARGET_FAST_ACCURACY, TARGET_FAST_FLOOR = 8.0, 0.990, 0.989
TARGET_995_SECONDS, TARGET_995_ACCURACY = 60.0, 0.995
TARGET_KERAS_RATIO = 20.0

# Each trick of `fast`, undone on its own: (label, recipe, --set settings, threads or None).
ABLATIONS = [
    ("`fast` as it is", "fast", [], None),
    ("fp32 instead of bf16", "fast", ["bf16=false"], None),
    ("NCHW instead of channels-last", "fast", ["channels_last=false"], None),
    ("constant lr 1e-3 instead of one-cycle", "fast", ["schedule=constant", "lr=1e-3"], None),
    ("batch 32 instead of 128", "fast", ["batch_size=32"], None),
    ("batch 512 instead of 128 (lr x2)", "fast", ["batch_size=512", "lr=8e-3"], None),
    (
        "full-width early layers (digitnet 32-64-128)",
        "digitnet",
        ["epochs=1", "augment=none", "label_smoothing=0", "batch_size=128", "bf16=true"],
        None,
    ),
    ("1 thread instead of 2", "fast", [], 1),
    ("torch.compile (compile time included)", "fast", ["compile=true"], None),
]


def peak_rss_self_mb() -> float | None:
    """This process's peak RSS in MiB: VmHWM, which (unlike getrusage's ru_maxrss, kept across
    exec on Linux) does not include the parent this worker was forked from."""
    return process_memory_mb()


# --- workers: each runs in its own process -----------------------------------------------------


def _mnist(data_dir, limit):
    """MNIST as uint8 tensors, loaded and (for --quick runs) cut to `limit` training images."""
    started = time.perf_counter()
    ds = load_dataset("mnist", data_dir=data_dir, progress=False)
    load_seconds = time.perf_counter() - started
    x, y = ds.train_images, ds.train_labels
    if limit:
        x, y = x[:limit], y[:limit]
    return ds, x, y, load_seconds


def worker_digitlab(spec: dict) -> dict:
    """digitlab's own loop (train.fit) on a recipe; per-epoch training seconds and test accuracy."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    ds, _, _, load_seconds = _mnist(spec.get("data_dir"), None)
    with tempfile.TemporaryDirectory() as out:
        options = RunOptions(
            dataset=ds,
            out=out,
            progress=False,
            subset=spec.get("limit"),
            settings=tuple(spec.get("settings") or ()),
            overrides={"epochs": spec.get("epochs"), "seed": spec.get("seed")},
        )
        run = fit(spec["recipe"], options)
    return {
        "epochs": [{"seconds": r["seconds"], "accuracy": r["val_accuracy"]} for r in run.history],
        "load_seconds": load_seconds,
        "threads": torch.get_num_threads(),
        "bf16": bool(run.recipe.bf16),
        "batch_size": run.recipe.batch_size,
    }


def worker_keras(spec: dict) -> dict:
    """Keras 3 (TensorFlow backend) running a classic recipe as the tutorial wrote it."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # here, not at the top: TensorFlow takes seconds to import, and only this worker needs it

    recipe = get_recipe(spec["recipe"])
    ds, x, y, load_seconds = _mnist(spec.get("data_dir"), spec.get("limit"))
    keras.utils.set_random_seed(spec.get("seed", 0))
    L = keras.layers
    if recipe.model == "keras-cnn":  # digitlab.models.cnn.keras_cnn, layer for layer
        x = x.numpy().transpose(0, 2, 3, 1).astype("float32") / 255  # NHWC, as Keras wants
        test = ds.test_images.numpy().transpose(0, 2, 3, 1).astype("float32") / 255
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                L.Conv2D(32, 3, activation="relu"),
                L.Conv2D(32, 3, activation="relu"),
                L.MaxPooling2D(2),
                L.Dropout(0.25),
                L.Flatten(),
                L.Dense(128, activation="relu"),
                L.Dropout(0.5),
                L.Dense(10, activation="softmax"),
            ]
        )
    elif recipe.model == "mlp":
        x = x.numpy().reshape(len(x), -1).astype("float32") / 255
        test = ds.test_images.numpy().reshape(len(ds.test_images), -1).astype("float32") / 255
        layers: list = [keras.Input((x.shape[1],))]
        for width in recipe.model_args["hidden"]:
            layers.append(L.Dense(width, activation=recipe.model_args.get("activation", "relu")))
            if recipe.model_args.get("dropout"):
                layers.append(L.Dropout(recipe.model_args["dropout"]))
        model = keras.Sequential(layers + [L.Dense(10, activation="softmax")])
    else:
        raise ConfigError(f"no Keras twin for recipe {recipe.name!r}")
    if recipe.optimizer == "adadelta":
        optimizer = keras.optimizers.Adadelta(learning_rate=recipe.lr, rho=recipe.rho, epsilon=recipe.eps)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=recipe.lr, epsilon=recipe.eps)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    y, test_y = y.numpy(), ds.test_labels.numpy()
    epochs = []
    for _ in range(spec["epochs"]):
        started = time.perf_counter()
        model.fit(x, y, batch_size=recipe.batch_size, epochs=1, shuffle=True, verbose=0)
        seconds = time.perf_counter() - started
        accuracy = float(np.mean(model.predict(test, batch_size=1024, verbose=0).argmax(1) == test_y))
        epochs.append({"seconds": seconds, "accuracy": accuracy})
        if spec.get("until") and accuracy >= spec["until"]:
            break
    return {
        "epochs": epochs,
        "load_seconds": load_seconds,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }


def worker_dataloader(spec: dict) -> dict:
    """The conventional PyTorch loop of pytorch/examples' mnist: a Dataset converting one image
    at a time, a DataLoader batching them, fp32, NCHW; same model, optimiser and schedule as `fast`."""
    recipe = get_recipe("fast")
    ds, x, y, load_seconds = _mnist(spec.get("data_dir"), spec.get("limit"))

    class Images(TorchDataset):  # what ToTensor() does, per item
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return x[i].float().div(255), int(y[i])

    torch.manual_seed(spec.get("seed", 0))
    loader = DataLoader(Images(), batch_size=recipe.batch_size, shuffle=True, num_workers=spec.get("workers", 0))
    model = create_model(recipe.model, **model_arguments(recipe, ds))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, eps=recipe.eps)
    epochs_n = spec.get("epochs", 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=recipe.lr,
        total_steps=epochs_n * len(loader),
        pct_start=recipe.warmup,
        anneal_strategy="linear",
        div_factor=10,
        final_div_factor=1e4,
    )
    epochs = []
    for _ in range(epochs_n):
        model.train()
        started = time.perf_counter()
        for data, target in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
            scheduler.step()
        seconds = time.perf_counter() - started
        _, accuracy = evaluate_loss_accuracy(model, ds.test_images, ds.test_labels)
        epochs.append({"seconds": seconds, "accuracy": accuracy})
    return {"epochs": epochs, "load_seconds": load_seconds, "threads": torch.get_num_threads()}


def worker_sklearn(spec: dict) -> dict:
    """scikit-learn's MLPClassifier on the MLP recipe's layers (it has no dropout), one epoch per
    partial_fit, Adam with the recipe's learning rate and batch size."""
    from sklearn.neural_network import MLPClassifier  # here, not at the top: only this worker needs it

    recipe = get_recipe("keras-mlp-dropout")
    ds, x, y, load_seconds = _mnist(spec.get("data_dir"), spec.get("limit"))
    x = x.numpy().reshape(len(x), -1).astype("float32") / 255
    test = ds.test_images.numpy().reshape(len(ds.test_images), -1).astype("float32") / 255
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(recipe.model_args["hidden"]),
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=recipe.batch_size,
        learning_rate_init=recipe.lr,
        epsilon=recipe.eps,
        shuffle=True,
        random_state=spec.get("seed", 0),
    )
    classes = np.arange(10)
    epochs = []
    for _ in range(spec["epochs"]):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(x, y.numpy(), classes=classes)
        seconds = time.perf_counter() - started
        epochs.append({"seconds": seconds, "accuracy": float(clf.score(test, ds.test_labels.numpy()))})
    return {"epochs": epochs, "load_seconds": load_seconds}


WORKERS = {
    "digitlab": worker_digitlab,
    "keras": worker_keras,
    "dataloader": worker_dataloader,
    "sklearn": worker_sklearn,
}


def run_worker(kind: str, spec: dict, timeout: float = 1800) -> dict:
    """Run one worker in a fresh Python process; its result with its peak RSS (MiB)."""
    env = dict(os.environ, TQDM_DISABLE="1")
    done = subprocess.run(
        [sys.executable, "-m", "digitlab.bench.speed", kind, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"bench worker {kind} {spec} failed (exit {done.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1][len(RESULT) :])


# --- measurements made in the parent -------------------------------------------------------------


def gemm_peak(dtype_name: str, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a large square matrix multiply: the practical peak of this CPU and dtype."""
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def training_flops_per_image(recipe_name: str, batch: int = 64) -> float:
    """Forward + backward FLOPs of one training image, counted by torch's FlopCounterMode."""
    recipe = get_recipe(recipe_name)
    model = create_model(recipe.model, in_shape=(1, 28, 28), num_classes=10, **recipe.model_args)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def uint8_vs_float(data_dir, batch: int = 128) -> dict:
    """One epoch's worth of batch gathers: uint8 images scaled per batch vs a float32 copy."""
    _, x, _, _ = _mnist(data_dir, None)
    xf = x.float().div(255)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    timings = {}
    for name, source, convert in (("uint8", x, True), ("float32", xf, False)):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for i in range(0, len(order), batch):
                b = source[order[i : i + batch]]
                if convert:
                    b = b.float().div_(255)
            best = min(best, time.perf_counter() - started)
        timings[name] = {"epoch_seconds": best, "megabytes": source.numel() * source.element_size() / 2**20}
    return timings


def service_rss(model=None, requests: int = 300) -> dict:
    """Peak RSS of `digitlab serve` after answering a burst of predictions: one worker (`serve
    --workers 1`), whose process is the one measured (with several, it would be their supervisor)."""
    port = free_port()
    process = start_service(port, model, workers=1)
    try:
        bodies = request_bodies("pixels", np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8))
        statuses = [post(port, "/api/predict", bodies[i % len(bodies)]) for i in range(requests)]
        if statuses.count(200) != requests:
            raise LoadTestError(
                f"the service answered {requests - statuses.count(200)} of {requests} predictions "
                f"with an error: {sorted(set(statuses))}"
            )
        return {"peak_rss_mb": process_memory_mb(process.pid), "requests": requests}
    finally:
        stop_service(process)


# --- the benchmark ---------------------------------------------------------------------------


def _train_seconds(result: dict, upto: int | None = None) -> float:
    return sum(e["seconds"] for e in result["epochs"][:upto])


def _time_to(result: dict, accuracy: float) -> tuple[float | None, int | None]:
    """Cumulative training seconds and epochs until the first epoch at or above `accuracy`."""
    total = 0.0
    for k, e in enumerate(result["epochs"], 1):
        total += e["seconds"]
        if e["accuracy"] >= accuracy:
            return total, k
    return None, None


def keras_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("keras", "tensorflow"))


def bench_speed(
    seeds: int = 5,
    seeds_995: int = 3,
    peers: bool = True,
    ablations: bool = True,
    keras_max_epochs: int = 12,
    mlp_epochs: int = 5,
    data_dir=None,
    quick: bool = False,
    markdown: Path = Path("BENCHMARKS.md"),
    results: Path = Path("benchmarks/results/speed.json"),
    log=print,
) -> dict:
    """Run the whole comparison and write BENCHMARKS.md's speed section and a JSON file.

    quick: a smoke test (5,000 training images, 1 epoch everywhere, 1 seed): checks the
    machinery, its figures mean nothing and it says so in what it writes.
    """
    if seeds < 1 or seeds_995 < 0:
        raise ConfigError("--seeds must be at least 1 and --seeds-995 at least 0")
    if quick:
        seeds, seeds_995, keras_max_epochs, mlp_epochs = 1, min(seeds_995, 1), 1, 1
    limit = 5000 if quick else None
    common = {"data_dir": str(data_dir) if data_dir else None, "limit": limit}
    report: dict = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "quick": quick,
        "command": "digitlab " + " ".join(sys.argv[1:])
        if sys.argv[1:3] == ["bench", "speed"]
        else "digitlab bench speed",
    }
    report["peak_gflops"] = {"float32": gemm_peak("float32")}
    if bf16_supported(torch.device("cpu")):
        report["peak_gflops"]["bfloat16"] = gemm_peak("bfloat16")
    log("matrix-multiply peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in report["peak_gflops"].items()))
    train = functools.partial(_train_digitlab, common, quick, log)

    # 1. The fast recipes over seeds.
    for name, count in (("fast", seeds), ("fast-995", seeds_995)):
        if count:
            report[name] = _over_seeds(name, count, train, limit, log)
    # 2. Each trick undone on its own.
    if ablations:
        report["ablations"] = _ablations(train, log)
        report["uint8"] = uint8_vs_float(data_dir)
    # 3. Peers.
    if peers:
        report["peers"] = _peers(train, common, keras_max_epochs, mlp_epochs, log)
    log("service peak memory")
    report["service"] = service_rss()
    write_json(results, report)
    publish(report, markdown)
    return report


def _train_digitlab(
    common: dict,
    quick: bool,
    log,
    recipe: str,
    seed: int = 0,
    epochs: int | None = None,
    settings=(),
    threads: int | None = None,
) -> dict:
    """digitlab's worker on `recipe` (one epoch when `quick`), its result logged in one line."""
    spec = {
        **common,
        "recipe": recipe,
        "seed": seed,
        "epochs": 1 if quick else epochs,
        "settings": list(settings),
        "threads": threads,
    }
    result = run_worker("digitlab", spec)
    last = result["epochs"][-1]
    log(
        f"  digitlab {recipe} {' '.join(settings)}{' threads=' + str(threads) if threads else ''} seed {seed}: "
        f"{last['accuracy'] * 100:.2f}% after {len(result['epochs'])} epoch(s), "
        f"{_train_seconds(result):.2f} s training"
    )
    return result


def _over_seeds(name: str, count: int, train, limit: int | None, log) -> dict:
    """A fast recipe trained with seeds 0..count-1: its seconds and accuracies, their medians, and
    the arithmetic rate from its counted FLOPs."""
    log(f"{name}: {count} seed(s)")
    flops = training_flops_per_image(name)
    runs = [train(name, seed=s) for s in range(count)]
    secs = [_train_seconds(r) for r in runs]
    accs = [r["epochs"][-1]["accuracy"] for r in runs]
    images = (limit or 60000) * len(runs[0]["epochs"])
    return {
        "seeds": count,
        "seconds": secs,
        "accuracies": accs,
        "median_seconds": statistics.median(secs),
        "median_accuracy": statistics.median(accs),
        "min_accuracy": min(accs),
        "load_seconds": statistics.median(r["load_seconds"] for r in runs),
        "flops_per_image": flops,
        "gflops": flops * images / statistics.median(secs) / 1e9,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "bf16": runs[0]["bf16"],
    }


def _ablations(train, log) -> list[dict]:
    """Each row of ABLATIONS trained with seed 0: its training seconds and test accuracy."""
    log("tricks, each undone on its own (seed 0)")
    rows = []
    for label, recipe, settings, threads in ABLATIONS:
        r = train(recipe, settings=settings, threads=threads)
        rows.append(
            {
                "trick": label,
                "recipe": recipe,
                "settings": settings,
                "threads": threads,
                "seconds": _train_seconds(r),
                "accuracy": r["epochs"][-1]["accuracy"],
            }
        )
    return rows


def _peers(train, common: dict, keras_max_epochs: int, mlp_epochs: int, log) -> dict:
    """Keras 3 (where installed), scikit-learn and a DataLoader loop, each beside digitlab on the
    same recipe: their workers' results."""
    peer: dict = {}
    if keras_available():
        log("Keras 3 keras-cnn until 99.0%")
        k_cnn = run_worker("keras", {**common, "recipe": "keras-cnn", "epochs": keras_max_epochs, "until": 0.99})
        log(
            f"  {len(k_cnn['epochs'])} epochs: "
            + ", ".join(f"{e['accuracy'] * 100:.2f}%/{e['seconds']:.1f}s" for e in k_cnn["epochs"])
        )
        d_cnn = train("keras-cnn", epochs=len(k_cnn["epochs"]))
        log("Keras 3 keras-mlp-dropout")
        k_mlp = run_worker("keras", {**common, "recipe": "keras-mlp-dropout", "epochs": mlp_epochs})
        peer["keras"] = {"keras-cnn": {"keras": k_cnn, "digitlab": d_cnn}, "keras-mlp-dropout": {"keras": k_mlp}}
    else:
        peer["keras"] = None
        log("Keras 3 / TensorFlow not installed (pip install 'digitlab[peers]'): those rows are left out")
    d_mlp = train("keras-mlp-dropout", epochs=mlp_epochs)
    if peer["keras"]:
        peer["keras"]["keras-mlp-dropout"]["digitlab"] = d_mlp
    log("scikit-learn MLPClassifier")
    peer["sklearn"] = {"sklearn": run_worker("sklearn", {**common, "epochs": mlp_epochs}), "digitlab": d_mlp}
    log("conventional PyTorch DataLoader loop, fast's model")
    peer["dataloader"] = run_worker("dataloader", {**common, "epochs": 1})
    return peer


# --- the BENCHMARKS.md section ---------------------------------------------------------------------


def _ok(flag: bool) -> str:
    return "✓" if flag else "✗"


def publish(report: dict, markdown: Path) -> None:
    peak = report["peak_gflops"]
    lines = [
        START,
        f"Measured {report['date']} on {report['machine']} ({report['threads']} PyTorch threads, "
        f"torch {report['torch']}) by `{report['command']}`.",
    ]
    if report["quick"]:
        lines.append(
            "\n**--quick smoke run: 5,000 training images, 1 epoch, 1 seed. These figures check the "
            "machinery and mean nothing.**"
        )
    lines.append(
        "\nThis CPU's practical peak (2048x2048 matrix multiply): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
        + "."
    )
    lines += _fast_lines(report, peak)
    if report.get("ablations"):
        lines += _ablation_lines(report["ablations"], report["uint8"])
    peers = report.get("peers")
    if peers:
        lines += _peer_lines(peers, report.get("fast"))
    lines += _memory_lines(report, peers)
    lines.append(END)
    write_section(
        markdown, START, END, "\n".join(lines), "## Training speed against the usual tools (`digitlab bench speed`)\n\n"
    )


def _fast_lines(report: dict, peak: dict) -> list[str]:
    """A paragraph for each fast recipe run: its median time and accuracy against its target, its
    seeds, and its arithmetic rate against this CPU's peak."""
    lines = []
    for name, target_s, target_acc in (
        ("fast", TARGET_FAST_SECONDS, TARGET_FAST_ACCURACY),
        ("fast-995", TARGET_995_SECONDS, TARGET_995_ACCURACY),
    ):
        f = report.get(name)
        if not f:
            continue
        dtype = "bfloat16" if f["bf16"] and "bfloat16" in peak else "float32"
        floor = (
            f" (every seed >= {TARGET_FAST_FLOOR * 100:.1f}%: {_ok(f['min_accuracy'] >= TARGET_FAST_FLOOR)})"
            if name == "fast"
            else ""
        )
        lines += [
            f"\n**`{name}`** ({f['seeds']} seed{'s' if f['seeds'] > 1 else ''}): median "
            f"{f['median_seconds']:.2f} s of training to "
            f"{f['median_accuracy'] * 100:.2f}% (target <= {target_s:.0f} s to {target_acc * 100:.1f}%: "
            f"{_ok(f['median_seconds'] <= target_s and f['median_accuracy'] >= target_acc)}){floor}; "
            f"seeds: " + ", ".join(f"{a * 100:.2f}%/{s:.2f} s" for a, s in zip(f["accuracies"], f["seconds"])) + ". "
            f"Loading MNIST (apart): {f['load_seconds']:.2f} s. {f['flops_per_image'] / 1e6:.1f} MFLOP per training "
            f"image (forward + backward, counted by FlopCounterMode): {f['gflops']:.0f} GFLOP/s, "
            f"{f['gflops'] / peak[dtype] * 100:.0f}% of the {dtype} peak. Peak RSS {f['peak_rss_mb']:.0f} MiB."
        ]
    return lines


def _ablation_lines(ablations: list[dict], timings: dict) -> list[str]:
    """The table of fast's tricks undone one by one, and uint8 against float32 data."""
    base = ablations[0]
    lines = ["\n| `fast` with one trick undone | training s | vs `fast` | test accuracy |", "| --- | --- | --- | --- |"]
    for r in ablations:
        lines.append(
            f"| {r['trick']} | {r['seconds']:.2f} | {r['seconds'] / base['seconds']:.2f}x | "
            f"{r['accuracy'] * 100:.2f}% |"
        )
    uint8, float32 = timings["uint8"], timings["float32"]
    lines.append(
        f"\nData on the device as uint8, scaled per batch: one epoch of batch gathers "
        f"{uint8['epoch_seconds'] * 1000:.0f} ms for {uint8['megabytes']:.0f} MiB, against "
        f"{float32['epoch_seconds'] * 1000:.0f} ms for a {float32['megabytes']:.0f} MiB float32 copy."
    )
    return lines


def _peer_lines(peers: dict, fast: dict | None) -> list[str]:
    """The table of the usual tools against digitlab: seconds per epoch (Keras, scikit-learn), time
    to 99% (Keras' keras-cnn against `fast`), and one epoch of a DataLoader loop against `fast`."""
    lines = ["\n| comparison | them | digitlab | ratio (them / digitlab) | target |", "| --- | --- | --- | --- | --- |"]
    keras = peers.get("keras")
    if keras:
        for recipe, pair in keras.items():
            k, d = pair["keras"], pair["digitlab"]
            n = min(len(k["epochs"]), len(d["epochs"]))
            ks, ds = _train_seconds(k, n) / n, _train_seconds(d, n) / n
            lines.append(
                f"| `{recipe}`, seconds per epoch over {n} epoch(s) (accuracy after them) | Keras "
                f"{k['keras']} ({k['backend']}): {ks:.2f} s ({k['epochs'][n - 1]['accuracy'] * 100:.2f}%) | "
                f"{ds:.2f} s ({d['epochs'][n - 1]['accuracy'] * 100:.2f}%) | {ks / ds:.2f}x | "
                f">= 1x: {_ok(ks >= ds)} |"
            )
        k_cnn = keras["keras-cnn"]["keras"]
        k_secs, k_epochs = _time_to(k_cnn, 0.99)
        if fast and k_secs:
            lines.append(
                f"| time to 99.0%: Keras `keras-cnn` vs digitlab `fast` (median) | {k_secs:.1f} s "
                f"({k_epochs} epochs) | {fast['median_seconds']:.2f} s | "
                f"{k_secs / fast['median_seconds']:.1f}x | >= {TARGET_KERAS_RATIO:.0f}x: "
                f"{_ok(k_secs / fast['median_seconds'] >= TARGET_KERAS_RATIO)} |"
            )
        elif fast:
            best = max(e["accuracy"] for e in k_cnn["epochs"])
            lines.append(
                f"| time to 99.0%: Keras `keras-cnn` vs `fast` | not reached in {len(k_cnn['epochs'])} "
                f"epochs (best {best * 100:.2f}%) | {fast['median_seconds']:.2f} s | — | |"
            )
    else:
        lines.append("| Keras 3 | not installed (`pip install 'digitlab[peers]'`) | | | |")
    s, d = peers["sklearn"]["sklearn"], peers["sklearn"]["digitlab"]
    n = min(len(s["epochs"]), len(d["epochs"]))
    ss, dd = _train_seconds(s, n) / n, _train_seconds(d, n) / n
    lines.append(
        f"| MLP 784-512-256-10, seconds per epoch over {n} epoch(s): scikit-learn MLPClassifier "
        f"(no dropout) vs `keras-mlp-dropout` | {ss:.2f} s ({s['epochs'][n - 1]['accuracy'] * 100:.2f}%) | "
        f"{dd:.2f} s ({d['epochs'][n - 1]['accuracy'] * 100:.2f}%) | {ss / dd:.2f}x | |"
    )
    loop = peers["dataloader"]
    if fast:
        first = fast["seconds"][0]
        lines.append(
            f"| one epoch of `fast`'s model: PyTorch DataLoader loop (pytorch/examples style, fp32, "
            f"NCHW) vs `fast` (seed 0) | {_train_seconds(loop):.2f} s "
            f"({loop['epochs'][-1]['accuracy'] * 100:.2f}%) | {first:.2f} s "
            f"({fast['accuracies'][0] * 100:.2f}%) | {_train_seconds(loop) / first:.1f}x | |"
        )
    return lines


def _memory_lines(report: dict, peers: dict | None) -> list[str]:
    """The table of peak resident memory: each training process, and the service."""
    lines = ["\n| peak resident memory (RSS) | MiB |", "| --- | --- |"]
    for name in ("fast", "fast-995"):
        if report.get(name):
            lines.append(f"| training `{name}` (whole process, MNIST loaded) | {report[name]['peak_rss_mb']:.0f} |")
    if peers:
        if peers.get("keras"):
            for recipe, pair in peers["keras"].items():
                lines.append(
                    f"| training `{recipe}`: Keras / digitlab | {pair['keras']['peak_rss_mb']:.0f} / "
                    f"{pair['digitlab']['peak_rss_mb']:.0f} |"
                )
        lines.append(f"| scikit-learn MLPClassifier training | {peers['sklearn']['sklearn']['peak_rss_mb']:.0f} |")
        lines.append(f"| PyTorch DataLoader loop | {peers['dataloader']['peak_rss_mb']:.0f} |")
    if report["service"]["peak_rss_mb"] is not None:
        lines.append(
            f"| `digitlab serve` after {report['service']['requests']} predictions "
            f"| {report['service']['peak_rss_mb']:.0f} |"
        )
    return lines


def main(argv: list[str]) -> int:
    kind, spec = argv[0], json.loads(argv[1])
    result = WORKERS[kind](spec)
    result["peak_rss_mb"] = peak_rss_self_mb()
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
