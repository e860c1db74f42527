"""Training on the user's own digits: `digitlab train RECIPE --data DIR|FILE.csv|DATASET` (data/folders.py).

Real short runs on real MNIST test digits the tests write as PNG files into class folders.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import digitlab
from digitlab.cli import main
from digitlab.inference import BUNDLED_MODEL
from digitlab.preprocess import to_mnist_style

PER_CLASS = 30


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def own_digits(tmp_path_factory, mnist) -> Path:
    """PER_CLASS MNIST test digits per class as PNG files, dark ink on white, in DIR/0/ ... DIR/9/."""
    root = tmp_path_factory.mktemp("own") / "digits"
    labels = mnist.test_labels.numpy()
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(labels == digit)[:PER_CLASS]):
            cv2.imwrite(str(root / str(digit) / f"{k:03d}.png"), 255 - mnist.test_images[i, 0].numpy())
    return root


def _config(run_path: Path) -> dict:
    return json.loads((run_path / "config.json").read_text())


def test_a_folder_of_class_subfolders_trains_and_tests_on_its_held_out_part(own_digits, tmp_path):
    run = digitlab.train("keras-mlp-dropout", data=[own_digits], epochs=2, batch_size=16, out=tmp_path, progress=False)
    train = _config(run.path)["train"]
    assert train["data"] == [str(own_digits.resolve())]
    assert train["val_split"] == 0.1 and train["test"] == "held-out training images"
    assert run.dataset.train_images.shape == (10 * PER_CLASS, 1, 28, 28)
    assert len(run.dataset.test_labels) == PER_CLASS  # 10% of 300 held out, and tested on
    # each image prepared as predict prepares it, once
    first = sorted((own_digits / "3").iterdir())[0]
    prepared = to_mnist_style(first)
    assert any(np.array_equal(prepared, image[0]) for image in run.dataset.train_images.numpy())
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.4  # measured 0.63 on the 30 held out after two epochs on 270 (chance: 0.1)


def test_unreadable_images_are_one_error_naming_each(own_digits, tmp_path, capsys):
    bad = tmp_path / "bad"
    for digit in range(10):
        (bad / str(digit)).mkdir(parents=True)
        for f in sorted((own_digits / str(digit)).iterdir())[:3]:
            (bad / str(digit) / f.name).write_bytes(f.read_bytes())
    broken = bad / "4" / "broken.png"
    broken.write_bytes((own_digits / "4" / "000.png").read_bytes()[:40])
    text = bad / "7" / "notes.png"
    text.write_text("not an image")
    blank = bad / "1" / "blank.png"
    cv2.imwrite(str(blank), np.full((28, 28), 255, np.uint8))
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "keras-mlp-dropout", "--data", bad, "--epochs", "1", "--out", out)
    assert code == 2
    assert "3 of 33 images cannot be used" in err
    for path in (broken, text, blank):
        assert str(path) in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_a_csv_with_a_bad_label_names_the_line(own_digits, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text(f"file,label\n{own_digits}/0/000.png,0\n{own_digits}/1/000.png,12\n")
    code, _, err = run_cli(capsys, "train", "keras-mlp-dropout", "--data", listing, "--out", tmp_path / "runs")
    assert code == 2
    assert f"{listing}, line 3: label '12' is not a digit 0-9" in err


def test_other_entries_in_the_folder_and_no_test_split_are_clear_errors(own_digits, tmp_path, capsys):
    stray = tmp_path / "stray"
    (stray / "seven").mkdir(parents=True)
    code, _, err = run_cli(capsys, "train", "keras-mlp-dropout", "--data", stray, "--out", tmp_path / "runs")
    assert code == 2 and "holds seven" in err and "class subfolders 0 ... 9" in err
    code, _, err = run_cli(capsys, "train", "fast", "--data", own_digits, "--val-split", "0", "--out", tmp_path)
    assert code == 2 and "--val-split" in err
    code, _, err = run_cli(capsys, "train", "fast", "--data", tmp_path / "nothing", "--out", tmp_path)
    assert code == 2 and "not a dataset name" in err


def test_a_csv_mixed_with_a_named_dataset_tests_on_its_test_split_and_resumes(
    own_digits, tmp_path, capsys, shared_data_dir
):
    (tmp_path / "imgs").mkdir()
    rows = ["file,label"]
    for digit in range(10):
        for f in sorted((own_digits / str(digit)).iterdir())[:5]:
            (tmp_path / "imgs" / f"{digit}-{f.name}").write_bytes(f.read_bytes())
            rows.append(f"imgs/{digit}-{f.name},{digit}")  # relative to the CSV
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    out = tmp_path / "runs"
    common = ["--data-dir", shared_data_dir, "--quiet"]
    code, stdout, err = run_cli(
        capsys,
        "train",
        "keras-mlp-dropout",
        "--data",
        listing,
        "--data",
        "usps",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        out,
        *common,
    )
    assert code == 0, err
    (run_path,) = out.iterdir()
    config = _config(run_path)
    assert config["train"]["data"] == [str(listing), "usps"] and config["train"]["test"] == "test set"
    assert config["dataset"]["name"] == "list.csv+usps"
    metrics = json.loads((run_path / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5  # on USPS test after one epoch (chance: 0.1)
    # --resume reloads the recorded sources, without --data
    code, _, err = run_cli(capsys, "train", "--resume", run_path, "--epochs", "2", *common)
    assert code == 0, err
    assert len(json.loads((run_path / "history.json").read_text())) == 2


@pytest.fixture(scope="module")
def usps(shared_data_dir):
    return digitlab.load_dataset("usps", data_dir=shared_data_dir, download=False, progress=False)


def test_fine_tuning_from_a_run_on_other_data_improves_on_the_new_data(tmp_path, capsys, mnist, usps, shared_data_dir):
    quick = {"epochs": 1, "batch_size": 32, "progress": False, "data_dir": shared_data_dir}
    base = digitlab.train("keras-mlp-dropout", dataset=mnist, subset=3000, out=tmp_path / "base", **quick)
    before = digitlab.evaluate(base.path, dataset=usps, out=tmp_path / "before", progress=False).accuracy
    tuned = digitlab.train("keras-mlp-dropout", data=["usps"], subset=500, init=base.path, out=tmp_path / "t", **quick)
    scratch = digitlab.train("keras-mlp-dropout", data=["usps"], subset=500, out=tmp_path / "s", **quick)
    after = json.loads((tuned.path / "metrics.json").read_text())["accuracy"]
    fresh = json.loads((scratch.path / "metrics.json").read_text())["accuracy"]
    assert _config(tuned.path)["train"]["init"] == str(base.path.resolve())
    print(f"usps test: before {before:.4f} fine-tuned {after:.4f} from scratch {fresh:.4f}")
    assert after > before + 0.02 and after > fresh + 0.02, (before, after, fresh)


def test_init_refuses_another_network_or_no_run(tmp_path, capsys, mnist):
    base = digitlab.train("keras-mlp-dropout", dataset=mnist, subset=200, epochs=1, out=tmp_path, progress=False)
    code, _, err = run_cli(capsys, "train", "digitnet", "--init", base.path, "--out", tmp_path / "runs")
    assert code == 2 and "its weights are not those of digitnet's network" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    code, _, err = run_cli(capsys, "train", "fast", "--init", tmp_path / "nowhere", "--out", tmp_path / "runs")
    assert code == 2 and "not a run directory" in err


def test_init_bundled_fine_tunes_the_bundled_model(own_digits, tmp_path):
    run = digitlab.train(
        "digitnet-real", data=[own_digits], init="bundled", epochs=1, batch_size=16, out=tmp_path, progress=False
    )
    assert _config(run.path)["train"]["init"] == str(BUNDLED_MODEL.resolve())
    assert json.loads((run.path / "metrics.json").read_text())["accuracy"] > 0.9  # from scratch: near chance


def _recorded(run_path: Path) -> tuple[dict, list[dict]]:
    """metrics.json as training wrote it, and history.json."""
    metrics = json.loads((run_path / "metrics.json").read_text())
    return metrics, json.loads((run_path / "history.json").read_text())


def test_evaluate_reloads_a_folder_run_and_tests_on_its_held_out_part_again(own_digits, tmp_path, capsys):
    out = tmp_path / "runs"
    options = "--epochs 1 --batch-size 16 --quiet".split()
    code, _, err = run_cli(capsys, "train", "keras-mlp-dropout", "--data", own_digits, *options, "--out", out)
    assert code == 0, err
    (run_path,) = out.iterdir()
    recorded, history = _recorded(run_path)
    # the API, from the run directory alone: the folder read again, the same 30 images held out
    metrics = digitlab.evaluate(run_path, out=tmp_path / "again", progress=False)
    assert len(metrics.labels) == recorded["n"] == PER_CLASS
    assert metrics.accuracy == recorded["accuracy"] == history[-1]["val_accuracy"]  # the test split is the val split
    assert metrics.confusion.tolist() == recorded["confusion"]
    # the command, test and val
    code, stdout, err = run_cli(capsys, "evaluate", run_path, "--out", tmp_path / "cli")
    assert code == 0, err
    assert f"accuracy {recorded['accuracy'] * 100:.2f}%" in stdout and f"({PER_CLASS} images)" in stdout
    code, stdout, err = run_cli(capsys, "evaluate", run_path, "--split", "val", "--out", tmp_path / "cli")
    assert code == 0, err
    assert json.loads((tmp_path / "cli" / "metrics-val.json").read_text())["accuracy"] == recorded["accuracy"]


def test_evaluate_reloads_a_mix_of_named_datasets_with_its_limit(tmp_path, capsys, shared_data_dir, usps):
    out = tmp_path / "runs"
    common = ["--data-dir", shared_data_dir]
    options = "--data usps --data optdigits --limit 400 --epochs 1 --batch-size 32 --quiet".split()
    code, _, err = run_cli(capsys, "train", "keras-mlp-dropout", *options, "--out", out, *common)
    assert code == 0, err
    (run_path,) = out.iterdir()
    config = _config(run_path)
    assert config["dataset"]["name"] == "usps+optdigits" and config["train"]["data"] == ["usps", "optdigits"]
    recorded, history = _recorded(run_path)
    optdigits = digitlab.load_dataset("optdigits", data_dir=shared_data_dir, download=False, progress=False)
    assert recorded["n"] == len(usps.test_labels) + len(optdigits.test_labels)  # both test splits
    code, stdout, err = run_cli(capsys, "evaluate", run_path, *common)  # was: unknown dataset 'usps+optdigits'
    assert code == 0, err
    again = json.loads((run_path / "metrics.json").read_text())
    for key in ("n", "accuracy", "confusion"):
        assert again[key] == recorded[key], key
    # val: the 40 images --limit 400 and --val-split 0.1 held out, as training drew them from its seed
    code, _, err = run_cli(capsys, "evaluate", run_path, "--split", "val", *common)
    assert code == 0, err
    val = json.loads((run_path / "metrics-val.json").read_text())
    assert val["n"] == 40 and val["accuracy"] == history[-1]["val_accuracy"]
