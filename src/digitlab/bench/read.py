"""`digitlab bench read`: how well digitlab reads real handwriting, beside Tesseract.

    from digitlab.bench.read import bench_read
    results = bench_read()            # DIGITLAB_DATA/real-digits, the bundled model

Four sets, each measured with digitlab and (when the `tesseract` binary is installed) with
Tesseract on the same images, timed per image:

- usps: USPS test digits (real-digits subset usps-test), 16x16, one digit each:
  `digitlab.predict` accuracy; Tesseract `--psm 10` (one character) on the digit upscaled
  2x (on 300 of them it read 35% at 1x, 30% at 2x, 20% at 4x and 8x: size is not what it lacks).
- orand: ORAND-CAR-A cheque amounts (orand-car-a-train), one string each: `digitlab.read`,
  its whole text with line breaks removed, against the label; Tesseract `--psm 7` (one line).
- photos: phone and webcam photos (photo, photo-webcam): as orand, lines joined without a
  separator (a column of one digit per line reads top to bottom as one string); `--psm 6`.
- synthetic: `data.synth.make_pages` pages of MNIST test digits, scored per line of writing
  (each true line against the read line whose box overlaps it most); `--psm 6`.

Metrics: strings exact (the read string equals the label) and digit accuracy
(`digit_accuracy`: per string, the label's length less the edit distance, at least 0, summed
over strings and divided by the labels' digits). Punctuation read ('.', ',', '-') is removed
first, as the labels leave it out; a '?' (a mark or an unsure digit) is a wrong character like
any other. Tesseract runs with `-l eng` and `tessedit_char_whitelist=0123456789`.

The results go to a JSON file (atomically) and to a marked section of BENCHMARKS.md, which is
rewritten in place; the rest of that file is kept as it is.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import cv2
import torch
from tqdm.auto import tqdm

from ..api import BUNDLED_MODEL, Model, load_dataset, load_model, predict, read
from ..data import resolve_data_dir
from ..data.synth import make_pages
from ..errors import ConfigError, DataError, DatasetNotFoundError
from ..files import write_json
from ..read import PUNCTUATION, UNSURE, UNSURE_BELOW
from .common import machine, write_section

START, END = "<!-- bench read: begin -->", "<!-- bench read: end -->"
HEADING = "## Reading real handwriting (`digitlab bench read`)"
REAL_DIGITS = "real-digits"
LABELS = "labels.csv"

TESSERACT = "tesseract"
TESSERACT_TIMEOUT = 120  # seconds for one image: far more than any needs
USPS_UPSCALE, USPS_PAD = 2, 8  # 16x16 -> 32x32 on an 8 px white margin (4x and 8x read fewer)
ERRORS_KEPT = 100  # per set and reader, in the JSON: the first misreadings, to look at


@dataclass(frozen=True)
class SetSpec:
    key: str
    title: str
    subsets: tuple[str, ...]  # real-digits subsets (none: generated)
    unit: str  # what n counts
    psm: int  # Tesseract page segmentation mode
    targets: dict[str, float]  # metric -> the least digitlab should reach


SETS = (
    SetSpec("usps", "USPS test digits", ("usps-test",), "images", 10, {"accuracy": 0.95}),
    SetSpec("orand", "ORAND-CAR-A cheque amounts", ("orand-car-a-train",), "images", 7, {"strings_exact": 0.80}),
    SetSpec("photos", "Photos of digit strings", ("photo", "photo-webcam"), "images", 6, {"digit_accuracy": 0.95}),
    SetSpec(
        "synthetic",
        "Synthetic pages of MNIST test digits",
        (),
        "pages",
        6,
        {"digit_accuracy": 0.98, "strings_exact": 0.95},
    ),
)
METRIC_NAMES = {"accuracy": "accuracy", "strings_exact": "strings exact", "digit_accuracy": "digit accuracy"}


# --- metrics ------------------------------------------------------------------------------


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


# --- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    file: str  # relative to real-digits/
    label: str
    subset: str


def load_real_digits(data_dir=None) -> tuple[Path, dict[str, list[Sample]]]:
    """real-digits/ in the data directory and its labelled images by subset (labels.csv order)."""
    root = resolve_data_dir(data_dir)
    folder = root / REAL_DIGITS
    if not (folder / LABELS).is_file():
        raise DatasetNotFoundError(
            f"the real-digits benchmark data is not in {folder} (expected {folder / LABELS} and the images it "
            f"lists): point --data-dir or DIGITLAB_DATA at the folder that holds {REAL_DIGITS}/"
        )
    by_subset: dict[str, list[Sample]] = {}
    with open(folder / LABELS, newline="") as f:
        reader = csv.DictReader(f)
        if not {"file", "label", "subset"} <= set(reader.fieldnames or ()):
            raise DataError(f"{folder / LABELS} lacks the columns file, label and subset")
        for row in reader:
            label = row["label"].strip()
            if not label.isdigit():
                raise DataError(f"{folder / LABELS}: label {label!r} of {row['file']} is not a digit string")
            if not (folder / row["file"]).is_file():
                raise DataError(f"{folder / LABELS} lists {row['file']}, which is not in {folder}")
            by_subset.setdefault(row["subset"], []).append(Sample(row["file"], label, row["subset"]))
    return folder, by_subset


# --- Tesseract ----------------------------------------------------------------------------


def tesseract_version() -> str | None:
    """The installed Tesseract's version ('5.3.0'), or None when the binary is not on PATH."""
    binary = shutil.which(TESSERACT)
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"tesseract\s+v?(\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown version"


