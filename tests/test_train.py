"""Training on real MNIST: accuracy thresholds, determinism, resume, run directory, API."""

import csv
import dataclasses
import importlib
import json
import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import digitlab
import digitlab.api
from digitlab.cli import main
from digitlab.data import split_validation
from digitlab.errors import CheckpointError, ConfigError
from digitlab.evaluate import fit_temperature, predict_logits
from digitlab.recipes import OPTIMIZER_NAMES, SCHEDULE_NAMES, Recipe, get_recipe
from digitlab.train import OPTIMIZERS, SCHEDULES, RunOptions, learning_rate, make_optimizer
from jobtools import job_environment

# `digitlab.train` is the API function; the module of the same name is reached through importlib.
train_module = importlib.import_module("digitlab.train")

RUN_FILES = {
    "config.json",
    "model.safetensors",
    "history.json",
    "metrics.json",
    "report.txt",
    "curves.png",
    "confusion.png",
    "errors.png",
    "samples.png",
    "checkpoint",
}


def test_keras_mlp_dropout_one_epoch_reaches_96_percent(mnist, tmp_path):
    # Keras 3 + TensorFlow measured 96.43% after epoch 1 of this recipe (shared/REFERENCE.md).
    run = digitlab.train("keras-mlp-dropout", epochs=1, dataset=mnist, out=tmp_path, progress=False)
    assert run.history[-1]["val_accuracy"] >= 0.96
    assert RUN_FILES <= {p.name for p in run.path.iterdir()}
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(run.history[-1]["val_accuracy"], abs=1e-6)
    assert not list(run.path.rglob("*.tmp"))
    assert all(p.stat().st_mode & 0o044 for p in run.path.iterdir() if p.is_file())  # readable by others


def test_digitnet_one_epoch_reaches_98_5_percent(mnist, tmp_path):
    run = digitlab.train("digitnet", epochs=1, dataset=mnist, out=tmp_path, progress=False, evaluate_after=False)
    assert run.history[-1]["val_accuracy"] >= 0.985


def history_without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _crash_after_checkpoint(monkeypatch, crash_epoch: int):
    """Training raises KeyboardInterrupt right after the checkpoint of `crash_epoch` is written; gives
    the real save_checkpoint, to put back."""
    real_save = train_module.save_checkpoint

    def crash(run_dir, epoch, *args, **kwargs):
        path = real_save(run_dir, epoch, *args, **kwargs)
        if epoch == crash_epoch:
            raise KeyboardInterrupt("simulated crash")
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", crash)
    return real_save


