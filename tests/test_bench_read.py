"""`bench read`: the digit-accuracy metric against hand-computed cases, line matching, and the
whole benchmark on a tiny data directory (JSON, the BENCHMARKS.md section, the rest of the file
kept), with and without Tesseract, the errors for a data directory without real-digits or a digit
set; the digit sets' accuracy against an independent count, and two models side by side."""

import csv
import json
import shlex
import shutil
import sys

import pytest

import digitlab
from digitlab.bench.read import (
    DIGIT_SETS,
    DIGIT_TARGETS,
    END,
    HEADING,
    START,
    _match_lines,
    bench_read,
    digit_accuracy,
    digits_correct,
    edit_distance,
    string_metrics,
    tesseract_version,
)
from digitlab.cli import main
from digitlab.errors import ConfigError, DatasetNotFoundError, DigitlabError, UnknownNameError
from digitlab.evaluate import predict_logits
from digitlab.read import UNSURE_BELOW

# --- the metric ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ("", "", 0),
        ("123", "123", 0),
        ("123", "", 3),
        ("", "45", 2),
        ("12345", "1245", 1),  # a digit missed
        ("1234", "12?4", 1),  # an unsure digit is a wrong one
        ("123", "1293", 1),  # one extra
        ("123", "321", 2),  # two substitutions
        ("kitten", "sitting", 3),
        ("18014", "18?014", 1),
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_digits_correct_is_length_less_edits_floored_at_zero():
    assert digits_correct("12345", "12345") == 5
    assert digits_correct("12345", "1245") == 4
    assert digits_correct("12345", "123456") == 4  # an extra digit costs one too
    assert digits_correct("1234", "12?4") == 3
    assert digits_correct("12", "") == 0
    assert digits_correct("12", "99999") == 0  # 5 edits > 2 digits: 0, not negative


def test_digit_accuracy_and_string_metrics_by_hand():
    pairs = [("12345", "1245"), ("123", ""), ("77", "77"), ("9", "4")]
    # right digits: 4 + 0 + 2 + 0 = 6 of 5 + 3 + 2 + 1 = 11
    assert digit_accuracy(pairs) == pytest.approx(6 / 11)
    metrics = string_metrics(pairs)
    assert metrics["strings_exact"] == pytest.approx(1 / 4)
    assert metrics["digit_accuracy"] == pytest.approx(6 / 11)
    assert (metrics["strings"], metrics["digits"]) == (4, 11)
    assert digit_accuracy([]) == 0.0


def test_lines_are_matched_by_overlap_not_order():
    truth = [(10, 10, 100, 30), (10, 60, 100, 30), (10, 110, 100, 30)]
    read = [("333", (12, 112, 90, 28)), ("111", (8, 12, 100, 30)), ("999", (400, 400, 10, 10))]
    assert _match_lines(truth, read) == ["111", "", "333"]  # the middle line was not read
    # two read lines over one true line: the one that overlaps it more
    assert _match_lines([(0, 0, 100, 20)], [("12", (0, 0, 40, 20)), ("1234", (0, 0, 95, 20))]) == ["1234"]


# --- the benchmark on a tiny data directory -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(mnist, tmp_path_factory):
    """An MLP trained briefly: the benchmark's plumbing, not its figures, is under test here."""
    run = digitlab.train(
        "keras-mlp-dropout",
        epochs=1,
        subset=2000,
        dataset=mnist,
        out=tmp_path_factory.mktemp("runs"),
        progress=False,
        evaluate_after=False,
    )
    return digitlab.load_model(run.path)