def _tesseract_tsv(
    image: Path, psm: int, failures: list[str] | None = None
) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Tesseract's lines in an image, digits only: [(text, (x, y, w, h))] in its reading order.

    A run that fails or times out reads nothing; its reason is appended to `failures`.
    """
    command = [
        TESSERACT,
        str(image),
        "stdout",
        "--psm",
        str(psm),
        "-l",
        "eng",
        "-c",
        "tessedit_char_whitelist=0123456789",
        "tsv",
    ]
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # one image at a time, one thread
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TESSERACT_TIMEOUT, env=env)
        error = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
    except (OSError, subprocess.SubprocessError) as err:
        error = str(err)
    if error is not None:
        if failures is not None:
            failures.append(f"{image.name}: {error}")
        return []
    lines: dict[tuple[str, ...], list] = {}
    order: list[tuple[str, ...]] = []
    for row in done.stdout.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or cells[0] not in ("4", "5"):
            continue
        key = tuple(cells[1:5])  # page, block, paragraph, line
        if key not in lines:
            lines[key] = [(int(cells[6]), int(cells[7]), int(cells[8]), int(cells[9])), ""]
            order.append(key)
        if cells[0] == "5":
            lines[key][1] += re.sub(r"\D", "", cells[11])
    return [(lines[k][1], lines[k][0]) for k in order if lines[k][1]]


# --- reading one set ----------------------------------------------------------------------


def _timed(items: Sequence, work: Callable, desc: str, progress: bool, unit: str = "img") -> tuple[list, float]:
    """[work(item)] and the wall seconds they took, with a progress bar."""
    out = []
    started = time.perf_counter()
    for item in tqdm(items, desc=desc, unit=unit, disable=not progress, leave=False):
        out.append(work(item))
    return out, time.perf_counter() - started


def _result(
    pairs: list[tuple[str, str | tuple[str, str]]], names: list[str], seconds: float, n_images: int, exact_key: str
) -> dict:
    """A reader's figures on one set from (label, text) pairs (text may be (text, text without
    marks), which adds strings_exact_without_marks: how many strings only marks kept from being exact)."""
    unmarked = None
    if pairs and isinstance(pairs[0][1], tuple):
        unmarked = [(label, text[1]) for label, text in pairs]
        pairs = [(label, text[0]) for label, text in pairs]
    metrics = string_metrics(pairs)
    if exact_key == "accuracy":  # one digit per image: the exact match is the accuracy
        metrics = {"accuracy": metrics["strings_exact"], "images": len(pairs)}
    if unmarked is not None and exact_key != "accuracy":
        metrics["strings_exact_without_marks"] = string_metrics(unmarked)["strings_exact"]
    errors = [
        {"item": name, "label": label, "read": text} for name, (label, text) in zip(names, pairs) if label != text
    ]
    metrics.update(
        {
            "unsure": sum(text.count("?") for _, text in pairs),
            "seconds": seconds,
            "seconds_per_image": seconds / n_images if n_images else 0.0,
            "errors": errors[:ERRORS_KEPT],
            "error_count": len(errors),
        }
    )
    return metrics


def _match_lines(
    truth_boxes: list[tuple[int, int, int, int]], read: list[tuple[str, tuple[int, int, int, int]]]
) -> list[str]:
    """For each true line (its box), the text of the read line that overlaps it most (IoU,
    each read line used once; '' for a true line no read line overlaps)."""

    def iou(a, b) -> float:
        w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
        h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    pairs = sorted(
        ((iou(t, box), i, j) for i, t in enumerate(truth_boxes) for j, (_, box) in enumerate(read)), reverse=True
    )
    texts = [""] * len(truth_boxes)
    used_truth, used_read = set(), set()
    for overlap, i, j in pairs:
        if overlap <= 0:
            break
        if i in used_truth or j in used_read:
            continue
        texts[i] = read[j][0]
        used_truth.add(i)
        used_read.add(j)
    return texts


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0


def _usps_for_tesseract(path: Path, out: Path) -> Path:
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(grey, None, fx=USPS_UPSCALE, fy=USPS_UPSCALE, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, *(USPS_PAD,) * 4, cv2.BORDER_CONSTANT, value=255)
    cv2.imwrite(str(out), big)
    return out


# --- the benchmark ------------------------------------------------------------------------

NO_PUNCTUATION = str.maketrans("", "", "".join(PUNCTUATION))


@dataclass(frozen=True)
class Readers:
    """What every set is read with: digitlab's model and unsure threshold, and whether Tesseract
    reads it too (the images it is given are written to `scratch`); `progress` shows bars."""

    model: Model
    unsure_below: float
    tesseract: bool
    scratch: Path
    progress: bool


def bench_read(
    data_dir=None,
    model=None,
    markdown: Path = Path("BENCHMARKS.md"),
    results: Path = Path("benchmarks/results/read.json"),
    synthetic_pages: int = 200,
    seed: int = 0,
    unsure_below: float | None = None,
    tesseract: bool = True,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Measure reading on real handwriting (and synthetic pages), write `results` (JSON) and the
    `bench read` section of `markdown`, and return the results.

    data_dir: holds real-digits/ and mnist/ (default: DIGITLAB_DATA, as every command);
    model: a Model or run directory (default: the bundled model); unsure_below: read.py's
    default when None; tesseract: also run Tesseract where it is installed; limit: at most
    this many images (pages) per set, for a quick run.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if synthetic_pages < 0:
        raise ConfigError(f"synthetic_pages must be 0 or more, got {synthetic_pages}")
    unsure = UNSURE_BELOW if unsure_below is None else float(unsure_below)
    if not 0 <= unsure <= 1:
        raise ConfigError(f"unsure_below must lie in [0, 1], got {unsure}")
    folder, by_subset = load_real_digits(data_dir)
    model = model if isinstance(model, Model) else load_model(model)
    version = tesseract_version()
    tesseract_state = "not run" if not tesseract else ("installed" if version else "not installed")

    with tempfile.TemporaryDirectory(prefix="digitlab-bench-read-") as tmp:
        readers = Readers(model, unsure, tesseract and version is not None, Path(tmp), progress)
        sets = _read_sets(folder, by_subset, readers, data_dir, synthetic_pages, seed, limit)

    model_path = _display_path(model.path) if model.path is not None else None
    report = {
        "command": _command(data_dir, model, markdown, results, synthetic_pages, seed, unsure_below, tesseract, limit),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": {"recipe": model.config["recipe"]["name"], "path": model_path},
        "unsure_below": unsure,
        "data_dir": str(folder.parent),
        "limit": limit,
        "tesseract": {
            "state": tesseract_state,
            "version": version,
            "options": "`-l eng -c tessedit_char_whitelist=0123456789`, `--psm` 10 (USPS, each digit "
            f"upscaled {USPS_UPSCALE}x onto a {USPS_PAD} px white margin), 7 (cheques), 6 "
            "(photos, pages), OMP_THREAD_LIMIT=1, one process per image",
        },
        "sets": sets,
    }
    write_json(Path(results), report)
    publish(report, Path(markdown))
    return report


def _read_sets(
    folder: Path,
    by_subset: dict[str, list[Sample]],
    readers: Readers,
    data_dir,
    synthetic_pages: int,
    seed: int,
    limit: int | None,
) -> dict[str, dict]:
    """Every set of SETS read (at most `limit` images or pages of each), by key: what it is, how
    many it has, and each reader's figures (None for a set with nothing to read)."""
    sets: dict[str, dict] = {}
    for spec in SETS:
        entry: dict = {
            "title": spec.title,
            "subsets": list(spec.subsets),
            "unit": spec.unit,
            "targets": spec.targets,
            "tesseract_psm": spec.psm,
        }
        if spec.key == "synthetic":
            n = synthetic_pages if limit is None else min(synthetic_pages, limit)
            entry.update(n=n, seed=seed)
            if n:
                mnist = load_dataset("mnist", data_dir=data_dir, progress=readers.progress)
                pages = make_pages(n, seed, mnist.test_images[:, 0].numpy(), mnist.test_labels.numpy())
                entry.update(_read_pages(spec, pages, readers))
        else:
            samples = [s for subset in spec.subsets for s in by_subset.get(subset, [])]
            samples = samples[:limit] if limit is not None else samples
            entry["n"] = len(samples)
            if samples:
                entry.update(_read_samples(spec, folder, samples, readers))
        if entry["n"] == 0:
            entry.update(digitlab=None, tesseract=None)
        sets[spec.key] = entry
        if readers.progress and entry.get("digitlab"):
            _print_set(spec.key, entry)
    return sets


