"""Metrics against hand computation and torch, predict_logits against the model itself, plots as PNGs."""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from digitlab import plots
from digitlab.errors import ConfigError
from digitlab.evaluate import compute_metrics, predict_logits

# A hand-made example: 3 classes, 8 samples.
#   true:      0 0 0 1 1 2 2 2
#   predicted: 0 0 1 1 1 2 0 0
# Rows true, columns predicted:  [[2, 1, 0], [0, 2, 0], [2, 0, 1]]
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 1, 2, 0, 0])
# The predicted class gets logit s, the others 0; s sets each sample's confidence. The wrong ones
# are samples 2 (s=1), 6 (s=3) and 7 (s=2): most confident first is 6, 7, 2.
STRENGTHS = np.array([2.0, 0.5, 1.0, 4.0, 1.5, 2.5, 3.0, 2.0])
CLASS_NAMES = ("zero", "one", "two")


def hand_made_logits() -> np.ndarray:
    logits = np.zeros((8, 3), dtype=np.float32)
    logits[np.arange(8), PREDICTIONS] = STRENGTHS
    return logits


def test_metrics_match_hand_computation():
    m = compute_metrics(hand_made_logits(), LABELS, CLASS_NAMES)
    assert m.accuracy == pytest.approx(5 / 8)
    np.testing.assert_array_equal(m.predictions, PREDICTIONS)
    np.testing.assert_array_equal(m.confusion, [[2, 1, 0], [0, 2, 0], [2, 0, 1]])
    assert m.confusion.dtype == np.int64
    # class 'zero': 2 of 4 predicted zeros are right, 2 of 3 true zeros found.
    # precision 1/2, recall 2/3, F1 = 2PR/(P+R) = 4/7
    expected = {
        "zero": (1 / 2, 2 / 3, 4 / 7, 3),
        "one": (2 / 3, 1.0, 4 / 5, 2),  # 2 of 3 predicted ones right, both true ones found
        "two": (1.0, 1 / 3, 1 / 2, 3),  # the one predicted two is right, 1 of 3 found
    }
    for name, (precision, recall, f1, support) in expected.items():
        row = m.per_class[name]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
    assert m.averages["macro avg"]["f1"] == pytest.approx((4 / 7 + 4 / 5 + 1 / 2) / 3)
    assert m.averages["weighted avg"]["f1"] == pytest.approx((3 * 4 / 7 + 2 * 4 / 5 + 3 * 1 / 2) / 8)
    assert "accuracy" in m.report and "macro avg" in m.report and "weighted avg" in m.report
    assert all(name in m.report for name in CLASS_NAMES)
    np.testing.assert_allclose(m.probabilities.sum(axis=1), 1, rtol=1e-6)
    assert m.probabilities.dtype == np.float32


def test_loss_matches_torch_cross_entropy_and_takes_tensors():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 5
    labels = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(1))
    m = compute_metrics(logits, labels, [str(d) for d in range(10)])
    assert m.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    # Huge logits overflow a naive exp(); the shifted log-softmax does not.
    huge = torch.tensor([[1e4, 0.0, -1e4], [0.0, 3e4, 2e4]], dtype=torch.float64)
    m = compute_metrics(huge, [1, 1], CLASS_NAMES)
    assert m.loss == pytest.approx(F.cross_entropy(huge, torch.tensor([1, 1])).item())
    assert np.isfinite(m.probabilities).all()


def test_absent_class_still_has_a_row():
    names = ("zero", "one", "two", "three")
    logits = np.zeros((8, 4), dtype=np.float32)
    logits[:, :3] = hand_made_logits()  # class 'three' neither true nor predicted
    m = compute_metrics(logits, LABELS, names)
    assert m.confusion.shape == (4, 4)
    np.testing.assert_array_equal(m.confusion[3], 0)
    np.testing.assert_array_equal(m.confusion[:, 3], 0)
    assert m.per_class["three"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert "three" in m.report


def test_errors_are_most_confident_first():
    m = compute_metrics(hand_made_logits(), LABELS, CLASS_NAMES)
    np.testing.assert_array_equal(m.errors, [6, 7, 2])
    # Confidence of sample 6: e^3 / (e^3 + 2), computed by hand.
    assert m.confidences[6] == pytest.approx(np.exp(3) / (np.exp(3) + 2), rel=1e-6)


def test_to_json_is_small_and_serialisable():
    m = compute_metrics(hand_made_logits(), LABELS, CLASS_NAMES)
    summary = json.loads(json.dumps(m.to_json()))
    assert summary["n"] == 8
    assert summary["accuracy"] == pytest.approx(5 / 8)
    assert summary["confusion"] == [[2, 1, 0], [0, 2, 0], [2, 0, 1]]
    assert summary["per_class"]["one"]["recall"] == pytest.approx(1.0)
    assert set(summary["macro_avg"]) == {"precision", "recall", "f1", "support"}
    assert "weighted_avg" in summary and "loss" in summary
    assert not {"labels", "predictions", "probabilities"} & set(summary)


@pytest.mark.parametrize(
    "logits, labels",
    [
        (np.zeros((3, 4)), [0, 1, 2]),  # 4 outputs for 3 class names
        (np.zeros((3, 3)), [0, 1]),  # fewer labels than samples
        (np.zeros((2, 3)), [0, 3]),  # a label outside the classes
        (np.zeros((0, 3)), []),  # nothing to evaluate
    ],
)
def test_mismatched_inputs_raise(logits, labels):
    with pytest.raises(ConfigError):
        compute_metrics(logits, labels, CLASS_NAMES)


def tiny_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    # Dropout makes train-mode output differ from eval-mode, so the mode used is visible.
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3)
    )