@pytest.fixture()
def tiny_data(shared_data_dir, tmp_path):
    """tmp/data with real-digits/ (5 USPS digits, 3 dev cheques, 1 webcam photo and their labels.csv
    rows) and the digit sets (mnist, usps, ...) -> the shared ones (absent there: the benchmark's
    DatasetNotFoundError fails the test that needs it)."""
    source = shared_data_dir / "real-digits"
    if not (source / "labels.csv").is_file():
        pytest.skip(f"real-digits is not in {shared_data_dir}")
    with open(source / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    chosen = (
        [r for r in rows if r["subset"] == "usps-test"][:5]
        + [r for r in rows if r["subset"] == "orand-car-a-train" and "a_car_0011" in r["file"]][:3]  # dev
        + [r for r in rows if r["subset"] == "photo-webcam"][:1]
    )
    data = tmp_path / "data"
    target = data / "real-digits"
    for row in chosen:
        (target / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / row["file"], target / row["file"])
    with open(target / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(chosen)
    for name in DIGIT_SETS:
        (data / name).symlink_to(shared_data_dir / name, target_is_directory=True)
    return data


BEFORE = (
    "# Benchmarks\n\nIntro that must stay.\n\n## Seeds\n\n<!-- bench seeds: begin -->\nseeds\n"
    "<!-- bench seeds: end -->\n"
)
AFTER = "\n## Later section\n\nText after the read section must stay too.\n"


def test_bench_read_writes_json_and_its_markdown_section(tiny_data, tiny_model, tmp_path):
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "out" / "read.json"
    markdown.write_text(BEFORE)
    report = bench_read(
        data_dir=tiny_data,
        model=tiny_model,
        markdown=markdown,
        results=results,
        synthetic_pages=3,
        scenes=2,
        limit=4,
        tesseract=False,
        progress=False,
        digit_sets=["mnist", "hwd-1000"],
        methods=["segment"],
    )

    assert json.loads(results.read_text()) == json.loads(json.dumps(report))
    sets = report["sets"]
    assert [sets[k]["n"] for k in ("usps", "orand", "photos", "synthetic", "scenes")] == [4, 3, 1, 3, 2]
    assert sets["synthetic"]["lines"] >= 3 and sets["scenes"]["lines"] >= 2
    (label,) = [m["label"] for m in report["models"]]  # one model: its path
    assert report["columns"] == {"segment": {"model": label, "method": "segment"}}  # one model: the method
    for entry in sets.values():
        assert entry["tesseract"] is None
        assert list(entry["digitlab"]) == ["segment"]
        result = entry["digitlab"]["segment"]
        for metric in ("accuracy", "strings_exact", "digit_accuracy"):
            if metric in result:
                assert 0 <= result[metric] <= 1
        assert result["seconds_per_image"] > 0
    assert (
        "accuracy" in sets["usps"]["digitlab"]["segment"] and "digit_accuracy" in sets["orand"]["digitlab"]["segment"]
    )
    assert sets["orand"]["digitlab"]["segment"]["by_length"]  # strings exact by their number of digits
    assert report["unsure_below"] == UNSURE_BELOW  # None: read.py's default
    assert report["models"] == [{"label": label, "recipe": "keras-mlp-dropout", "path": label}]
    assert list(report["digit_sets"]) == ["mnist", "hwd-1000"]
    assert [e["n"] for e in report["digit_sets"].values()] == [4, 4]
    assert report["digit_sets"]["mnist"]["target"] == 0.996 and report["digit_sets"]["hwd-1000"]["target"] is None
    assert report["tesseract"]["state"] == "not run"

    text = markdown.read_text()
    assert text.startswith(BEFORE.rstrip("\n"))  # what was there stays
    assert text.count(START) == text.count(END) == 1 and text.count(HEADING) == 1
    section = text[text.index(START) : text.index(END)]
    assert "| set | n | metric | target | digitlab `segment` | tesseract |" in section
    assert "| digits (test split) | n | target | digitlab |" in section
    assert "| MNIST (`mnist` test) | 4 | ≥ 99.60% |" in section and "(`hwd-1000` test) | 4 | |" in section
    assert "| ≥ 95% |" in section and "seconds per page" in section and "not run" in section
    assert "| ≥ 98.80% |" in section and "| ≥ 85% |" in section and "seconds per scene" in section
    assert (
        "USPS test digits" in section and "ORAND-CAR-A dev cheque amounts" in section and "Synthetic pages" in section
    )
    assert "strings exact by length:" in section and "Photo scenes" in section
    assert "keras-mlp-dropout" in section and "unsure threshold 0.6" in section

    # Run again into a file that has text after the section: the section is replaced in place.
    markdown.write_text(text + AFTER)
    bench_read(
        data_dir=tiny_data,
        model=tiny_model,
        markdown=markdown,
        results=results,
        synthetic_pages=0,
        limit=2,
        scenes=0,
        unsure_below=0.0,
        tesseract=False,
        progress=False,
        digit_sets=[],
        methods=["segment"],
    )
    again = markdown.read_text()
    assert again.startswith(text[: text.index(START)]) and again.endswith(AFTER)
    assert again.count(START) == again.count(END) == again.count(HEADING) == 1
    assert "unsure threshold 0" in again and "Capped at 2 per set" in again
    assert json.loads(results.read_text())["sets"]["synthetic"]["digitlab"] is None
    assert "digits (test split)" not in again  # no digit sets: no table of them


def test_tesseract_not_installed_says_so(tiny_data, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("digitlab.bench.read.shutil.which", lambda name: None)
    markdown = tmp_path / "BENCHMARKS.md"  # absent: created with a heading
    report = bench_read(
        data_dir=tiny_data,
        model=tiny_model,
        markdown=markdown,
        results=tmp_path / "r.json",
        synthetic_pages=1,
        scenes=1,
        limit=1,
        tesseract=True,
        progress=False,
        digit_sets=[],
        methods=["segment"],
    )
    assert report["tesseract"] == {**report["tesseract"], "state": "not installed", "version": None}
    assert all(entry["tesseract"] is None for entry in report["sets"].values())
    text = markdown.read_text()
    assert text.startswith("# Benchmarks") and HEADING in text
    assert "| not installed |" in text and "Tesseract: not installed" in text


@pytest.mark.skipif(tesseract_version() is None, reason="the tesseract binary is not installed")
def test_tesseract_side_by_side(tiny_data, tiny_model, tmp_path):
    report = bench_read(
        data_dir=tiny_data,
        model=tiny_model,
        markdown=tmp_path / "B.md",
        results=tmp_path / "r.json",
        synthetic_pages=1,
        scenes=1,
        limit=2,
        progress=False,
        digit_sets=[],
        methods=["segment"],
    )
    assert report["tesseract"]["state"] == "installed"
    for entry in report["sets"].values():
        assert entry["tesseract"]["seconds_per_image"] > 0
        digitlab_keys = set(entry["digitlab"]["segment"]) - {"strings_exact_without_marks"}
        assert digitlab_keys == set(entry["tesseract"]) - {"failures"}
        assert entry["tesseract"]["failures"] == []


def test_missing_real_digits_is_a_clear_error(shared_data_dir, tmp_path):
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "read.json"
    with pytest.raises(DatasetNotFoundError) as caught:
        bench_read(data_dir=data, markdown=markdown, results=results, progress=False)
    assert isinstance(caught.value, DigitlabError)
    assert str(data / "real-digits") in str(caught.value) and "DIGITLAB_DATA" in str(caught.value)
    assert not markdown.exists() and not results.exists()


def test_missing_image_listed_in_labels_is_a_clear_error(tiny_data, tiny_model, tmp_path):
    folder = tiny_data / "real-digits"
    with open(folder / "labels.csv", newline="") as f:
        first = next(csv.DictReader(f))["file"]
    (folder / first).unlink()
    with pytest.raises(DigitlabError, match="not in"):
        bench_read(
            data_dir=tiny_data,
            model=tiny_model,
            markdown=tmp_path / "B.md",
            results=tmp_path / "r.json",
            progress=False,
            digit_sets=[],
        )


# --- digit sets and several models ----------------------------------------------------------


def test_digit_set_accuracy_equals_an_independent_count(tiny_data, tiny_model, shared_data_dir, tmp_path):
    names, limit = ["mnist", "usps", "optdigits", "hwd-1000"], 60
    report = bench_read(
        data_dir=tiny_data,
        model=tiny_model,
        markdown=tmp_path / "B.md",
        results=tmp_path / "r.json",
        synthetic_pages=0,
        scenes=0,
        limit=limit,
        tesseract=False,
        progress=False,
        digit_sets=names,
        methods=["segment"],
    )
    (label,) = [m["label"] for m in report["models"]]
    assert tiny_model.backend == "onnx"  # the benchmark's path; the count below runs the torch module
    for name in names:
        dataset = digitlab.load_dataset(name, data_dir=shared_data_dir, download=False, progress=False)
        images, labels = dataset.test_images[:limit], dataset.test_labels[:limit]
        wrong = (predict_logits(tiny_model.module, images).argmax(1) != labels).nonzero().flatten().tolist()
        entry = report["digit_sets"][name]
        result = entry["digitlab"][label]
        assert (entry["n"], entry["split"], entry["target"]) == (limit, "test", DIGIT_TARGETS.get(name))
        assert result["correct"] == limit - len(wrong) and result["images"] == limit
        assert result["accuracy"] == pytest.approx((limit - len(wrong)) / limit)
        assert [e["item"] for e in result["errors"]] == wrong
        assert all(e["label"] == str(int(labels[e["item"]])) for e in result["errors"])


def test_two_models_side_by_side_from_the_command_line(tiny_data, tiny_model, tmp_path, monkeypatch, capsys):
    markdown, results = tmp_path / "B.md", tmp_path / "r.json"
    argv = ["bench", "read", "--model", "bundled", "--model", str(tiny_model.path), "--limit", "3"]
    argv += ["--pages", "1", "--scenes", "1", "--method", "segment", "--no-tesseract", "--data-dir", str(tiny_data)]
    argv += ["--markdown", str(markdown), "--results", str(results)]
    monkeypatch.setattr(sys, "argv", ["digitlab", *argv])
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(results.read_text())

    other = str(tiny_model.path)  # outside the working directory: absolute
    assert [(m["label"], m["recipe"]) for m in report["models"]] == [
        ("bundled", "digitnet-real"),
        (other, "keras-mlp-dropout"),
    ]
    assert report["command"] == shlex.join(["digitlab", *argv])  # what was typed
    assert list(report["digit_sets"]) == list(DIGIT_SETS)  # the default: all five
    for entry in report["digit_sets"].values():  # digits: one column a model
        assert list(entry["digitlab"]) == ["bundled", other]
    for entry in report["sets"].values():  # reading: one a model and method
        assert list(entry["digitlab"]) == ["bundled segment", f"{other} segment"]
    assert [e["n"] for e in report["digit_sets"].values()] == [3] * 5
    assert "mnist test (3 digits): digitlab bundled accuracy" in out and f"; digitlab {other} accuracy" in out

    section = markdown.read_text()
    columns = f"digitlab `bundled` | digitlab `{other}`"
    assert f"| digits (test split) | n | target | {columns} |" in section
    reading = f"digitlab `bundled segment` | digitlab `{other} segment`"
    assert f"| set | n | metric | target | {reading} | tesseract |" in section
    assert "| ORAND-CAR-A dev digit crops, a_car_001100 and above, reporting only (`orand-car-a` test) | 3 |" in section
    assert f"Models: `bundled`: `digitnet-real` (`src/digitlab/weights/digitnet-real`); `{other}`:" in section
    rows = [line for line in section.splitlines() if line.startswith("| USPS test digits")]
    cells = rows[0].strip("|").split("|")  # set, n, metric, target, a model each, Tesseract
    assert len(rows) == 1 and len(cells) == 7 and cells[2].strip() == "accuracy" and cells[6].strip() == "not run"
    assert all(cell.strip()[-1] in "✓✗" for cell in cells[4:6])

    # The bundled model's figures are its own: the same as when it runs alone.
    monkeypatch.setattr(sys, "argv", ["pytest"])  # a Python call now, not the command line
    alone = bench_read(
        data_dir=tiny_data,
        markdown=tmp_path / "alone.md",
        results=tmp_path / "alone.json",
        synthetic_pages=1,
        scenes=1,
        limit=3,
        tesseract=False,
        progress=False,
        digit_sets=["mnist", "hwd-1000"],
        methods=["segment"],
    )
    assert [m["label"] for m in alone["models"]] == ["bundled"]
    for name in ("mnist", "hwd-1000"):
        assert (
            alone["digit_sets"][name]["digitlab"]["bundled"]["correct"]
            == (report["digit_sets"][name]["digitlab"]["bundled"]["correct"])
        )
    for key, entry in alone["sets"].items():
        for metric in ("accuracy", "strings_exact", "digit_accuracy"):
            if metric in entry["digitlab"]["segment"]:
                assert (
                    entry["digitlab"]["segment"][metric] == report["sets"][key]["digitlab"]["bundled segment"][metric]
                )
    files = f"markdown={str(tmp_path / 'alone.md')!r}, results={str(tmp_path / 'alone.json')!r}"
    assert alone["command"] == (
        f'python -c "from digitlab.bench.read import bench_read; bench_read(data_dir={str(tiny_data)!r}, '
        f"{files}, synthetic_pages=1, tesseract=False, limit=3, digit_sets=['mnist', 'hwd-1000'], "
        "methods=['segment'], scenes=1)\""
    )  # the bundled model alone is the default: not named


def test_the_python_call_recorded_names_every_model(tiny_data, tiny_model, tmp_path):
    report = bench_read(
        data_dir=tiny_data,
        model=["bundled", tiny_model],
        markdown=tmp_path / "B.md",
        results=tmp_path / "r.json",
        synthetic_pages=0,
        scenes=0,
        limit=1,
        tesseract=False,
        progress=False,
        digit_sets=["hwd-1000"],
        methods=["segment"],
    )
    assert f"model=['bundled', {str(tiny_model.path)!r}]" in report["command"]
    assert "| digits (test split) | n | target | digitlab `bundled` | digitlab `" in (tmp_path / "B.md").read_text()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"model": [None, "bundled"]}, ConfigError, "given twice"),
        ({"model": []}, ConfigError, "at least one"),
        ({"digit_sets": ["fashion-mnist"]}, ConfigError, "not a dataset of 28x28 digits"),
        ({"digit_sets": ["no-such-set"]}, UnknownNameError, "unknown dataset 'no-such-set'"),
        ({"digit_sets": "mnist"}, ConfigError, "a list of dataset names"),
        ({"methods": ["segment", "guess"]}, ConfigError, "methods must be some of auto, segment, sequence"),
        ({"methods": []}, ConfigError, "methods must be some of"),
    ],
)
def test_bad_models_and_digit_sets_are_clear_errors(tiny_data, tmp_path, kwargs, error, message):
    markdown, results = tmp_path / "B.md", tmp_path / "r.json"
    with pytest.raises(error, match=message):
        bench_read(data_dir=tiny_data, markdown=markdown, results=results, progress=False, **kwargs)
    assert not markdown.exists() and not results.exists()