def _texts(reading) -> tuple[list[str], list[str]]:
    """Each line's digits and '?'s, without the punctuation read ('.', ',', '-': the labels
    leave it out), and the same without '?' marks either (a '?' that no digit model was asked
    about: a blob too small or flat for a digit) for the JSON's strings_exact_without_marks."""
    return (
        [line.text.translate(NO_PUNCTUATION) for line in reading.lines],
        [
            "".join(d.text for d in line.digits if d.confidence > 0 or d.text not in (UNSURE, *PUNCTUATION))
            for line in reading.lines
        ],
    )


def _read_samples(spec: SetSpec, folder: Path, samples: list[Sample], readers: Readers) -> dict:
    """A set of real images read by digitlab (and Tesseract): {"digitlab": ..., "tesseract": ...}."""
    labels = [s.label for s in samples]
    names = [s.file for s in samples]
    paths = [folder / s.file for s in samples]
    exact_key = "accuracy" if spec.key == "usps" else "strings_exact"
    model, progress = readers.model, readers.progress

    if spec.key == "usps":  # one digit per image: predict in batches
        batches = [paths[i : i + 64] for i in range(0, len(paths), 64)]
        out, seconds = _timed(
            batches, lambda batch: [p.digit for p in predict(batch, model)], f"{spec.key}: digitlab", progress, "batch"
        )
        texts = sum(out, [])
    else:

        def whole_text(image) -> tuple[str, str]:
            full, unmarked = _texts(read(image, model, unsure_below=readers.unsure_below))
            return "".join(full), "".join(unmarked)

        texts, seconds = _timed(paths, whole_text, f"{spec.key}: digitlab", progress)
    found = {"digitlab": _result(list(zip(labels, texts)), names, seconds, len(samples), exact_key), "tesseract": None}
    if readers.tesseract:
        failures: list[str] = []  # Tesseract runs that failed (they read nothing)

        def tesseract_text(path: Path) -> str:
            if spec.key == "usps":
                path = _usps_for_tesseract(path, readers.scratch / "usps.png")
            return "".join(text for text, _ in _tesseract_tsv(path, spec.psm, failures))

        texts, seconds = _timed(paths, tesseract_text, f"{spec.key}: tesseract", progress)
        found["tesseract"] = _result(list(zip(labels, texts)), names, seconds, len(samples), exact_key)
        found["tesseract"]["failures"] = failures[:ERRORS_KEPT]
    return found


