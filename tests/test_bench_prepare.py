"""`digitlab bench prepare` (bench/prepare.py) in its --quick form, through the command: every kind
is measured, its numbers are the ones the JSON holds, the verdicts follow from them, a second run
replaces its BENCHMARKS.md section, and missing data is a clear error (exit 2)."""

import json
import os
import re

import pytest

from digitlab.bench.prepare import KINDS, TARGET_CLASS, TARGET_MS, TARGET_PIXELS
from digitlab.cli import main


@pytest.fixture(scope="module")
def suite(tmp_path_factory, shared_data_dir):
    """The quick suite run twice into the same files, its data named by a relative DIGITLAB_DATA
    (as the README runs it): (report, markdown text)."""
    root = tmp_path_factory.mktemp("prepare")
    files = ["--results", str(root / "prepare.json"), "--markdown", str(root / "BENCH.md")]
    (root / "BENCH.md").write_text("# Benchmarks\n\nkept as it is\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("DIGITLAB_DATA", os.path.relpath(shared_data_dir, root))
        for _ in range(2):
            assert main(["bench", "prepare", "--quick", *files]) == 0
    return json.loads((root / "prepare.json").read_text()), (root / "BENCH.md").read_text()


def test_every_kind_is_measured_beside_the_reference(suite):
    report, _ = suite
    assert report["quick"] is True
    assert list(report["kinds"]) == list(KINDS)
    for kind, entry in report["kinds"].items():
        timing = entry["prepare"]
        assert 0 < timing["p50_ms"] <= timing["p99_ms"]
        assert 0 < timing["reference_p50_ms"] <= timing["reference_p99_ms"]
        assert timing["speedup_p50"] == pytest.approx(timing["reference_p50_ms"] / timing["p50_ms"])
        assert ("from_png" in entry) == (kind != "pages")  # the reader's candidates are ink maps, not files
        assert entry["compared"] + entry["no_ink_differs"] <= entry["digits"]
        assert 0 <= entry["worst_digit_within_one_level"] <= entry["pixels_within_one_level"] <= 1
        assert entry["targets_met"] == {
            "time": timing["p50_ms"] <= TARGET_MS,
            "pixels": entry["pixels_within_one_level"] >= TARGET_PIXELS and entry["no_ink_differs"] == 0,
            "class": entry["same_class"] >= TARGET_CLASS,
        }
        # the fast path's figures on real digits: the bars, on the 50 digits of a quick run
        assert entry["targets_met"]["pixels"] and entry["targets_met"]["class"], kind


def test_the_table_shows_the_reports_numbers_and_verdicts_once(suite):
    report, markdown = suite
    assert markdown.startswith("# Benchmarks\n\nkept as it is\n")
    assert markdown.count("<!-- bench prepare: begin -->") == 1 and markdown.count("## MNIST-style preparation") == 1
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(KINDS)
    for row, entry in zip(rows, report["kinds"].values(), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[3].startswith(f"{entry['prepare']['p50_ms']:.3f} ms")
        assert cells[7].startswith(f"{entry['pixels_within_one_level']:.4%}")
        missed = [name for name, met in entry["targets_met"].items() if not met]
        assert cells[-1] == ("NOT met: " + ", ".join(missed) if missed else "met")
    assert "QUICK SMOKE RUN" in markdown and report["command"] in markdown


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    files = ["--results", str(tmp_path / "p.json"), "--markdown", str(tmp_path / "B.md")]
    assert main(["bench", "prepare", "--quick", "--data-dir", str(tmp_path / "empty"), *files]) == 2
    error = capsys.readouterr().err
    assert re.search(r"mnist", error) and str(tmp_path / "empty") in error
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "B.md").exists()


def test_bad_sizes_are_refused(tmp_path, capsys):
    assert main(["bench", "prepare", "--pages", "0", "--markdown", str(tmp_path / "B.md")]) == 2
    assert "at least 1" in capsys.readouterr().err
