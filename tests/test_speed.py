"""The `fast` recipes, bf16 and torch.compile in the training loop, and `digitlab bench speed`.

Speed itself is measured by `digitlab bench speed` (BENCHMARKS.md), never asserted here.
"""

import json

import pytest
import torch

import digitlab
from digitlab.bench import speed as bench_speed
from digitlab.recipes import get_recipe
from digitlab.train import bf16_supported


def test_fast_recipe_reaches_99_percent_in_its_one_epoch(mnist, tmp_path):
    # BENCHMARKS.md: 5 seeds, every one >= 98.9% on the 2-core bench machine.
    run = digitlab.train("fast", dataset=mnist, out=tmp_path, progress=False, evaluate_after=False)
    assert len(run.history) == 1
    assert run.history[-1]["val_accuracy"] >= 0.989
    assert run.config["train"]["bf16"] == bf16_supported(torch.device("cpu"))
    # bf16 is for the arithmetic only: the weights stay float32, and the saved model loads as usual.
    model = digitlab.load_model(run.path)
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert (model.predict(mnist.test_images[:500]) == mnist.test_labels[:500].numpy()).mean() >= 0.97


def test_bf16_is_only_used_where_the_hardware_has_it():
    assert bf16_supported(torch.device("meta")) is False
    recipe = get_recipe("fast")
    assert recipe.bf16 and recipe.channels_last and recipe.epochs == 1
    assert get_recipe("keras-mlp-dropout").bf16 is False  # the MLPs keep their float32 arithmetic


def test_compiled_training_saves_plain_weights_that_load(mnist, tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    run = digitlab.train(
        "fast",
        dataset=mnist,
        out=tmp_path,
        progress=False,
        evaluate_after=False,
        subset=1024,
        settings=["compile=true", "bf16=false"],
    )
    assert run.config["recipe"]["compile"] is True
    assert counters["stats"]["unique_graphs"] >= 1  # the steps really went through torch.compile
    model = digitlab.load_model(run.path)  # no torch.compile prefixes in the saved names
    assert model.predict(mnist.test_images[:10]).shape == (10,)


def test_flops_are_counted_from_the_model():
    fast, full = bench_speed.training_flops_per_image("fast"), bench_speed.training_flops_per_image("digitnet")
    # digitnet 16-32-64: conv 5x5 at 28x28 (0.63 M multiply-adds x2) + two 3x3 stages, forward and backward.
    assert 10e6 < fast < 14e6
    assert 3.5 < full / fast < 4.5  # twice the channels: about four times the work


def test_every_worker_trains_for_real_and_reports_its_memory(shared_data_dir):
    common = {"data_dir": str(shared_data_dir), "limit": 3000, "epochs": 1}
    for kind, spec in (("digitlab", {"recipe": "fast"}), ("dataloader", {}), ("sklearn", {})):
        result = bench_speed.run_worker(kind, {**common, **spec})
        (epoch,) = result["epochs"]
        assert epoch["seconds"] > 0 and 0.8 < epoch["accuracy"] <= 1, (kind, result)
        assert result["peak_rss_mb"] > 100


def test_a_failing_worker_is_a_clear_error(shared_data_dir):
    with pytest.raises(RuntimeError, match="bench worker digitlab"):
        bench_speed.run_worker("digitlab", {"data_dir": str(shared_data_dir), "recipe": "no-such-recipe"})


def test_bench_speed_quick_writes_its_tables(shared_data_dir, tmp_path):
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "speed.json"
    markdown.write_text("# Benchmarks\n\nkept\n")
    report = bench_speed.bench_speed(
        quick=True,
        seeds_995=0,
        ablations=False,
        data_dir=shared_data_dir,
        markdown=markdown,
        results=results,
        log=lambda *a: None,
    )
    text = markdown.read_text()
    assert "kept" in text and "mean nothing" in text
    assert "**`fast`** (1 seed)" in text and "GFLOP/s" in text
    assert "PyTorch DataLoader loop" in text and "scikit-learn MLPClassifier" in text
    assert "`digitlab serve` after" in text
    if bench_speed.keras_available():
        assert "| `keras-cnn`, seconds per epoch" in text and "Keras / digitlab" in text
    else:
        assert "not installed" in text
    saved = json.loads(results.read_text())
    assert saved["fast"]["accuracies"] == report["fast"]["accuracies"]
    # Running it again replaces the section instead of appending another.
    bench_speed.publish(saved, markdown)
    assert markdown.read_text().count(bench_speed.START) == 1