def _read_pages(spec: SetSpec, pages: list, readers: Readers) -> dict:
    """Synthetic pages read by digitlab (and Tesseract), scored line by line (each true line
    against the read line that overlaps it most): {"lines": ..., "digitlab": ..., "tesseract": ...}."""
    n = len(pages)
    truth = [label for _, t in pages for label in t.lines]
    names = [f"page {p} line {i}" for p, (_, t) in enumerate(pages) for i in range(len(t.lines))]
    boxes = [[_union(b) for b in t.boxes] for _, t in pages]

    def digitlab_page(k: int) -> list[tuple[str, str]]:
        reading = read(pages[k][0], readers.model, unsure_below=readers.unsure_below)
        line_boxes = [line.box for line in reading.lines]
        full, unmarked = _texts(reading)
        return list(
            zip(
                _match_lines(boxes[k], list(zip(full, line_boxes))),
                _match_lines(boxes[k], list(zip(unmarked, line_boxes))),
            )
        )

    texts, seconds = _timed(range(n), digitlab_page, "synthetic: digitlab", readers.progress, "page")
    found = {
        "lines": len(truth),
        "digitlab": _result(list(zip(truth, sum(texts, []))), names, seconds, n, "strings_exact"),
        "tesseract": None,
    }
    if readers.tesseract:
        failures: list[str] = []  # Tesseract runs that failed (they read nothing)

        def tesseract_page(k: int) -> list[str]:
            path = readers.scratch / "page.png"
            cv2.imwrite(str(path), cv2.cvtColor(pages[k][0], cv2.COLOR_RGB2BGR))
            return _match_lines(boxes[k], _tesseract_tsv(path, spec.psm, failures))

        texts, seconds = _timed(range(n), tesseract_page, "synthetic: tesseract", readers.progress, "page")
        found["tesseract"] = _result(list(zip(truth, sum(texts, []))), names, seconds, n, "strings_exact")
        found["tesseract"]["failures"] = failures[:ERRORS_KEPT]
    return found


