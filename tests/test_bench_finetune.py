"""`digitlab bench finetune` (bench/finetune.py) in a tiny configuration: a base trained on 500 MNIST
images, fine-tuned and trained from scratch on 5 USPS digits per class. Its figures say little; what
is checked is that every number in the results and the table is one the runs recorded."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import digitlab
from digitlab.bench.finetune import BASE_RECIPE, table, usps_sample
from digitlab.cli import main


def _json(path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def suite(tmp_path_factory, shared_data_dir):
    """The suite run once through the command: (report, BENCHMARKS-style markdown text, its folder)."""
    root = tmp_path_factory.mktemp("finetune")
    options = "--sizes 5 --limit 500 --epochs 2 --threads 2".split()
    files = ["--results", root / "finetune.json", "--markdown", root / "BENCH.md"]
    code = main(["bench", "finetune", *options, "--out", str(root / "runs"), *map(str, files)])
    assert code == 0
    return _json(root / "finetune.json"), (root / "BENCH.md").read_text(), root


def test_the_table_holds_the_accuracies_the_runs_recorded(suite):
    report, markdown, _ = suite
    base = report["base"]
    assert base["trained_by_suite"] and base["recipe"] == BASE_RECIPE and base["limit"] == 500
    assert base["usps_accuracy"] == _json(base["usps_metrics"])["accuracy"]
    assert base["mnist_accuracy"] == _json(base["mnist_metrics"])["accuracy"]
    assert _json(base["usps_metrics"])["n"] == 2007 and _json(base["mnist_metrics"])["n"] == 10_000
    (row,) = report["runs"]
    assert (row["per_class"], row["images"], row["seed"]) == (5, 50, 0)
    for kind in ("tuned", "scratch"):
        run = Path(row[kind]["run"])
        metrics, history = _json(run / "metrics.json"), _json(run / "history.json")
        assert metrics["n"] == 2007 and row[kind]["usps_accuracy"] == metrics["accuracy"]
        assert len(history) == 2 and row[kind]["train_seconds"] == sum(r["seconds"] for r in history)
        assert history[-1]["val_accuracy"] == pytest.approx(metrics["accuracy"], abs=1.5 / 2007)  # PyTorch vs ONNX
        config = _json(run / "config.json")
        assert config["recipe"]["epochs"] == 2 and config["recipe"]["lr"] == report["finetune"]["lr"] == 1e-3
        assert config["train"]["init"] == (base["run"] if kind == "tuned" else None)
    mnist = _json(Path(row["tuned"]["run"]) / "mnist-test" / "metrics.json")
    assert row["tuned"]["mnist_accuracy"] == mnist["accuracy"] and mnist["n"] == 10_000
    line = table(report)[2]
    expected = [
        f"{base['usps_accuracy'] * 100:.2f}%",
        f"{row['tuned']['usps_accuracy'] * 100:.2f}%",
        f"{row['scratch']['usps_accuracy'] * 100:.2f}%",
        f"{row['tuned']['mnist_accuracy'] * 100:.2f}%",
    ]
    assert line.split(" | ")[1:5] == expected
    assert line in markdown and f"(base {base['mnist_accuracy'] * 100:.2f}%)" in markdown
    assert "<!-- bench finetune: begin -->" in markdown and report["machine"] in markdown
    assert report["command"] in markdown and report["date"] in markdown


def test_the_sample_is_stratified_seeded_and_nested(shared_data_dir):
    usps = digitlab.load_dataset("usps", data_dir=shared_data_dir, download=False, progress=False)
    small, large = usps_sample(usps, 5, seed=0), usps_sample(usps, 20, seed=0)
    assert torch.bincount(small.train_labels).tolist() == [5] * 10
    assert torch.equal(small.test_images, usps.test_images)
    assert torch.equal(usps_sample(usps, 5, seed=0).train_images, small.train_images)
    assert not torch.equal(usps_sample(usps, 5, seed=1).train_images, small.train_images)
    for c in range(10):  # the 5 of each digit are the first 5 of the 20
        assert torch.equal(small.train_images[small.train_labels == c], large.train_images[large.train_labels == c][:5])


def test_a_base_that_saw_other_data_and_sizes_usps_lacks_are_refused(suite, tmp_path, capsys):
    report, _, root = suite
    seen = tmp_path / "seen-usps"
    shutil.copytree(report["base"]["run"], seen)
    config = _json(seen / "config.json")
    config["train"]["data"] = ["mnist", "usps"]
    (seen / "config.json").write_text(json.dumps(config))
    files = ["--results", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]
    assert main(["bench", "finetune", "--base", str(seen), "--out", str(tmp_path / "runs"), *files]) == 2
    assert "the base must be a run trained on MNIST alone" in capsys.readouterr().err
    assert main(["bench", "finetune", "--sizes", "600", "--out", str(tmp_path / "runs"), *files]) == 2
    assert "USPS train has only 542 digits of its rarest class" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
