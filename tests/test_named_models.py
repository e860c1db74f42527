"""Models shipped in the package by name: checkpoint.named_models / resolve_model, `load_model("NAME")`,
`--model NAME` in the commands, and `digitlab evaluate NAME`, which never writes into the package."""

import json
import shutil
from pathlib import Path

import pytest

import digitlab
from digitlab import checkpoint
from digitlab.checkpoint import BUNDLED_LINE_RUN, BUNDLED_RUN, CONFIG, SHIPPED, WEIGHTS, named_models, resolve_model
from digitlab.cli import main
from digitlab.errors import ConfigError
from digitlab.evaluate import evaluation_folder
from digitlab.export import _source


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def package_files() -> dict[str, int]:
    """Every file under the shipped models' folder, with its modification time in ns."""
    return {str(p.relative_to(SHIPPED)): p.stat().st_mtime_ns for p in SHIPPED.rglob("*")}


def test_named_models_are_bundled_and_every_shipped_run_directory(tmp_path, monkeypatch):
    names = named_models()
    assert list(names)[0] == "bundled" and names["bundled"] == BUNDLED_RUN
    assert names["digitnet-real"] == BUNDLED_RUN and names["linenet"] == BUNDLED_LINE_RUN
    assert all((folder / CONFIG).is_file() and (folder / WEIGHTS).is_file() for folder in names.values())
    # a folder is a shipped model when it holds a run's two files, whatever its name; nothing else is
    for name, files in {"a-run": (CONFIG, WEIGHTS), "no-weights": (CONFIG,), "no-config": (WEIGHTS,)}.items():
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text("{}")
    (tmp_path / "README.md").write_text("a card")
    monkeypatch.setattr(checkpoint, "SHIPPED", tmp_path)
    assert named_models() == {"bundled": BUNDLED_RUN, "a-run": tmp_path / "a-run"}
    monkeypatch.setattr(checkpoint, "SHIPPED", tmp_path / "missing")  # an installation without weights/
    assert named_models() == {"bundled": BUNDLED_RUN}


def test_a_name_resolves_to_its_folder_and_an_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model("linenet") == BUNDLED_LINE_RUN
    assert resolve_model("bundled") == resolve_model(Path("digitnet-real")) == BUNDLED_RUN
    assert resolve_model("no-such-model") == Path("no-such-model")  # as given: the caller's error names it
    (tmp_path / "linenet").mkdir()  # a folder of the user's by that name is what they mean
    assert resolve_model("linenet") == Path("linenet")
    (tmp_path / "bundled").write_bytes(b"a file")
    assert resolve_model("bundled") == Path("bundled")


def test_load_model_takes_a_shipped_name_and_a_path_of_that_name_wins(tmp_path, monkeypatch):
    assert digitlab.load_model("bundled", backend="torch").path == BUNDLED_RUN
    assert digitlab.load_model("digitnet-real", backend="torch").path == BUNDLED_RUN
    assert isinstance(digitlab.load_model("linenet", backend="torch"), digitlab.LineModel)
    shutil.copytree(BUNDLED_LINE_RUN, tmp_path / "digitnet-real")  # a line model in a folder named as the digit one
    monkeypatch.chdir(tmp_path)
    model = digitlab.load_model("digitnet-real", backend="torch")
    assert isinstance(model, digitlab.LineModel) and model.path == Path("digitnet-real")


@pytest.mark.parametrize("command", ["predict", "read"])
def test_an_unknown_model_name_is_the_usual_error_with_exit_2(capsys, digit_png, command):
    code, out, err = run_cli(capsys, command, "--model", "no-such-model", digit_png)
    assert code == 2 and out == ""
    assert "no-such-model is not a run directory" in err and "Traceback" not in err


def test_a_shipped_name_works_as_model_and_a_line_model_is_refused_as_a_digit_model(capsys, digit_png):
    code, out, _ = run_cli(capsys, "predict", "--model", "digitnet-real", "--json", digit_png)
    assert code == 0 and json.loads(out)[0]["digit"] == "7"
    code, _, err = run_cli(capsys, "predict", "--model", "linenet", digit_png)
    assert code == 2 and "is a line recognizer, not a model of single digits" in err