@pytest.mark.parametrize("recipe, subset", [("keras-mlp-dropout", 3000), ("digitnet", 1500)])
def test_resume_gives_the_same_history_as_an_uninterrupted_run(recipe, subset, mnist, tmp_path, monkeypatch):
    common = dict(epochs=3, dataset=mnist, subset=subset, progress=False, evaluate_after=False)
    whole = digitlab.train(recipe, out=tmp_path / "whole", **common)

    real_save = _crash_after_checkpoint(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        digitlab.train(recipe, out=tmp_path / "broken", **common)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    (broken,) = (tmp_path / "broken").iterdir()
    resumed = digitlab.train(None, resume=broken, dataset=mnist, progress=False, evaluate_after=False)

    assert resumed.path == broken
    assert len(resumed.history) == 3
    assert history_without_time(resumed.history) == history_without_time(whole.history)
    assert history_from_csv(broken / "history.csv") == resumed.history  # rewritten from the checkpoint, then extended
    a = digitlab.load_model(whole.path).module.state_dict()
    b = digitlab.load_model(resumed.path).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_finished_run_asks_for_more_epochs(mnist, tmp_path):
    run = digitlab.train(
        "keras-mlp-dropout", epochs=1, subset=500, dataset=mnist, out=tmp_path, progress=False, evaluate_after=False
    )
    # Trained but never evaluated (as if killed during evaluation): resuming finishes the evaluation.
    assert not (run.path / "metrics.json").exists()
    finished = digitlab.train(None, resume=run.path, dataset=mnist, progress=False)
    assert [r["epoch"] for r in finished.history] == [1]
    assert (run.path / "metrics.json").is_file()
    with pytest.raises(CheckpointError, match="--epochs"):
        digitlab.train(None, resume=run.path, dataset=mnist, progress=False)
    more = digitlab.train(None, resume=run.path, epochs=2, dataset=mnist, progress=False, evaluate_after=False)
    assert [r["epoch"] for r in more.history] == [1, 2]
    with pytest.raises(ConfigError, match="only --epochs"):
        digitlab.train(None, resume=run.path, epochs=3, lr=0.1, dataset=mnist, progress=False)


def test_val_split_validates_on_held_out_training_images(mnist, tmp_path):
    run = digitlab.train(
        "keras-mlp-dropout",
        epochs=1,
        subset=2000,
        val_split=0.25,
        dataset=mnist,
        out=tmp_path,
        progress=False,
        evaluate_after=False,
    )
    assert run.config["train"]["validation"] == "held-out training images"
    assert run.config["train"]["val_split"] == 0.25
    assert 0.5 < run.history[0]["val_accuracy"] <= 1.0
    held_out = digitlab.evaluate(run.path, split="val", dataset=mnist, out=tmp_path / "eval", progress=False)
    assert len(held_out.labels) == 500
    assert held_out.accuracy == pytest.approx(run.history[0]["val_accuracy"], abs=1e-9)
    with pytest.raises(ConfigError):
        digitlab.train("keras-mlp-dropout", val_split=1.0, dataset=mnist, out=tmp_path, progress=False)


def test_runs_of_other_seeds_given_one_split_seed_hold_out_the_same_images(mnist, tmp_path):
    # How several seeds, and their ensemble, are compared on one hold-out (benchmarks/max_validation.py).
    def held_out_run(seed, *settings):
        return digitlab.train(
            "keras-mlp-dropout",
            epochs=1,
            subset=2000,
            val_split=0.25,
            seed=seed,
            settings=list(settings),
            dataset=mnist,
            out=tmp_path / f"seed{seed}{len(settings)}",
            progress=False,
            evaluate_after=False,
        )

    first, second = held_out_run(1, "split_seed=0"), held_out_run(2, "split_seed=0")
    assert (first.recipe.held_out_seed, second.recipe.held_out_seed) == (0, 0)
    assert first.config["recipe"]["split_seed"] == 0
    _, _, images, labels = split_validation(mnist, 0.25, 2000, seed=0)
    for run in (first, second):
        held_out = digitlab.evaluate(run.path, split="val", dataset=mnist, out=run.path / "eval", progress=False)
        np.testing.assert_array_equal(held_out.labels, labels.numpy())
        assert held_out.accuracy == pytest.approx(run.history[0]["val_accuracy"], abs=1e-9)  # as training held it out
    assert first.history[0]["loss"] != second.history[0]["loss"]  # the seed still draws the weights and the order
    both = digitlab.ensemble([first.path, second.path], tmp_path / "ensemble")
    assert json.loads((both / "config.json").read_text())["train"]["val_split"] == 0.25  # one hold-out: kept
    assert len(digitlab.evaluate(both, split="val", dataset=mnist, progress=False).labels) == 500
    own = held_out_run(1)  # without split_seed, the seed draws them as before
    assert own.recipe.held_out_seed == 1 and own.config["recipe"]["split_seed"] is None
    assert not np.array_equal(
        digitlab.evaluate(own.path, split="val", dataset=mnist, out=own.path / "eval", progress=False).labels,
        labels.numpy(),
    )
    mixed = digitlab.ensemble([first.path, own.path], tmp_path / "mixed")
    assert json.loads((mixed / "config.json").read_text())["train"]["val_split"] == 0.0  # two hold-outs: no 'val'
    assert get_recipe("digitnet").with_settings(["split_seed=none"]).split_seed is None
    with pytest.raises(ConfigError, match="split_seed"):
        get_recipe("digitnet").with_settings(["split_seed=2.5"])
    with pytest.raises(ConfigError, match="split_seed"):
        Recipe.from_json({**get_recipe("digitnet").to_json(), "split_seed": "0"})


def test_loaded_model_predicts_uint8_and_float_arrays(mnist, tmp_path):
    run = digitlab.train(
        "keras-mlp-dropout", epochs=1, subset=5000, dataset=mnist, out=tmp_path, progress=False, evaluate_after=False
    )
    model = digitlab.load_model(run.path)
    images = mnist.test_images[:200, 0].numpy()  # (200, 28, 28) uint8
    labels = mnist.test_labels[:200].numpy()
    digits = model.predict(images)
    assert digits.shape == (200,)
    assert (digits == labels).mean() > 0.85
    np.testing.assert_array_equal(model.predict(images.astype(np.float32) / 255), digits)
    assert model.predict(images[0]).shape == (1,)
    proba = model.predict_proba(images[:3])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    with pytest.raises(ConfigError, match="shape"):
        model.predict(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.predict(np.full((1, 28, 28), 255.0, np.float32))


def test_evaluate_writes_report_and_plots_for_another_split(mnist, tmp_path):
    run = digitlab.train(
        "keras-mlp-dropout", epochs=1, subset=5000, dataset=mnist, out=tmp_path, progress=False, evaluate_after=False
    )
    metrics = digitlab.evaluate(run.path, split="train", dataset=mnist, out=tmp_path / "eval", progress=False)
    assert 0.85 < metrics.accuracy < 1
    names = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {
        "metrics-train.json",
        "report-train.txt",
        "confusion-train.png",
        "errors-train.png",
        "samples-train.png",
        "curves.png",
    } <= names
    assert "precision" in (tmp_path / "eval" / "report-train.txt").read_text()
    with pytest.raises(ConfigError, match="without --val-split"):
        digitlab.evaluate(run.path, split="val", dataset=mnist, progress=False)


def test_onecycle_schedule_rises_then_falls_to_zero():
    recipe = get_recipe("digitnet").override(epochs=10)
    steps = 100
    rates = [learning_rate(recipe, s, steps) for s in range(10 * steps)]
    peak = int(np.argmax(rates))
    assert rates[peak] == pytest.approx(recipe.lr)
    assert rates[0] == pytest.approx(recipe.lr / 10)
    assert peak == pytest.approx(recipe.warmup * 10 * steps, abs=1)
    assert rates[-1] < recipe.lr / 100
    assert all(a <= b for a, b in zip(rates[:peak], rates[1 : peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :]))
    step = get_recipe("keras-cnn").override(schedule="step", step_epochs=2, gamma=0.5)
    assert learning_rate(step, 2 * steps, steps) == pytest.approx(step.lr * 0.5)


def test_the_recipe_names_are_the_keys_of_the_optimizer_and_schedule_tables():
    # recipes.py checks names below train.py, which builds them: the two lists must not drift apart.
    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert set(SCHEDULE_NAMES) == set(SCHEDULES)
    steps = 10
    for name in SCHEDULES:
        recipe = get_recipe("keras-cnn").override(schedule=name, epochs=3)
        assert all(learning_rate(recipe, s, steps) >= 0 for s in range(3 * steps))
    model = torch.nn.Linear(2, 2)
    for name in OPTIMIZERS:
        assert isinstance(
            make_optimizer(get_recipe("keras-cnn").override(optimizer=name), model.parameters()), torch.optim.Optimizer
        )


@pytest.mark.parametrize("field, name", [("optimizer", "rmsprop"), ("schedule", "cosine")])
def test_an_unknown_optimizer_or_schedule_is_a_clear_error_everywhere(field, name):
    recipe = get_recipe("digitnet")
    message = f"unknown {field} '{name}'; known {field}s: "
    with pytest.raises(ConfigError, match=message):
        recipe.override(**{field: name})
    with pytest.raises(ConfigError, match=message):
        recipe.with_settings([f"{field}={name}"])
    with pytest.raises(ConfigError, match=message):  # a run's config.json naming it
        Recipe.from_json({**recipe.to_json(), field: name}).validate()
    unchecked = dataclasses.replace(recipe, **{field: name})  # built around validate: the tables refuse it too
    with pytest.raises(ConfigError, match=message):
        if field == "optimizer":
            make_optimizer(unchecked, torch.nn.Linear(2, 2).parameters())
        else:
            learning_rate(unchecked, 0, 10)  # no falling through to another schedule


def test_fit_takes_its_options_as_digitlab_train_gives_them(tmp_path):
    # What `bench speed` calls: train.fit(recipe, RunOptions(...)); the history is digitlab.train's.
    options = RunOptions(
        out=tmp_path / "fit", settings=("dataset=digits8x8",), progress=False, overrides={"epochs": 2, "seed": 3}
    )
    run = train_module.fit("keras-mlp-dropout", options)
    trained = digitlab.train(
        "keras-mlp-dropout",
        epochs=2,
        seed=3,
        settings=["dataset=digits8x8"],
        out=tmp_path / "train",
        progress=False,
        evaluate_after=False,
    )
    assert run.path.parent == tmp_path / "fit" and run.recipe.seed == 3
    assert history_without_time(run.history) == history_without_time(trained.history)


def test_split_validation_holds_out_a_seeded_part_of_a_seeded_subset(mnist):
    train_x, train_y, _, val_y = split_validation(mnist, 0.25, 2000, seed=5)
    assert (len(train_y), len(val_y)) == (1500, 500)
    again = split_validation(mnist, 0.25, 2000, seed=5)
    assert torch.equal(again[3], val_y) and torch.equal(again[0], train_x)
    assert not torch.equal(split_validation(mnist, 0.25, 2000, seed=6)[3], val_y)
    images, _, none_x, none_y = split_validation(mnist, 0.0, None, seed=5)
    assert images is mnist.train_images and none_x is None and none_y is None
    with pytest.raises(ConfigError, match="--limit"):
        split_validation(mnist, 0.0, 0, seed=5)


def test_opencv_recipe_runs_through_the_same_api_and_run_directory(mnist, tmp_path):
    run = digitlab.train("opencv-mlp", epochs=2, subset=1000, dataset=mnist, out=tmp_path, progress=False)
    assert {"config.json", "model.safetensors", "history.json", "metrics.json", "confusion.png"} <= {
        p.name for p in run.path.iterdir()
    }
    metrics = json.loads((run.path / "metrics.json").read_text())
    # OpenCVMLP reproduces OpenCV's predict: the torch evaluation agrees with OpenCV's own accuracy.
    assert metrics["accuracy"] == pytest.approx(run.history[0]["val_accuracy"], abs=1e-4)
    assert metrics["accuracy"] > 0.6
    model = digitlab.load_model(run.path)
    assert (model.predict(mnist.test_images[:100, 0]) == mnist.test_labels[:100].numpy()).mean() > 0.6
    with pytest.raises(CheckpointError):
        digitlab.train(None, resume=run.path, epochs=3, dataset=mnist, progress=False)


def test_augmentation_is_seeded_bounded_and_does_what_it_says(mnist):
    from digitlab.recipes import Augment

    x = mnist.test_images[:64].float() / 255
    pen = Augment(shift=2, rotate=12, scale=0.15, thickness=0.3, blur=1.0, noise=0.05, contrast=0.3)
    a = train_module.augment_batch(x, pen, torch.Generator().manual_seed(7))
    b = train_module.augment_batch(x, pen, torch.Generator().manual_seed(7))
    c = train_module.augment_batch(x, pen, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    # thickness=0.5: every image is either dilated or eroded; dilation adds ink, erosion removes it.
    thick = train_module.augment_batch(x, Augment(thickness=0.5), torch.Generator().manual_seed(0))
    changed = (thick.sum((1, 2, 3)) - x.sum((1, 2, 3))).abs() > 1
    assert changed.all()
    assert (thick > x).any() or (thick < x).any()
    assert torch.equal(train_module.augment_batch(x, Augment(), torch.Generator()), x)  # nothing asked, nothing done


def test_elastic_distortion_erasing_and_mirroring_do_what_they_say(mnist):
    from digitlab.recipes import Augment

    x = mnist.test_images[:64].float() / 255
    seeded = torch.Generator().manual_seed

    # elastic: a smooth field of at most 2 pixels bends the strokes; every image changes, keeps its ink
    bent = train_module.augment_batch(x, Augment(elastic=2.0), seeded(1))
    assert torch.equal(bent, train_module.augment_batch(x, Augment(elastic=2.0), seeded(1)))
    assert ((bent - x).abs().sum((1, 2, 3)) > 1).all()
    ink = bent.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert (ink > 0.5).all() and (ink < 2).all()  # strokes stretched or squeezed (0.69-1.56 here), not lost
    field = train_module.elastic_field(64, 28, 28, 2.0, seeded(1), x.device) * 14  # grid units -> pixels
    assert field.abs().max() <= 2.0 + 1e-5 and field.abs().max() > 1.0
    assert (field[:, 1:] - field[:, :-1]).abs().max() < 1.0  # smooth: neighbours move alike

    # erase 1.0: every image loses one box of 2-15% of its pixels to the background, nothing else
    erased = train_module.augment_batch(x, Augment(erase=1.0), seeded(2))
    boxes = train_module.erased_boxes(64, 28, 28, 1.0, seeded(2), x.device)
    share = boxes.float().mean((1, 2, 3))
    assert (share >= 0.01).all() and (share <= 0.2).all()
    assert torch.equal(erased, x * ~boxes)
    assert not train_module.erased_boxes(64, 28, 28, 0.0, seeded(2), x.device).any()

    # flip 1.0: every image mirrored left to right
    assert torch.equal(train_module.augment_batch(x, Augment(flip=1.0), seeded(3)), x.flip(3))


# --- issue 13: what a person sees, calibration, history.csv, TensorBoard, --keep best -------------

TINY = ["--set", "dataset=digits8x8", "--device", "cpu"]  # the offline 8x8 digits: no download, seconds


def history_from_csv(path) -> list[dict]:
    with open(path, newline="") as file:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(file)]


def test_train_prints_a_header_before_its_bars_and_only_the_result_on_stdout(tmp_path, capsys):
    assert (
        main(["train", "keras-mlp-dropout", "--epochs", "1", "--val-split", "0.25", "--out", str(tmp_path), *TINY]) == 0
    )
    out, err = capsys.readouterr()
    (run,) = tmp_path.iterdir()
    header = err[: err.index("epoch 1/1")].strip().splitlines()  # everything printed before the first bar
    ds = digitlab.load_dataset("digits8x8", progress=False)
    n_val, threads = round(len(ds.train_labels) * 0.25), torch.get_num_threads()
    assert header == [
        "recipe: keras-mlp-dropout (1 epoch, batch 128, adam lr 0.001, constant schedule)",
        f"dataset: digits8x8: {len(ds.train_labels) - n_val:,} training, {n_val:,} validation (held out, "
        f"--val-split 0.25), {len(ds.test_labels):,} test images",
        f"device: cpu, {threads} thread{'s' if threads != 1 else ''}",
        "bf16: no (the recipe trains in float32)",  # keras-mlp-dropout asks for no bf16
        f"run directory: {run}",
    ]
    assert "epoch 1/1: loss" in err  # the epoch's line, on stderr with the bars
    assert out.splitlines()[0].startswith("keras-mlp-dropout: test accuracy ")
    assert out.splitlines()[-1] == f"run directory: {run}" and "epoch 1/1" not in out
    # --quiet: nothing on stderr at all
    assert main(["train", "keras-mlp-dropout", "--epochs", "1", "--quiet", "--out", str(tmp_path / "q"), *TINY]) == 0
    assert capsys.readouterr().err == ""


def test_the_header_says_bf16_is_used_exactly_where_the_cpu_has_it(shared_data_dir, tmp_path):
    """`fast` asks for bf16: the header and config.json say whether this CPU gave it, and what a CPU
    without it fell back to. oneDNN's ONEDNN_MAX_CPU_ISA=AVX2 makes this CPU one without bf16, for real:
    autocast is then off and the run trains in float32."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("ONEDNN_MAX_CPU_ISA=AVX2 hides bf16 on x86 only")
    results = {}
    for isa in ("", "AVX2"):
        env = {**job_environment(shared_data_dir), "ONEDNN_MAX_CPU_ISA": isa}
        out = tmp_path / (isa or "native")
        command = [sys.executable, "-m", "digitlab", "train", "fast", "--limit", "500", "--epochs", "1"]
        done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        (run,) = out.iterdir()
        bf16_line = next(line for line in done.stderr.splitlines() if line.startswith("bf16: "))
        results[isa] = bf16_line, json.loads((run / "config.json").read_text())["train"]
    line, train = results["AVX2"]
    assert line == "bf16: no (this CPU has no AVX-512 BF16/AMX; float32)"
    assert train["bf16"] is False and train["precision"] == "float32 (this CPU has no AVX-512 BF16/AMX)"
    line, train = results[""]
    if train_module.bf16_supported(torch.device("cpu")):
        assert line == "bf16: yes (autocast for the forward pass; weights and optimiser in float32)"
        assert train["bf16"] is True and train["precision"] == "bf16 autocast"
    else:
        assert line == results["AVX2"][0]


def test_a_run_with_a_validation_split_is_calibrated_on_it_and_predicts_the_same(mnist, tmp_path):
    run = digitlab.train(
        "keras-mlp-dropout", epochs=2, subset=3000, val_split=0.2, dataset=mnist, out=tmp_path, progress=False
    )
    calibration = json.loads((run.path / "config.json").read_text())["calibration"]
    _, _, val_x, val_y = split_validation(mnist, 0.2, 3000, run.recipe.seed)
    model = digitlab.load_model(run.path, backend="torch")
    logits = predict_logits(model.module, val_x)
    # The bundled model's way (benchmarks/bundle_model.py): fit_temperature on held-out logits.
    assert calibration["temperature"] == pytest.approx(fit_temperature(logits, val_y), rel=1e-9)
    assert calibration["fitted_on"] == "the validation split: 600 held-out training images"
    assert model.temperature == calibration["temperature"] != 1.0
    assert calibration["val_cross_entropy_calibrated"] <= calibration["val_cross_entropy"]
    # Only the confidences change: the argmax, the history and the accuracy are those of the logits.
    images = mnist.test_images[:500]
    np.testing.assert_array_equal(model.predict(images), model.logits(images).argmax(1))
    proba = model.predict_proba(images)
    np.testing.assert_allclose(proba, torch.softmax(torch.from_numpy(model.logits(images)) / model.temperature, 1))
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["temperature"] == model.temperature
    assert metrics["calibrated_loss"] < metrics["loss"]
    assert any("temperature fitted on the validation split" in note for note in metrics["notes"])


def test_a_run_without_a_validation_split_says_it_is_not_calibrated(tmp_path):
    run = digitlab.train("keras-mlp-dropout", epochs=1, settings=["dataset=digits8x8"], out=tmp_path, progress=False)
    calibration = run.config["calibration"]
    assert calibration["temperature"] == 1.0 and calibration["fitted_on"] is None
    assert "not calibrated: trained without --val-split" in calibration["note"]
    assert digitlab.load_model(run.path).temperature == 1.0
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["calibrated_loss"] == metrics["loss"]
    assert any(note.startswith("not calibrated: trained without --val-split") for note in metrics["notes"])


def test_the_notes_on_loss_and_val_loss_say_what_the_code_computes(mnist, tmp_path):
    """With label smoothing 0.1 history's val_loss is the smoothed objective on the validation images
    and metrics' loss the plain cross-entropy: both recomputed here from the saved model."""
    run = digitlab.train(
        "fast-995",
        epochs=1,
        subset=2000,
        val_split=0.25,
        dataset=mnist,
        out=tmp_path,
        progress=False,
        evaluate_after=False,
    )
    metrics = digitlab.evaluate(run.path, split="val", dataset=mnist, progress=False)
    written = json.loads((run.path / "metrics-val.json").read_text())
    _, _, val_x, val_y = split_validation(mnist, 0.25, 2000, run.recipe.seed)
    logits = predict_logits(digitlab.load_model(run.path, backend="torch").module, val_x)
    assert run.history[-1]["val_loss"] == pytest.approx(
        F.cross_entropy(logits, val_y, label_smoothing=0.1).item(), rel=1e-4
    )
    assert metrics.loss == pytest.approx(F.cross_entropy(logits, val_y).item(), rel=1e-5)
    assert metrics.loss < run.history[-1]["val_loss"]
    (smoothing_note,) = [note for note in written["notes"] if note.startswith("label smoothing 0.1")]
    # The floor the note gives: the entropy of the smoothed targets, 0.91 on the label and 0.01 elsewhere.
    floor = -(0.91 * math.log(0.91) + 9 * 0.01 * math.log(0.01))
    assert f"cannot fall below {floor:.3f} nats (10 classes)" in smoothing_note
    perfect = torch.full((1, 10), -30.0)
    perfect[0, 3] = 30.0  # an image right with certainty: the smoothed loss is still above the floor
    assert F.cross_entropy(perfect, torch.tensor([3]), label_smoothing=0.1).item() >= floor - 1e-6
    assert any("cross-entropy with label smoothing 0.1" in note for note in written["notes"])


def test_history_csv_holds_the_rows_of_history_json(tmp_path):
    run = digitlab.train("keras-mlp-dropout", epochs=3, settings=["dataset=digits8x8"], out=tmp_path, progress=False)
    rows = history_from_csv(run.path / "history.csv")
    assert rows == json.loads((run.path / "history.json").read_text()) == run.history
    assert (run.path / "history.csv").read_text().splitlines()[
        0
    ] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr"


def test_keep_best_keeps_the_best_validation_epoch_and_records_it(tmp_path):
    # Measured here: Adam at lr 0.01 on the 8x8 digits peaks at epoch 4 of 5 (0.9554, then 0.9471).
    common = dict(lr=0.01, val_split=0.25, settings=["dataset=digits8x8"], progress=False, evaluate_after=False)
    run = digitlab.train("keras-mlp-dropout", epochs=5, keep="best", out=tmp_path / "best", **common)
    accuracies = [row["val_accuracy"] for row in run.history]
    best = accuracies.index(max(accuracies)) + 1
    assert best < 5, accuracies
    config = json.loads((run.path / "config.json").read_text())
    assert config["train"]["keep"] == "best"
    assert config["kept"] == {
        "keep": "best",
        "epoch": best,
        "of_epochs": 5,
        "val_accuracy": max(accuracies),
        "why": "the best validation accuracy",
    }
    # The kept weights are those a run of `best` epochs ends with (a constant learning rate: the
    # same first epochs), in model.safetensors and in the returned model; the history stays whole.
    short = digitlab.train("keras-mlp-dropout", epochs=best, out=tmp_path / "short", **common)
    kept, expected = load_file(str(run.path / "model.safetensors")), load_file(str(short.path / "model.safetensors"))
    assert kept.keys() == expected.keys() and all(torch.equal(kept[k], expected[k]) for k in kept)
    assert all(torch.equal(v.cpu(), expected[k]) for k, v in run.model.state_dict().items())
    assert len(run.history) == 5
    last = digitlab.train("keras-mlp-dropout", epochs=5, out=tmp_path / "last", **common)
    assert last.config["kept"]["epoch"] == 5 and last.config["train"]["keep"] == "last"  # the default


def test_keep_best_survives_a_crash_and_resume(tmp_path, monkeypatch):
    common = dict(lr=0.01, val_split=0.25, settings=["dataset=digits8x8"], progress=False, evaluate_after=False)
    whole = digitlab.train("keras-mlp-dropout", epochs=5, keep="best", out=tmp_path / "whole", **common)
    real_save = _crash_after_checkpoint(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        digitlab.train("keras-mlp-dropout", epochs=5, keep="best", out=tmp_path / "broken", **common)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    (broken,) = (tmp_path / "broken").iterdir()
    assert (broken / "checkpoint" / "epoch-0004" / "best.safetensors").is_file()
    with pytest.raises(ConfigError, match="keeps its best epoch"):
        digitlab.train(None, resume=broken, keep="last", progress=False)
    resumed = digitlab.train(None, resume=broken, progress=False, evaluate_after=False)
    assert resumed.config["kept"] == whole.config["kept"]
    a, b = (load_file(str(r.path / "model.safetensors")) for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_best_without_a_validation_split_is_a_clear_error_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--keep best .* needs --val-split"):
        digitlab.train("keras-mlp-dropout", keep="best", settings=["dataset=digits8x8"], out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="--keep must be one of last, best"):
        digitlab.train("keras-mlp-dropout", keep="first", val_split=0.1, out=tmp_path, progress=False)
    assert main(["train", "keras-mlp-dropout", "--keep", "best", "--out", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitlab: error: --keep best") and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="no epochs to choose from"):
        digitlab.train("opencv-mlp", keep="best", val_split=0.1, out=tmp_path, progress=False)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """The scalars TensorBoard itself reads from a folder of event files (purges included)."""
    train_module.summary_writer()  # TensorBoard's no-TensorFlow switch, as training sets it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def needs_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the tensorboard package is missing: CI installs the [tensorboard] extra")
        pytest.skip("the tensorboard package is not installed (pip install 'digitlab[tensorboard]')")


def test_tensorboard_logs_each_epoch_and_a_resume_replaces_what_the_kill_left(tmp_path, monkeypatch):
    needs_tensorboard()
    common = dict(settings=["dataset=digits8x8"], progress=False, evaluate_after=False, tensorboard=True)
    whole = digitlab.train("keras-mlp-dropout", epochs=4, out=tmp_path / "whole", **common)
    scalars = tensorboard_scalars(whole.path / "tensorboard")
    assert set(scalars) == {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "seconds/epoch"}
    assert scalars["accuracy/val"] == [(r["epoch"], pytest.approx(r["val_accuracy"])) for r in whole.history]
    assert scalars["loss/train"] == [(r["epoch"], pytest.approx(r["loss"])) for r in whole.history]
    assert "tensorflow" not in sys.modules  # TensorBoard's stub, not TensorFlow (seconds, and its logs)

    # Killed after epoch 3's scalars, before its checkpoint: the resumed run trains epoch 3 again,
    # and TensorBoard shows each epoch once, the resumed values.
    real_save = train_module.save_checkpoint

    def killed_at_third(run_dir, epoch, *args, **kwargs):
        if epoch == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_save(run_dir, epoch, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        digitlab.train("keras-mlp-dropout", epochs=4, out=tmp_path / "killed", **common)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    (killed,) = (tmp_path / "killed").iterdir()
    assert [step for step, _ in tensorboard_scalars(killed / "tensorboard")["loss/train"]] == [1, 2, 3]
    resumed = digitlab.train(None, resume=killed, progress=False, evaluate_after=False)  # --tensorboard remembered
    scalars = tensorboard_scalars(killed / "tensorboard")
    assert [step for step, _ in scalars["loss/train"]] == [1, 2, 3, 4]
    assert scalars["loss/val"] == [(r["epoch"], pytest.approx(r["val_loss"])) for r in resumed.history]
    assert history_from_csv(killed / "history.csv") == json.loads((killed / "history.json").read_text())


def test_tensorboard_without_its_package_is_a_clear_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: `import tensorboard` fails
    with pytest.raises(ConfigError, match=r"pip install 'digitlab\[tensorboard\]'"):
        digitlab.train(
            "keras-mlp-dropout", tensorboard=True, settings=["dataset=digits8x8"], out=tmp_path, progress=False
        )
    assert main(["train", "keras-mlp-dropout", "--tensorboard", "--out", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitlab: error: --tensorboard needs the tensorboard package") and err.count("\n") == 1
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_ctrl_c_says_how_to_resume_and_the_resumed_run_says_where_it_continues(tmp_path, monkeypatch, capsys):
    real_save = train_module.save_checkpoint

    def ctrl_c_in(epoch_wanted):
        def save(run_dir, epoch, *args, **kwargs):
            if epoch == epoch_wanted:
                raise KeyboardInterrupt
            return real_save(run_dir, epoch, *args, **kwargs)

        return save

    monkeypatch.setattr(train_module, "save_checkpoint", ctrl_c_in(1))  # before any epoch is saved
    with pytest.raises(KeyboardInterrupt):
        digitlab.train(
            "keras-mlp-dropout",
            epochs=3,
            settings=["dataset=digits8x8"],
            out=tmp_path / "runs",
            data_dir=tmp_path / "d",
        )
    (run,) = (tmp_path / "runs").iterdir()
    err = capsys.readouterr().err
    assert (
        f"interrupted: the run directory {run}: no epoch had finished, so resuming starts it again from epoch 1" in err
    )
    assert err.rstrip().endswith(f"to continue: digitlab train --resume {run} --data-dir {tmp_path / 'd'}")
    monkeypatch.setattr(train_module, "save_checkpoint", ctrl_c_in(3))
    with pytest.raises(KeyboardInterrupt):
        digitlab.train(None, resume=run)
    err = capsys.readouterr().err
    assert "resuming: no epoch had finished, so it starts again from epoch 1" in err
    assert "epochs 1-2 are in its checkpoint, of 3; resuming continues from epoch 3" in err
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    def ctrl_c_while_evaluating(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(digitlab.api, "evaluate_run", ctrl_c_while_evaluating)
    with pytest.raises(KeyboardInterrupt):
        digitlab.train(None, resume=run)
    err = capsys.readouterr().err
    assert "resuming: epochs 1-2 are in its checkpoint; continuing from epoch 3 of 3" in err
    assert "all 3 epochs are trained; resuming only calibrates and evaluates it" in err
    monkeypatch.undo()
    finished = digitlab.train(None, resume=run)
    assert "resuming: all 3 epochs are in its checkpoint; only calibrating and evaluating" in capsys.readouterr().err
    assert len(finished.history) == 3 and (run / "metrics.json").is_file()
