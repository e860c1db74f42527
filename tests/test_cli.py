"""The command line: exit codes, messages on bad input, and a real short run end to end."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import digitlab
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
    *(["bench", suite] for suite in ("seeds", "read", "infer", "prepare", "serve", "speed", "fuzz", "finetune")),
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


def test_every_argument_says_its_default_at_most_once_in_every_command(capsys):
    """Walks every parser (commands, data actions, bench suites) and formats each argument's help as
    --help does, positional arguments included: never "(default: X) (default: None)" or a default twice."""
    from digitlab.cli import build_parser

    def parsers(parser, name):
        parser.format_help()  # adds a command's options (CommandParser adds them when first used)
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from parsers(child, f"{name} {sub}")

    seen = 0
    for name, parser in parsers(build_parser(), "digitlab"):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            text = " ".join(formatter._expand_help(action).split())
            assert text.count("(default") <= 1, (name, action.dest, text)
            assert not re.search(r"\(default: (None|False|\[\])\)", text), (name, action.dest, text)
            seen += 1
    assert seen > 120  # every command's options were looked at


# --- folders of images --------------------------------------------------------------------------


def write_digits(folder, mnist, names):
    """MNIST test digits 0.. as 112x112 dark-on-light PNGs under `names`; their labels."""
    folder.mkdir(exist_ok=True)
    labels = []
    for i, name in enumerate(names):
        digit = cv2.resize(mnist.test_images[i, 0].numpy(), (112, 112), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / name), 255 - digit)
        labels.append(str(mnist.test_labels[i].item()))
    return labels


def test_predict_and_read_take_folders_sorted_by_name_with_a_count(capsys, tmp_path, mnist):
    labels = write_digits(tmp_path / "digits", mnist, ["b.png", "a.PNG", "c.jpg"])
    (tmp_path / "digits" / "notes.txt").write_text("not an image")
    (tmp_path / "digits" / ".hidden.png").write_bytes(b"not even an image")
    (tmp_path / "digits" / "sub.png").mkdir()  # a folder: not searched, whatever its name
    write_digits(tmp_path / "digits" / "sub.png", mnist, ["deeper.png"])
    single = tmp_path / "single.png"
    write_digits(tmp_path, mnist, ["single.png"])
    code, out, err = run_cli(capsys, "predict", tmp_path / "digits", single, "--json")
    assert code == 0, err
    rows = json.loads(out)
    folder = str(tmp_path / "digits")
    assert [row["image"] for row in rows] == [f"{folder}/a.PNG", f"{folder}/b.png", f"{folder}/c.jpg", str(single)]
    assert [row["digit"] for row in rows] == [labels[1], labels[0], labels[2], labels[0]]
    assert f"{folder}: 3 images (2 other entries left out)" in err.splitlines()
    code, out, err = run_cli(capsys, "read", tmp_path / "digits", "--json")
    assert code == 0 and [r["text"] for r in json.loads(out)] == [labels[1], labels[0], labels[2]]
    assert f"{folder}: 3 images" in err


def test_an_empty_folder_or_one_without_images_exits_2(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    for command in ("predict", "read"):
        for folder, detail in (("empty", "holds no image files"), ("texts", "(1 other entry left out)")):
            code, out, err = run_cli(capsys, command, tmp_path / folder)
            assert code == 2 and out == "" and err.startswith("digitlab: error:") and detail in err, err
            assert len(err.splitlines()) == 1


# --- output paths: one rule (files.output_file, files.output_folder) ----------------------------


def test_export_into_a_missing_folder_creates_nothing_and_exits_2(capsys):
    target = Path("/nonexistent-digitlab-dir") / "x.onnx"  # at the root: where the bug made its folder
    assert not target.parent.exists()
    code, _, err = run_cli(capsys, "export", "--onnx", target, "--no-verify")
    assert code == 2 and f"the folder {target.parent} does not exist" in err
    assert not target.parent.exists()


def test_output_files_need_an_existing_folder_and_an_extension_digitlab_writes(capsys, tmp_path, mnist):
    write_digits(tmp_path, mnist, ["d.png"])
    image = tmp_path / "d.png"
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["export", "--onnx", tmp_path / "missing" / "x.onnx", "--no-verify"], "does not exist"),
        (["export", "--onnx", tmp_path / "x.pt", "--no-verify"], "ends with '.pt'; digitlab writes an ONNX model"),
        (["read", image, "--annotate", tmp_path / "missing" / "out.png"], "does not exist"),
        (["read", image, "--annotate", tmp_path / "out.gif"], "ends with '.gif'"),
        (["read", image, "--annotate", tmp_path / "out"], "has no extension"),
        (["read", image, "--annotate", tmp_path / "a-file" / "out.png"], "a-file is a file, not a folder"),
        (["read", image, "--annotate-confidence"], "give --annotate too"),
        (["predict", image, "--show-input", tmp_path / "a-file" / "seen"], "a-file is a file, not a folder"),
        (["evaluate", tmp_path, "--out", tmp_path / "a-file"], "it is a file, not a folder"),
        (["train", "fast", "--out", tmp_path / "a-file", "--data-dir", tmp_path], "it is a file, not a folder"),
        (["bench", "infer", "--results", tmp_path / "missing" / "r.json"], "does not exist"),
        (["bench", "infer", "--results", tmp_path / "r.txt"], "digitlab writes benchmark results as '.json'"),
        (["bench", "read", "--markdown", tmp_path / "B.txt"], "'.md' or '.markdown'"),
        (["bench", "fuzz", "--failures", tmp_path / "a-file", "--results", tmp_path / "f.json"], "not a folder"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and err.startswith("digitlab: error:") and message in err, (args, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "d.png"]  # nothing written, no folder made


def test_output_folders_are_created_where_asked(capsys, tmp_path, mnist):
    write_digits(tmp_path, mnist, ["d.png"])
    seen = tmp_path / "new" / "deeper"
    code, _, err = run_cli(capsys, "predict", tmp_path / "d.png", "--show-input", seen)
    assert code == 0, err
    assert [p.name for p in seen.iterdir()] == ["d-28x28.png"]


@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8\xff"), (".JPEG", b"\xff\xd8\xff"), (".webp", b"RIFF")]
)
def test_the_annotation_is_written_in_the_format_its_extension_names(capsys, tmp_path, mnist, suffix, magic):
    write_digits(tmp_path, mnist, ["d.png"])
    out = tmp_path / f"out{suffix}"
    code, _, err = run_cli(capsys, "read", tmp_path / "d.png", "--annotate", out)
    assert code == 0, err
    data = out.read_bytes()
    assert data.startswith(magic) and (suffix != ".webp" or data[8:12] == b"WEBP")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[1] >= 256  # enlarged: 112 px


# --- predict on a photo of several digits --------------------------------------------------------


def test_predict_points_to_read_for_a_photo_of_several_digits(capsys, shared_data_dir):
    photo = shared_data_dir / "real-digits" / "photos" / "vinay0410_numbers.jpg"  # "13540"
    code, out, err = run_cli(capsys, "predict", photo)
    assert code == 0
    assert err == f"{photo} holds 5 digit-sized marks: `digitlab read {photo}` reads them all\n"
    code, out, _ = run_cli(capsys, "predict", photo, "--json")
    (row,) = json.loads(out)
    assert row["digit_marks"] == 5
    # the prediction itself is what it was without the count
    (plain,) = digitlab.predict(str(photo), count_marks=False)
    assert row["digit"] == plain.digit and row["probabilities"] == plain.probabilities and plain.digit_marks is None


def test_predict_on_one_mnist_digit_adds_no_note(capsys, tmp_path, mnist):
    write_digits(tmp_path, mnist, ["d.png"])
    cv2.imwrite(str(tmp_path / "as-is.png"), mnist.test_images[0, 0].numpy())  # 28x28, ink bright
    code, out, err = run_cli(capsys, "predict", tmp_path / "d.png", tmp_path / "as-is.png", "--json")
    assert code == 0 and err == ""
    assert [row["digit_marks"] for row in json.loads(out)] == [0, 0]


# --- errors: one line, the details with --verbose ----------------------------------------------


def test_the_missing_dataset_error_is_the_line_readme_promises(capsys, tmp_path, monkeypatch):
    from dataclasses import replace

    from digitlab.data import DATASETS

    spec = DATASETS["mnist"]
    unreachable = tuple(replace(f, mirrors=("http://127.0.0.1:9/mnist/",)) for f in spec.files)  # port 9: refused
    monkeypatch.setitem(DATASETS, "mnist", replace(spec, files=unreachable))
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    promised = re.search(r"`(digitlab: error: the mnist dataset is not in [^`]*)`", readme).group(1)
    folder = tmp_path / "mnist"
    code, out, err = run_cli(capsys, "data", "download", "mnist", "--data-dir", tmp_path)
    assert code == 2 and out == ""
    assert err == promised.replace("~/.cache/digitlab/mnist", str(folder)) + "\n"
    code, _, err = run_cli(capsys, "data", "download", "mnist", "--data-dir", tmp_path, "--verbose")
    first, *details = err.splitlines()
    assert code == 2 and first == promised.replace("~/.cache/digitlab/mnist", str(folder)).replace(
        " (--verbose: the details)", ""
    )
    details = [line.strip() for line in details]
    assert "Tried:" in details and sum("http://127.0.0.1:9/mnist/" in line for line in details) == 1
    assert any("t10k-labels-idx1-ubyte.gz" in line for line in details)
    assert list(tmp_path.iterdir()) == []


# --- what a reading's JSON and a repr say ------------------------------------------------------


def test_read_json_says_the_box_format(capsys, tmp_path, mnist):
    write_digits(tmp_path, mnist, ["d.png"])
    code, out, _ = run_cli(capsys, "read", tmp_path / "d.png", "--json")
    (result,) = json.loads(out)
    assert "[x, y, w, h]" in result["box_format"] and "pixels of the original image" in result["box_format"]
    x, y, w, h = result["lines"][0]["digits"][0]["box"]  # the keys as before
    assert 0 <= x < x + w <= 112 and 0 <= y < y + h <= 112


def test_a_prediction_and_a_run_repr_in_one_line(tmp_path, mnist):
    (prediction,) = digitlab.predict(mnist.test_images[0, 0].numpy(), prepare=False)
    text = repr(prediction)
    assert "\n" not in text and len(text) < 200 and "array" not in text
    assert (
        text.startswith(f"Prediction(digit={prediction.digit!r}, confidence=") and "model_input=<28x28 uint8>" in text
    )
    run = digitlab.train(
        "keras-mlp-dropout", epochs=1, subset=1000, dataset=mnist, out=tmp_path, progress=False, evaluate_after=False
    )
    text = repr(run)
    assert "\n" not in text and len(text) < 200
    assert text.startswith(f"Run({str(run.path)!r}, recipe='keras-mlp-dropout', epochs=1, accuracy=0.")