def test_every_model_argument_says_the_shipped_names(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps at hyphens too ("mnist-" / "ensemble")
    names = ", ".join(named_models())  # bundled, digitnet-real, linenet, and whatever ships beside them
    for command in (
        ["predict"],
        ["read"],
        ["serve"],
        ["evaluate"],
        ["export"],
        ["summary"],
        ["bench", "infer"],
        ["bench", "read"],
    ):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # argparse's line breaks undone
        if command != ["summary"]:
            assert names in out, command
    code, out, _ = run_cli(capsys, "recipes")
    listing = out[out.index("shipped models") :]
    assert code == 0
    assert "bundled          digitnet-real: the default model" in listing
    assert "linenet          recipe linenet" in listing
    assert "mnist-ensemble   recipe 5 x digitnet-max +shifts" in listing and "recipe digitnet-max +shifts" in listing


def test_summary_takes_a_shipped_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "summary", "bundled")
    assert code == 0 and f"digitnet-real ({BUNDLED_RUN})" in out
    code, _, err = run_cli(capsys, "summary", "no-such-model")
    assert code == 2 and f"shipped models: {', '.join(named_models())}" in err


def test_evaluation_of_a_shipped_model_goes_to_runs_never_into_the_package(tmp_path):
    assert evaluation_folder(BUNDLED_RUN) == Path("runs/evaluate-digitnet-real")
    assert evaluation_folder(BUNDLED_LINE_RUN / ".." / "linenet") == Path("runs/evaluate-linenet")
    assert evaluation_folder(BUNDLED_RUN, tmp_path / "here") == tmp_path / "here"
    assert evaluation_folder(tmp_path) == tmp_path  # a run directory of the user's: into it, as always
    for out in (SHIPPED, BUNDLED_RUN, BUNDLED_RUN / "more", SHIPPED / "new-folder"):
        with pytest.raises(ConfigError, match="never writes into"):
            evaluation_folder(tmp_path, out)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="--out DIR"):
        evaluation_folder(tmp_path / "model.onnx")


def test_evaluate_refuses_an_out_inside_the_package_before_any_work(capsys):
    before = package_files()
    code, out, err = run_cli(capsys, "evaluate", "bundled", "--out", SHIPPED / "digitnet-real")
    assert code == 2 and out == ""
    assert "never writes into" in err
    assert package_files() == before


def test_an_export_of_a_shipped_model_names_it_not_its_installed_path(tmp_path, monkeypatch):
    assert _source(BUNDLED_RUN) == _source(BUNDLED_LINE_RUN) == "bundled"
    assert _source(tmp_path) == str(tmp_path)
    shipped = tmp_path / "weights"
    (shipped / "digitnet-max").mkdir(parents=True)
    for file in (CONFIG, WEIGHTS):
        (shipped / "digitnet-max" / file).write_text("{}")
    monkeypatch.setattr(checkpoint, "SHIPPED", shipped)
    assert _source(shipped / "digitnet-max") == "digitnet-max"


def test_evaluate_bundled_prints_its_accuracy_and_writes_under_runs(capsys, tmp_path, monkeypatch, shared_data_dir):
    monkeypatch.chdir(tmp_path)
    before = package_files()
    code, out, err = run_cli(capsys, "evaluate", "bundled", "--data-dir", shared_data_dir)
    assert code == 0, err
    assert package_files() == before  # nothing written, replaced or touched in the package
    folder = tmp_path / "runs" / "evaluate-digitnet-real"
    assert f"files written to {Path('runs') / 'evaluate-digitnet-real'}" in out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"report.txt", "confusion.png", "errors.png", "samples.png"} <= {p.name for p in folder.iterdir()}
    # its five sources' test splits: 99.22% as weights/README.md says, in int8 as in float32
    assert metrics["n"] == 13_597 and metrics["accuracy"] >= 0.99
    assert f"accuracy {metrics['accuracy'] * 100:.2f}%" in out


def test_evaluate_linenet_reproduces_the_accuracy_its_config_records(capsys, tmp_path, monkeypatch, shared_data_dir):
    monkeypatch.chdir(tmp_path)
    before = package_files()
    code, out, err = run_cli(capsys, "evaluate", "linenet", "--data-dir", shared_data_dir)
    assert code == 0, err
    assert package_files() == before
    recorded = json.loads((BUNDLED_LINE_RUN / CONFIG).read_text())["evaluation"]
    metrics = json.loads((tmp_path / "runs" / "evaluate-linenet" / "metrics.json").read_text())
    assert (metrics["n"], metrics["accuracy"]) == (recorded["n"], recorded["accuracy"])
    assert f"accuracy {recorded['accuracy'] * 100:.2f}%" in out
