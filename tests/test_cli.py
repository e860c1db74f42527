"""The command line: exit codes, messages on bad input, and a real short run end to end."""

import json
import os
import subprocess
import sys

import pytest

from digitlab.cli import main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_reports_bad_input_with_exit_2_and_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "no-such-recipe"],
        capture_output=True,
        text=True,
        env={**os.environ, "DIGITLAB_DATA": "/nonexistent"},
    )
    assert result.returncode == 2
    assert "unknown recipe 'no-such-recipe'" in result.stderr
    assert "keras-cnn" in result.stderr  # lists what exists
    assert "Traceback" not in result.stderr


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("recipes", "data", "train", "evaluate", "summary", "bench"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--val-split" in out and "--resume" in out and "default" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "keras-cnn", "--epochs", "many"])
    assert exit_info.value.code == 2
    code, _, err = run_cli(capsys, "train")
    assert code == 2 and "--resume" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "keras-cnn", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "keras-cnn", "--lr", "-1"], "learning rate must be positive"),
        (["train", "keras-mlp-dropout", "--val-split", "1.5"], "--val-split"),
        (
            ["train", "keras-cnn", "--device", "cuda"]
            if not __import__("torch").cuda.is_available()
            else ["train", "keras-cnn", "--device", "tpu"],
            "device",
        ),
        (["evaluate", "/nonexistent/run"], "not a run directory"),
        (["summary", "/nonexistent/run"], "neither a run directory nor a recipe"),
        (["data", "verify", "imagenet"], "unknown dataset"),
        (["train", "keras-cnn", "--set", "optimizer=rmsprop"], "unknown optimizer"),
        (["train", "keras-cnn", "--set", "wings=2"], "--set expects FIELD=VALUE"),
    ],
)
def test_bad_input_gives_a_clear_message_and_exit_2(capsys, args, message, shared_data_dir):
    code, _, err = run_cli(capsys, *args, *(["--data-dir", shared_data_dir] if args[0] != "summary" else []))
    assert code == 2
    assert message in err
    assert err.startswith("digitlab: error:")


def test_recipes_lists_every_recipe_with_published_accuracy(capsys):
    code, out, _ = run_cli(capsys, "recipes")
    assert code == 0
    for name, published in [
        ("opencv-mlp", "91.70%"),
        ("keras-cnn", "98.98%"),
        ("keras-mlp-dropout", "98.15%"),
        ("keras-mlp-sigmoid", "92.00%"),
        ("keras-mlp-512", "98.13%"),
        ("keras-cifar10-mlp", "57.00%"),
        ("digitnet", "-"),
    ]:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert published in line
    code, out, _ = run_cli(capsys, "recipes", "--json")
    assert {r["name"] for r in json.loads(out)} >= {"keras-cnn", "digitnet"}


def test_summary_of_keras_mlp_512(capsys):
    code, out, _ = run_cli(capsys, "summary", "keras-mlp-512")
    assert code == 0
    assert "Total params: 669,706" in out


def test_data_list_and_verify_on_the_shared_data(capsys, shared_data_dir):
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", shared_data_dir)
    assert code == 0
    assert "mnist" in out and "present" in out and "digits8x8" in out
    code, out, _ = run_cli(capsys, "data", "verify", "mnist", "--data-dir", shared_data_dir)
    assert code == 0
    assert out.count(" ok ") == 4


def test_data_verify_flags_a_corrupt_file_with_exit_2(capsys, tmp_path, shared_data_dir):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).write_bytes((shared_data_dir / "mnist" / name).read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    code, out, err = run_cli(capsys, "data", "verify", "mnist", "--data-dir", tmp_path)
    assert code == 2
    assert "mismatch" in out and "download" in err


def test_train_evaluate_summary_and_resume_end_to_end(capsys, tmp_path, shared_data_dir):
    code, out, _ = run_cli(
        capsys,
        "train",
        "keras-mlp-dropout",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--quiet",
        "--out",
        tmp_path,
        "--data-dir",
        shared_data_dir,
    )
    assert code == 0, out
    (run,) = tmp_path.iterdir()
    assert f"run directory: {run}" in out
    code, out, _ = run_cli(capsys, "evaluate", run, "--data-dir", shared_data_dir)
    assert code == 0 and "precision" in out
    code, out, _ = run_cli(capsys, "summary", run)
    assert code == 0 and "Total params: 535,818" in out
    code, _, err = run_cli(capsys, "train", "--resume", run, "--data-dir", shared_data_dir)
    assert code == 2 and "--epochs" in err
    code, out, _ = run_cli(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--data-dir", shared_data_dir)
    assert code == 0 and "after 2 epochs" in out


def test_a_corrupt_run_directory_is_refused(capsys, tmp_path, shared_data_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{ not json")
    code, _, err = run_cli(capsys, "evaluate", run, "--data-dir", shared_data_dir)
    assert code == 2 and "not valid JSON" in err
    (run / "config.json").write_text(
        json.dumps(
            {
                "model": {"name": "mlp", "args": {"hidden": [512, 256]}},
                "dataset": {"classes": list("0123456789"), "image_shape": [1, 28, 28]},
            }
        )
    )
    (run / "model.safetensors").write_bytes(b"\x00" * 16)
    code, _, err = run_cli(capsys, "evaluate", run, "--data-dir", shared_data_dir)
    assert code == 2 and "safetensors" in err


COMMANDS = [
    ["recipes"],
    ["data", "list"],
    ["data", "download"],
    ["data", "verify"],
    ["train"],
    ["evaluate"],
    ["summary"],
    ["predict"],
    ["read"],
    ["serve"],
    ["export"],
    *(["bench", suite] for suite in ("seeds", "read", "infer", "serve", "speed", "fuzz")),
]


def _help(capsys, command: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_option_says_its_default_once(capsys, command):
    # one option per entry: from its flags (at the start of a line) to the next option's
    text = " ".join(_help(capsys, command).split())
    for option in text.split(" --")[1:]:
        assert option.count("(default") <= 1, option
        assert not any(f"(default: {nothing})" in option for nothing in ("None", "False", "[]")), option


def test_the_defaults_shown_are_the_owners(capsys):
    from digitlab.preprocess import MAX_PIXELS
    from digitlab.read import UNSURE_BELOW
    from digitlab.serve.app import MAX_BODY, READ_TIMEOUT

    text = " ".join(_help(capsys, ["serve"]).split())
    assert f"refused with 413 (default: {MAX_BODY / 1024 / 1024:g})" in text
    assert f"before they are decoded (default: {MAX_PIXELS})" in text
    assert f"is closed (an 8 MB photo in {READ_TIMEOUT:g} s" in text
    text = " ".join(_help(capsys, ["read"]).split())
    assert f"read as '?' (default: {UNSURE_BELOW})" in text
