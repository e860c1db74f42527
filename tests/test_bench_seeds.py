"""`digitlab bench seeds --ensemble --shifts 1`: a recipe's seed runs, then their ensemble, each also over shifted
views, each a row of the table."""

from __future__ import annotations

import json

import pytest

from digitlab.bench import seeds
from digitlab.errors import ConfigError


def test_seed_runs_and_their_ensemble_are_rows_of_the_table(tmp_path, shared_data_dir, monkeypatch):
    monkeypatch.setattr(seeds, "MEASURED", tmp_path / "measured.json")  # not the package's copy
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nKept.\n")
    results = tmp_path / "seeds.json"
    common = dict(data_dir=shared_data_dir, ensemble_of=True)
    # one seed an invocation, as a slow recipe is run beside other work: the second one's ensemble
    # takes both seeds' runs from the results file
    seeds.bench_seeds(["fast"], 1, 1e9, results, markdown, tmp_path / "runs", **common)
    rows = seeds.bench_seeds(["fast"], 1, 1e9, results, markdown, tmp_path / "runs", first_seed=1, **common)
    singles = [r for r in rows if r["recipe"] == "fast"]
    (together,) = [r for r in rows if r["recipe"] == "fast ensemble"]
    assert [r["seed"] for r in singles] == [0, 1] and together["seed"] == [0, 1]
    assert together["accuracy"] > 0.98 and together["train_seconds"] == sum(r["train_seconds"] for r in singles)
    assert json.loads((tmp_path / together["run"]).joinpath("config.json").read_text())["model"]["name"] == "ensemble"
    assert json.loads(results.read_text()) == rows
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nKept.\n")
    assert "| `fast` ensemble of 2 | — | " + f"{together['accuracy'] * 100:.2f}% (1 run)" in text
    assert "Byerly et al. 2021" in text and "fast ensemble" in json.loads((tmp_path / "measured.json").read_text())
    # --seeds 0 --ensemble: no training, the ensemble of the runs already there made again, in place of the row
    again = seeds.bench_seeds(["fast"], 0, 1e9, results, markdown, tmp_path / "runs", **common)
    assert [r for r in again if r["recipe"] == "fast"] == singles
    (remade,) = [r for r in again if r["recipe"] == "fast ensemble"]
    assert remade["seed"] == [0, 1] and remade["run"] != together["run"] and remade["accuracy"] == together["accuracy"]
    # --seeds 0 --shifts 1: each seed run and the ensemble over the image and its four one-pixel shifts
    shifted = seeds.bench_seeds(["fast"], 0, 1e9, results, markdown, tmp_path / "new" / "runs", shifts=1, **common)
    assert [r for r in shifted if r["recipe"] == "fast"] == singles
    views = [r for r in shifted if r["recipe"] == "fast +shifts"]
    assert [r["seed"] for r in views] == [0, 1] and all(r["accuracy"] > 0.98 for r in views)
    (both,) = [r for r in shifted if r["recipe"] == "fast ensemble +shifts"]
    assert both["seed"] == [0, 1] and both["train_seconds"] == together["train_seconds"]
    for row, members in zip(views + [both], ([singles[0]], [singles[1]], singles)):
        config = json.loads((tmp_path / row["run"]).joinpath("config.json").read_text())
        assert config["model"]["args"]["shifts"] == 1
        assert [m["run"] for m in config["ensemble"]["members"]] == [m["run"] for m in members]
    text = markdown.read_text()
    mean = sum(r["accuracy"] for r in views) / 2 * 100
    assert f"| `fast` over the image and its four one-pixel shifts (`--shifts 1`) | — | {mean:.2f}% ± " in text
    assert "| `fast` ensemble of 2 over the image and its four one-pixel shifts (`--shifts 1`) | — | " in text


def test_no_seeds_without_the_ensemble_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 1"):
        seeds.bench_seeds(["fast"], 0, 1e9, tmp_path / "s.json", tmp_path / "B.md", tmp_path / "runs")
    assert not (tmp_path / "s.json").exists()