def test_predict_logits_matches_model_and_restores_mode():
    model = tiny_model()
    images = torch.randint(0, 256, (5, 1, 2, 2), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        expected = model(images.float() / 255)
    model.train()
    model[2].eval()  # a submodule in its own mode must keep it
    logits = predict_logits(model, images, batch_size=2)  # 3 batches, the last one short
    torch.testing.assert_close(logits, expected)
    assert logits.dtype == torch.float32 and logits.device.type == "cpu" and not logits.requires_grad
    assert model.training and model[1].training and not model[2].training

    model.eval()
    predict_logits(model, images)
    assert not model.training


def test_predict_logits_rejects_float_images():
    with pytest.raises(ConfigError, match="uint8"):
        predict_logits(tiny_model(), torch.rand(2, 1, 2, 2))


# ---- plots ------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_only_png(folder, path, min_size=(100, 100)):
    """`path` is a valid PNG of at least min_size (width, height) and the folder holds nothing else."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= min_size[0] and height >= min_size[1]
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize(
    "history",
    [
        [
            {"loss": 0.9, "accuracy": 0.7, "val_loss": 0.5, "val_accuracy": 0.85},
            {"loss": 0.4, "accuracy": 0.88, "val_loss": 0.35, "val_accuracy": 0.9},
        ],
        [{"loss": 0.9, "accuracy": 0.7}],  # one epoch, no validation
        [
            {"loss": 0.9, "accuracy": 0.7, "val_loss": None, "val_accuracy": None},
            {"loss": 0.4, "accuracy": 0.88, "val_loss": 0.35, "val_accuracy": 0.9},
        ],
    ],
    ids=["full", "one-epoch-no-val", "val-none"],
)
def test_plot_curves(tmp_path, history):
    path = plots.plot_curves(history, tmp_path / "curves.png")
    assert_only_png(tmp_path, path, min_size=(800, 300))


def test_plot_curves_rejects_empty_history(tmp_path):
    with pytest.raises(ConfigError):
        plots.plot_curves([], tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "class_names",
    [[str(d) for d in range(10)], ["T-shirt/top", "Trouser", "Pullover"]],
    ids=["digits", "long-names"],
)
def test_plot_confusion(tmp_path, class_names):
    k = len(class_names)
    confusion = np.random.default_rng(0).integers(0, 1000, (k, k))
    path = plots.plot_confusion(confusion, class_names, tmp_path / "confusion.png")
    assert_only_png(tmp_path, path, min_size=(400, 400))


def test_plot_confusion_rejects_wrong_shape(tmp_path):
    with pytest.raises(ConfigError):
        plots.plot_confusion(np.zeros((3, 3), dtype=int), ["a", "b"], tmp_path / "c.png")


@pytest.mark.parametrize("shape", [(7, 1, 28, 28), (5, 3, 32, 32), (4, 1, 8, 8)], ids=["grey", "rgb", "8x8"])
def test_galleries(tmp_path, shape):
    n = shape[0]
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    predictions = (labels + 1) % 10
    names = [str(d) for d in range(10)]
    path = plots.plot_errors(images, labels, predictions, np.linspace(0.99, 0.5, n), names, tmp_path / "e.png")
    assert_only_png(tmp_path, path)
    path.unlink()
    path = plots.plot_samples(images, labels, names, tmp_path / "s.png", predictions=predictions)
    assert_only_png(tmp_path, path)
    path.unlink()
    path = plots.plot_samples(images.numpy(), labels.numpy(), names, tmp_path / "s.png", n=3)
    assert_only_png(tmp_path, path)


def test_plot_errors_without_errors(tmp_path):
    empty = torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
    path = plots.plot_errors(empty, [], [], [], ["0", "1"], tmp_path / "errors.png")
    assert_only_png(tmp_path, path, min_size=(200, 100))


def test_failed_save_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")

    def fail_midway(self, fname, **kwargs):
        open(fname, "wb").write(b"half")  # a partial write, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail_midway)  # plots draws on matplotlib's Figure
    with pytest.raises(RuntimeError):
        plots.plot_curves([{"loss": 1.0, "accuracy": 0.5}], path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_plots_leave_pyplot_alone(tmp_path):
    # Importing pyplot would pick a global backend; the module must draw without it.
    code = (
        "import sys; from digitlab import plots; "
        f"plots.plot_curves([{{'loss': 1.0, 'accuracy': 0.5}}], {str(tmp_path / 'c.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_temperature_recovers_a_known_temperature():
    from digitlab.evaluate import fit_temperature

    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20000, 10, generator=generator) * 3
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    # Logits that are 2.5x too flat, as label smoothing leaves them: the fit must undo the factor.
    assert fit_temperature(true_logits / 2.5, labels) == pytest.approx(1 / 2.5, rel=0.05)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)