def _print_set(key: str, entry: dict) -> None:
    """One line of a set's figures, for each reader that read it."""
    print(
        f"{key} ({entry['n']} {entry['unit']}): "
        + "; ".join(
            f"{reader} "
            + ", ".join(f"{METRIC_NAMES[m]} {entry[reader][m] * 100:.2f}%" for m in METRIC_NAMES if m in entry[reader])
            + f", {entry[reader]['seconds_per_image'] * 1000:.1f} ms each"
            for reader in ("digitlab", "tesseract")
            if entry.get(reader)
        ),
        flush=True,
    )


def _display_path(path: Path) -> str:
    """`path` relative to the working directory when inside it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _command(data_dir, model, markdown, results, synthetic_pages, seed, unsure_below, tesseract, limit) -> str:
    """The command line that produced these figures: the CLI's own, or the Python call."""
    if sys.argv[1:3] == ["bench", "read"]:
        return shlex.join(["digitlab", *sys.argv[1:]])
    given = {
        "data_dir": data_dir,
        "model": None if model is None or not hasattr(model, "path") else model.path,
        "markdown": markdown,
        "results": results,
        "synthetic_pages": synthetic_pages,
        "seed": seed,
        "unsure_below": unsure_below,
        "tesseract": tesseract,
        "limit": limit,
    }
    defaults = {
        "data_dir": None,
        "model": None,
        "markdown": Path("BENCHMARKS.md"),
        "results": Path("benchmarks/results/read.json"),
        "synthetic_pages": 200,
        "seed": 0,
        "unsure_below": None,
        "tesseract": True,
        "limit": None,
    }
    if given["model"] is not None and Path(given["model"]).absolute() == BUNDLED_MODEL.absolute():
        given["model"] = None
    args = ", ".join(
        f"{k}={str(v)!r}" if isinstance(v, Path) else f"{k}={v!r}"
        for k, v in given.items()
        if v != defaults[k] and not (isinstance(v, Path) and Path(v) == defaults[k])
    )
    env = (
        ""
        if data_dir is not None or not os.environ.get("DIGITLAB_DATA")
        else f"DIGITLAB_DATA={os.environ['DIGITLAB_DATA']} "
    )
    return f'{env}python -c "from digitlab.bench.read import bench_read; bench_read({args})"'


