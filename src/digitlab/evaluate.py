"""Evaluation: logits of a model on whole in-memory datasets, the metrics computed from them, and
the files that report them.

`predict_logits` runs a network over uint8 images in batches; `compute_metrics` turns logits and
labels into a `Metrics` (accuracy, mean cross-entropy, confusion matrix, per-class precision,
recall and F1, and scikit-learn's classification report); `fit_temperature` calibrates logits.
None of them loads a model or writes a file. `evaluate_run` does both for a loaded model: it
measures it on a split of its dataset and writes the report, the plots and the metrics file.

Below inference.py and onnx_runtime.py (which check exports against `predict_logits`): a model
comes here loaded, and is used only through its config, path, image shape and logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import plots
from .checkpoint import CONFUSION, CURVES, ERRORS, HISTORY, METRICS, REPORT, SAMPLES, SHIPPED, split_file
from .data import Dataset, dataset_names, load_dataset, split_validation
from .data.folders import load_sources
from .errors import ConfigError
from .files import read_json, write_json, write_text
from .models import evaluating
from .recipes import held_out_seed


@dataclass(eq=False)  # eq=False: `==` on numpy fields would be ambiguous rather than useful
class Metrics:
    """Everything measured on one labelled set, sample arrays included (see `to_json` for a summary).

    `per_class` maps each class name to its precision, recall, f1 (0..1) and support (count);
    `averages` holds scikit-learn's 'macro avg' and 'weighted avg' rows of the same four keys.
    """

    accuracy: float  # fraction correct, 0..1
    loss: float  # mean cross-entropy in nats
    labels: np.ndarray  # (N,) int64, true classes
    predictions: np.ndarray  # (N,) int64, argmax of the logits
    probabilities: np.ndarray  # (N, K) float32, softmax of the logits
    class_names: tuple[str, ...]  # (K,)
    confusion: np.ndarray  # (K, K) int64, rows = true class, columns = predicted class
    per_class: dict[str, dict[str, float]]
    averages: dict[str, dict[str, float]]
    report: str  # classification report text, as scikit-learn prints it

    @property
    def confidences(self) -> np.ndarray:
        """(N,) float32: the probability the model gave its own prediction."""
        return self.probabilities[np.arange(len(self.predictions)), self.predictions]

    @property
    def errors(self) -> np.ndarray:
        """Indices of misclassified samples, the most confidently wrong first (a gallery's order)."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        # A stable sort keeps equally confident errors in dataset order, so galleries are reproducible.
        return wrong[np.argsort(-self.confidences[wrong], kind="stable")]

    def to_json(self) -> dict:
        """A small JSON-serialisable summary for metrics.json: no per-sample arrays."""
        return {
            "n": int(len(self.labels)),
            "accuracy": self.accuracy,
            "loss": self.loss,
            "class_names": list(self.class_names),
            "per_class": self.per_class,
            "macro_avg": self.averages["macro avg"],
            "weighted_avg": self.averages["weighted avg"],
            "confusion": self.confusion.tolist(),
        }


def _as_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A numpy view of a tensor (on any device), an array or a list."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64; subtracting the row maximum keeps exp() from overflowing."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _score_row(row: dict) -> dict[str, float]:
    """One row of scikit-learn's report dict with plain Python numbers and 'f1' for 'f1-score'."""
    return {
        "precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "f1": float(row["f1-score"]),
        "support": int(row["support"]),
    }


def compute_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str],
) -> Metrics:
    """Metrics of (N, K) logits against (N,) integer labels for the K classes named in order.

    Every class gets a row in the confusion matrix and the report even when absent from the
    labels and predictions (its precision, recall and F1 are then 0), so matrices of different
    runs on the same dataset always line up.
    """
    logits = _as_numpy(logits)
    labels = _as_numpy(labels).astype(np.int64)
    class_names = tuple(str(name) for name in class_names)
    k = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise ConfigError(
            f"logits of shape {tuple(logits.shape)} do not match {k} class names: "
            f"the model's output count must equal the dataset's number of classes"
        )
    if labels.shape != (logits.shape[0],):
        raise ConfigError(f"{logits.shape[0]} logits but labels of shape {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ConfigError("no samples to evaluate")
    if labels.min() < 0 or labels.max() >= k:
        raise ConfigError(f"labels must lie in 0..{k - 1}, found {labels.min()}..{labels.max()}")

    log_probs = _log_softmax(logits)  # (N, K) float64
    predictions = log_probs.argmax(axis=1).astype(np.int64)
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())

    # imported here: start-up time (1.2 s on 2 cores), which predicting, reading and serving do not need
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(k))
    # digits=4: MNIST models differ in the second decimal of a percent, which 2 digits would hide.
    report_args = dict(labels=classes, target_names=class_names, zero_division=0, digits=4)
    rows = classification_report(labels, predictions, output_dict=True, **report_args)
    return Metrics(
        accuracy=float((predictions == labels).mean()),
        loss=loss,
        labels=labels,
        predictions=predictions,
        probabilities=np.exp(log_probs).astype(np.float32),
        class_names=class_names,
        confusion=confusion_matrix(labels, predictions, labels=classes).astype(np.int64),
        per_class={name: _score_row(rows[name]) for name in class_names},
        averages={avg: _score_row(rows[avg]) for avg in ("macro avg", "weighted avg")},
        report=classification_report(labels, predictions, **report_args),
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; CPU for a model that has neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict_logits(
    model: torch.nn.Module,
    images_uint8: torch.Tensor,
    batch_size: int = 2048,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(N, K) float32 logits on the CPU for (N, C, H, W) uint8 images, in eval mode and without grad.

    Each batch is moved to `device` (default: the model's own) as uint8 and only there scaled
    to float32 in [0, 1]: a quarter of the bytes of a float copy cross to the accelerator. The
    model's normalisation, if any, is its own business. Every submodule's train/eval mode is
    restored afterwards, so a mid-training evaluation leaves e.g. frozen BatchNorm layers frozen.
    """
    if images_uint8.dtype != torch.uint8:
        raise ConfigError(f"predict_logits takes uint8 images (0..255), got {images_uint8.dtype}")
    if images_uint8.ndim != 4:
        raise ConfigError(f"images must be (N, C, H, W), got shape {tuple(images_uint8.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)

    with evaluating(model):
        with torch.no_grad():
            logits = [
                model(batch.to(device).float() / 255).float().cpu()
                for batch in images_uint8.split(batch_size)  # an empty set gives one empty batch
            ]
    return torch.cat(logits)


def fit_temperature(logits: torch.Tensor | np.ndarray, labels) -> float:
    """The temperature T minimising the mean cross-entropy of softmax(logits / T) (Guo et al., 2017).

    Scaling logits changes no prediction, only how sure the probabilities say the model is:
    label smoothing, for one, trains a model to stay below ~0.9 on every image, so a
    threshold on its raw probabilities would doubt digits it reads correctly. Golden-section
    search over log T in [1/20, 20]; the loss is convex in 1/T.
    """
    z = torch.as_tensor(_as_numpy(logits), dtype=torch.float64)
    y = torch.as_tensor(_as_numpy(labels), dtype=torch.long)

    def loss(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / np.exp(log_t), y))

    lo, hi = -np.log(20.0), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


# --- a run evaluated: its report, plots and metrics file -------------------------------------------

SHIPPED_OUT = Path("runs")  # a shipped model's evaluation goes to runs/evaluate-NAME/, as train's runs go to runs/


def evaluation_folder(run: str | Path, out: str | Path | None = None) -> Path:
    """Where evaluating the model at `run` (a run directory, or an .onnx file) writes its files:
    `out` when given, else the run directory -- except a model shipped in the package (SHIPPED),
    whose folder is never written into: runs/evaluate-NAME/ in the working directory then.
    ConfigError for an .onnx file without `out`, and for an `out` inside SHIPPED."""
    shipped = SHIPPED.resolve()
    if out is not None:
        if Path(out).resolve().is_relative_to(shipped):
            raise ConfigError(
                f"{out} is inside the models shipped with digitlab ({SHIPPED}), which evaluation never "
                "writes into: name another folder (--out DIR)"
            )
        return Path(out)
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"{run} is a file, not a run directory: say where the report and plots go (--out DIR)")
    where = run.resolve()
    if where != shipped and where.is_relative_to(shipped):
        return SHIPPED_OUT / f"evaluate-{where.relative_to(shipped).parts[0]}"
    return run


def evaluate_run(
    model,
    split: str = "test",
    *,
    out: str | Path | None = None,
    dataset: Dataset | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> Metrics:
    """Measure a loaded model (an inference.Model) on a split of its dataset -- 'test', 'train', or
    'val' (the images a --val-split run held out of training) -- and write what it measured.

    Writes into `out` (default: the model's run directory) metrics[-SPLIT].json, report[-SPLIT].txt,
    confusion[-SPLIT].png, errors[-SPLIT].png, samples[-SPLIT].png and, from history.json,
    curves.png. The test split keeps the plain names DESIGN.md lists. A model loaded from an .onnx
    file has no run directory to write into, so `out` is then required; a model shipped in the
    package writes into runs/evaluate-NAME/ instead (`evaluation_folder`). dataset: the loaded
    dataset, else the run's own is loaded again from its config (`run_dataset`, from data_dir).
    """
    folder = evaluation_folder(model.path, out)
    if dataset is None:
        dataset = run_dataset(model.config, data_dir=data_dir, progress=progress)
    if tuple(dataset.image_shape) != model.image_shape:
        raise ConfigError(f"the model takes {model.image_shape} images, {dataset.name} has {dataset.image_shape}")
    images, labels = _split_images(model, dataset, split)
    logits = model.logits(images)
    metrics = compute_metrics(logits, labels, dataset.classes)
    calibrated = _cross_entropy(np.asarray(logits) / model.temperature, metrics.labels)
    _write_evaluation(folder, model, dataset, split, images, metrics, calibrated)
    return metrics


# train.py's words in config.json's train.test for a run tested on the part of its data it held out
HELD_OUT_TEST = "held-out training images"


def run_dataset(config: dict, data_dir: str | Path | None = None, progress: bool = True) -> Dataset:
    """The dataset a run trained and was tested on, loaded again from its config.json as training
    loaded it: the sources it recorded in train.data (--data: dataset names, folders and CSVs, joined
    by data.folders.load_sources), else the dataset it names. Where train.test says the run tested
    on its held-out training images, the test split is that part again, rebuilt from the run's
    held-out seed, val_split and subset (split_validation), as train.py held it out."""
    train = config.get("train") or {}
    sources = train.get("data") or []
    if not (isinstance(sources, list) and all(type(s) is str for s in sources)):
        raise ConfigError(f"config.json's train.data must be a list of dataset names and paths, not {sources!r:.60}")
    if not sources:
        return load_dataset(config["dataset"]["name"], data_dir=data_dir, progress=progress)
    dataset = load_sources(
        sources, dataset_names(), lambda name: load_dataset(name, data_dir=data_dir, progress=progress)
    )
    if train.get("test") == HELD_OUT_TEST:
        _, _, images, labels = split_validation(
            dataset, train.get("val_split") or 0.0, train.get("subset"), held_out_seed(config["recipe"])
        )
        if images is None:
            raise ConfigError("config.json says the run tested on held-out training images, but its val_split is 0")
        dataset = replace(dataset, test_images=images, test_labels=labels)
    return dataset


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy in nats of (N, K) logits against (N,) labels, as compute_metrics counts it."""
    return float(-_log_softmax(logits)[np.arange(len(labels)), labels].mean())


def loss_notes(config: dict, temperature: float) -> list[str]:
    """metrics.json's "notes": what its loss is, and why history.json's loss and val_loss differ from it
    and from each other (as train.py computes them: train_epoch and evaluate_loss_accuracy)."""
    smoothing = float(config.get("recipe", {}).get("label_smoothing", 0.0))
    notes = [
        "loss: the mean cross-entropy of the model's logits on this split, without label smoothing and "
        "without the calibration temperature (calibrated_loss: with it)"
    ]
    objective = "cross-entropy" + (f" with label smoothing {smoothing:g}" if smoothing else "")
    notes.append(
        f"history.json's loss is the training objective ({objective}) averaged over each epoch's batches "
        "while the weights changed, in training mode (with the recipe's dropout and augmentation, if any); its "
        "val_loss is the same objective on the validation images after the epoch, in evaluation mode"
    )
    if smoothing:
        k = len(config.get("dataset", {}).get("classes", ())) or 10
        floor = -(1 - smoothing + smoothing / k) * np.log(1 - smoothing + smoothing / k) - (k - 1) * (
            smoothing / k
        ) * np.log(smoothing / k)
        notes.append(
            f"label smoothing {smoothing:g} puts the entropy of the smoothed targets into both history losses: "
            f"they cannot fall below {floor:.3f} nats ({k} classes) even with every image right, while this "
            "loss can approach 0; that, not overfitting, is why val_loss stays well above it"
        )
    calibration = config.get("calibration")
    if calibration is None:
        notes.append("no calibration recorded: probabilities are the plain softmax of the logits")
    elif not calibration.get("fitted_on"):
        notes.append(calibration.get("note", "not calibrated: probabilities are the plain softmax of the logits"))
    else:
        notes.append(
            f"probabilities are softmax(logits / {temperature:.4f}), the temperature fitted on "
            f"{calibration['fitted_on']}; it changes no prediction"
        )
    return notes


def _split_images(model, dataset: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of `split`: 'val' is the held-out part of the training set, rebuilt
    from the run's held-out seed as training split it."""
    if split != "val":
        return dataset.split(split)
    train_config = model.config["train"]
    if not train_config.get("val_split"):
        raise ConfigError(f"{model.path} was trained without --val-split: it has no validation split")
    _, _, images, labels = split_validation(
        dataset, train_config["val_split"], train_config["subset"], held_out_seed(model.config["recipe"])
    )
    return images, labels


def _write_evaluation(
    folder: Path, model, dataset: Dataset, split: str, images: torch.Tensor, metrics: Metrics, calibrated_loss: float
) -> None:
    """The report, the plots and, last, the metrics file of one evaluation, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = model.config["recipe"]["name"]
    header = f"{name} on {dataset.name} {split} ({len(metrics.labels)} images)\n"
    write_text(
        folder / split_file(REPORT, split),
        header + f"accuracy {metrics.accuracy:.4f}  loss {metrics.loss:.4f}\n\n" + metrics.report + "\n",
    )
    plots.plot_confusion(
        metrics.confusion,
        dataset.classes,
        folder / split_file(CONFUSION, split),
        title=f"{name} — {dataset.name} {split}",
    )
    wrong = metrics.errors[:36]
    plots.plot_errors(
        images[wrong],
        metrics.labels[wrong],
        metrics.predictions[wrong],
        metrics.confidences[wrong],
        dataset.classes,
        folder / split_file(ERRORS, split),
    )
    plots.plot_samples(
        images, metrics.labels, dataset.classes, folder / split_file(SAMPLES, split), predictions=metrics.predictions
    )
    history_path = Path(model.path) / HISTORY
    if history_path.is_file():
        history = read_json(history_path, allow_nan=True)  # a diverged run's losses are NaN
        if history:
            plots.plot_curves(history, folder / CURVES)
    # Last: a run directory with metrics.json has been evaluated whole (train.plan_resume relies on it).
    write_json(
        folder / split_file(METRICS, split),
        {
            "run": str(model.path),
            "dataset": dataset.name,
            "split": split,
            **metrics.to_json(),
            "temperature": model.temperature,
            "calibrated_loss": calibrated_loss,
            "notes": loss_notes(model.config, model.temperature),
        },
    )


# --- line models: strings read from lines of writing ------------------------------------------------


def line_texts(model: torch.nn.Module, lines: list, batch_size: int = 64) -> tuple[list[str], float]:
    """What a line model reads greedily in each of `lines` ((input (32, W), digits) pairs, or bare
    inputs), and the mean CTC loss over those with digits: lines of similar width batched together."""
    from .data.lines import BLANK, line_batch
    from .models.ctc import greedy_decode
    from .preprocess import LINE_STRIDE

    device = _model_device(model)
    pairs = [line if isinstance(line, tuple) else (line, "") for line in lines]
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0].shape[1])
    texts: list[str] = [""] * len(pairs)
    loss_sum, counted = 0.0, 0
    with evaluating(model):
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = line_batch([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk])
                logits = model(batch.images.to(device)).float().cpu()
                log_probs = logits.log_softmax(2)
                frames = batch.widths // LINE_STRIDE
                for k, i in enumerate(chunk):
                    probs = log_probs[k, : frames[k]].exp().numpy()
                    texts[i] = "".join(str(c.label) for c in greedy_decode(probs))
                scored = batch.target_lengths > 0
                if scored.any():
                    losses = F.ctc_loss(
                        log_probs.transpose(0, 1),
                        batch.targets,
                        frames,
                        batch.target_lengths,
                        blank=BLANK,
                        reduction="none",
                        zero_infinity=True,
                    )
                    loss_sum += float(losses[scored].sum())
                    counted += int(scored.sum())
    return texts, loss_sum / max(1, counted)


def line_loss_accuracy(model: torch.nn.Module, lines: list) -> tuple[float, float]:
    """Mean CTC loss and the share of lines read exactly (greedy decoding): a line run's val_loss
    and val_accuracy."""
    texts, loss = line_texts(model, lines)
    return loss, sum(text == truth for text, (_, truth) in zip(texts, lines, strict=True)) / max(1, len(lines))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def digits_correct(label: str, text: str) -> int:
    """Digits of `label` read right in `text`: its length less the edit distance, at least 0
    (a missed, extra or wrong digit, or a '?', each cost one)."""
    return max(0, len(label) - edit_distance(label, text))


def digit_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """Over (label, text) pairs: digits read right / digits in the labels (0 with no digits)."""
    right = total = 0
    for label, text in pairs:
        right += digits_correct(label, text)
        total += len(label)
    return right / total if total else 0.0


def string_metrics(pairs: Sequence[tuple[str, str]]) -> dict:
    """strings_exact and digit_accuracy of (label, text) pairs, with the counts behind them."""
    return {
        "strings_exact": sum(label == text for label, text in pairs) / len(pairs) if pairs else 0.0,
        "digit_accuracy": digit_accuracy(pairs),
        "strings": len(pairs),
        "digits": sum(len(label) for label, _ in pairs),
    }


def by_length(pairs: Sequence[tuple[str, str]]) -> dict[str, dict]:
    """strings_exact per label length: {"4": {"strings": n, "strings_exact": share}, ...}."""
    counts: dict[int, list[int]] = {}
    for label, text in pairs:
        entry = counts.setdefault(len(label), [0, 0])
        entry[0] += label == text
        entry[1] += 1
    return {str(k): {"strings": n, "strings_exact": ok / n} for k, (ok, n) in sorted(counts.items())}


@dataclass
class LineMetrics:
    """How a line model reads a split's lines: strings read exactly (`accuracy`), digit accuracy, the
    mean CTC loss, strings exact per length, and each line's truth and reading."""

    accuracy: float
    digit_accuracy: float
    loss: float
    by_length: dict[str, dict]
    labels: list[str]  # the truths
    reads: list[str]

    @property
    def report(self) -> str:
        rows = "\n".join(
            f"  {length:>6}  {entry['strings']:>5}  {entry['strings_exact'] * 100:6.2f}%"
            for length, entry in self.by_length.items()
        )
        return (
            f"strings exact {self.accuracy * 100:.2f}%  digit accuracy {self.digit_accuracy * 100:.2f}%\n\n"
            f"  digits  lines  exact\n{rows}"
        )


def evaluate_line_run(
    model, split: str = "test", *, out: str | Path | None = None, data_dir: str | Path | None = None
) -> LineMetrics:
    """Measure a line model (an inference.LineModel) on its test lines -- ORAND-CAR-A's dev split,
    for reporting only -- read as `digitlab read --method sequence` reads a line (beam search), and
    write metrics[-SPLIT].json, report[-SPLIT].txt, errors[-SPLIT].png (misread lines) and curves.png
    into `out`, else the run directory (`evaluation_folder`: runs/evaluate-NAME/ for a shipped model)."""
    from .data.lines import line_batch, real_lines
    from .data.orand import orand_strings
    from .models.ctc import beam_decode

    if split != "test":
        raise ConfigError(f"a line model is evaluated on its test lines (ORAND-CAR-A's dev split), not {split!r}")
    folder = evaluation_folder(model.path, out)
    lines = real_lines(orand_strings("dev", data_dir))
    inputs, truths = [line for line, _ in lines], [text for _, text in lines]
    reads = ["".join(model.classes[c] for c in beam_decode(p)[0]) for p in model.frame_probabilities(inputs)]
    pairs = list(zip(truths, reads, strict=True))
    scored = string_metrics(pairs)
    batch = line_batch(inputs, truths)
    loss = 0.0
    if model.module is not None:
        with torch.no_grad():
            log_probs = model.module(batch.images).float().log_softmax(2)
        loss = float(
            F.ctc_loss(
                log_probs.transpose(0, 1),
                batch.targets,
                batch.widths // 4,
                batch.target_lengths,
                blank=len(model.classes),
                zero_infinity=True,
            )
        )
    metrics = LineMetrics(scored["strings_exact"], scored["digit_accuracy"], loss, by_length(pairs), truths, reads)
    folder.mkdir(parents=True, exist_ok=True)
    name = model.config["recipe"]["name"]
    wrong = [i for i, (t, r) in enumerate(pairs) if t != r]
    write_text(
        folder / split_file(REPORT, split),
        f"{name} on ORAND-CAR-A dev lines ({len(truths)}; reporting only)\n{metrics.report}\n\nmisread:\n"
        + "".join(f"  {truths[i]} read {reads[i] or '(nothing)'}\n" for i in wrong),
    )
    plots.plot_line_errors(
        [inputs[i] for i in wrong],
        [truths[i] for i in wrong],
        [reads[i] for i in wrong],
        folder / split_file(ERRORS, split),
    )
    history_path = Path(model.path) / HISTORY
    if history_path.is_file():
        history = read_json(history_path, allow_nan=True)
        if history:
            plots.plot_curves(history, folder / CURVES)
    write_json(
        folder / split_file(METRICS, split),
        {
            "run": str(model.path),
            "dataset": "orand-car-a dev lines",
            "split": split,
            "n": len(truths),
            "accuracy": metrics.accuracy,
            "strings_exact": metrics.accuracy,
            "digit_accuracy": metrics.digit_accuracy,
            "loss": metrics.loss,
            "by_length": metrics.by_length,
        },
    )
    return metrics