def test_missing_digit_set_is_a_clear_error_before_anything_is_measured(tiny_data, tmp_path):
    (tiny_data / "usps").unlink()  # the link to the shared USPS
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "read.json"
    with pytest.raises(DatasetNotFoundError) as caught:
        bench_read(data_dir=tiny_data, markdown=markdown, results=results, progress=False, digit_sets=["usps"])
    assert str(tiny_data / "usps") in str(caught.value) and "DIGITLAB_DATA" in str(caught.value)
    assert not markdown.exists() and not results.exists()


def test_every_method_side_by_side_with_the_bundled_line_model(tiny_data, tmp_path):
    """The three ways to read a line, each a column: the cheques by length, and the webcam photo's
    reading time as p50 / p99."""
    report = bench_read(
        data_dir=tiny_data,
        markdown=tmp_path / "B.md",
        results=tmp_path / "r.json",
        synthetic_pages=1,
        scenes=1,
        limit=2,
        tesseract=False,
        progress=False,
        digit_sets=[],
    )
    assert list(report["columns"]) == ["auto", "segment", "sequence"]
    assert report["line_model"] == {"recipe": "linenet", "path": "src/digitlab/weights/linenet"}
    for entry in report["sets"].values():
        assert list(entry["digitlab"]) == ["auto", "segment", "sequence"]
    timing = report["sets"]["photos"]["photo_seconds"]  # the one webcam photo is 640x480
    assert set(timing) == {"auto", "segment", "sequence"} and all(t["n"] == 1 and t["p50"] > 0 for t in timing.values())
    section = (tmp_path / "B.md").read_text()
    assert (
        "| set | n | metric | target | digitlab `auto` | digitlab `segment` | digitlab `sequence` | tesseract |"
        in section
    )
    assert "one 640x480 image (1): p50 / p99" in section and "Methods (`read --method`)" in section