# --- BENCHMARKS.md ------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def publish(report: dict, markdown: Path) -> None:
    """Rewrite the `bench read` section of BENCHMARKS.md from a results dict (appended, with its
    heading, when the file has none); everything outside the markers stays as it is."""
    tesseract_state = report["tesseract"]["state"]
    lines = [START, "| set | n | metric | target | digitlab | tesseract |", "| --- | --- | --- | --- | --- | --- |"]
    for key, entry in report["sets"].items():
        if entry["subsets"]:
            what = f"{entry['title']} ({', '.join('`' + s + '`' for s in entry['subsets'])})"
        else:
            what = f"{entry['title']} (seed {entry.get('seed', 0)})"
        n = str(entry["n"]) + ("" if entry["unit"] == "images" else f" {entry['unit']}")
        if entry.get("digitlab") is None:
            lines.append(_row([what, n, "—", "", "not run (no images)", ""]))
            continue
        if "lines" in entry:
            n += f", {entry['lines']} lines"
        metrics = ["accuracy"] if key == "usps" else ["strings_exact", "digit_accuracy"]
        for k, metric in enumerate(metrics):
            target = entry["targets"].get(metric)
            cells = []
            for reader in ("digitlab", "tesseract"):
                result = entry.get(reader)
                if result is None:
                    cells.append(tesseract_state)
                    continue
                value = result[metric]
                mark = "" if target is None else (" ✓" if value >= target else " ✗")
                cells.append(_percent(value) + mark)
            name = METRIC_NAMES[metric]
            if metric == "strings_exact" and key == "synthetic":
                name = "lines exact"
            row = [
                what if k == 0 else "",
                n if k == 0 else "",
                name,
                "≥ " + _percent(target).replace(".00", "") if target is not None else "",
                *cells,
            ]
            lines.append(_row(row))
        per = "page" if entry["unit"] == "pages" else "image"
        cells = [
            _seconds(entry[r]["seconds_per_image"]) if entry.get(r) else tesseract_state
            for r in ("digitlab", "tesseract")
        ]
        lines.append(_row(["", "", f"seconds per {per}", "", *cells]))
    model = report["model"]
    tess = report["tesseract"]
    tess_line = {
        "installed": f"Tesseract {tess['version']}: {tess['options']} (its time includes starting "
        "the process and, for USPS, upscaling the digit)",
        "not installed": "Tesseract: not installed (`tesseract` is not on PATH), so not run",
        "not run": "Tesseract: not run (tesseract=False)",
    }[tess["state"]]
    lines += [
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, PyTorch {report['torch']} ({report['threads']} threads); "
        f"date {report['date']}  ",
        f"Model: `{model['recipe']}` (`{model['path']}`); unsure threshold {report['unsure_below']:g}: "
        "a digit read below it is '?', which counts as a wrong digit  ",
        tess_line + "  ",
        "Digit accuracy: per string, the label's digits less the edit distance (Levenshtein) to what "
        "was read, at least 0, summed and divided by all the labels' digits. Cheques and photos are "
        "scored on the whole text with line breaks removed; synthetic pages line by line (each true "
        "line against the read line that overlaps it most)."
        + (f" Capped at {report['limit']} per set." if report.get("limit") else ""),
        END,
    ]
    write_section(
        markdown,
        START,
        END,
        "\n".join(lines),
        f"{HEADING}\n\n"
        "digitlab's reader and single-digit prediction on real handwriting that is not MNIST "
        "(`real-digits` in the shared data), and on generated pages, beside Tesseract on the same "
        "images. ✓ / ✗: at or above / below the target. Per-set details, and the first misreadings, "
        "are in `benchmarks/results/read.json`.\n\n",
    )
