"""Ensembles (`digitlab ensemble`, models/ensemble.py): several runs as one run directory whose
probabilities are the members' averaged, taken by load_model, evaluate, export and predict as any run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

import digitlab
from digitlab.checkpoint import BUNDLED_LINE_RUN
from digitlab.cli import main
from digitlab.errors import CheckpointError, ConfigError
from digitlab.export import export_onnx
from digitlab.serve import create_app


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def members(tmp_path_factory, mnist):
    """Two short runs of `fast` with different seeds (one epoch on 6,000 images each), evaluated."""
    out = tmp_path_factory.mktemp("members")
    return [
        digitlab.train("fast", seed=seed, subset=6000, dataset=mnist, out=out / str(seed), progress=False).path
        for seed in (1, 2)
    ]


@pytest.fixture(scope="module")
def ensemble_dir(members, tmp_path_factory):
    return digitlab.ensemble(members, tmp_path_factory.mktemp("ens") / "both")


def member_probabilities(members, images) -> np.ndarray:
    """What the ensemble must give: each member's calibrated probabilities, averaged."""
    return np.mean([digitlab.load_model(m, backend="torch").predict_proba(images) for m in members], 0)


def test_an_ensemble_averages_its_members_probabilities_on_every_backend(members, ensemble_dir, mnist):
    images = mnist.test_images[:500].numpy()
    expected = member_probabilities(members, images)
    for backend in ("torch", "onnx"):
        model = digitlab.load_model(ensemble_dir, backend=backend)
        assert model.backend == backend
        np.testing.assert_allclose(model.predict_proba(images), expected, atol=2e-5)
    temperatures = [json.loads((m / "config.json").read_text())["calibration"]["temperature"] for m in members]
    config = json.loads((ensemble_dir / "config.json").read_text())
    assert config["model"]["args"]["temperatures"] == pytest.approx(temperatures)
    assert [m["seed"] for m in config["ensemble"]["members"]] == [1, 2]
    singles = [json.loads((m / "metrics.json").read_text())["accuracy"] for m in members]
    assert [m["test_accuracy"] for m in config["ensemble"]["members"]] == singles


def test_evaluate_measures_the_ensemble_and_its_accuracy_is_that_of_the_averaged_probabilities(
    members, ensemble_dir, mnist
):
    metrics = digitlab.evaluate(ensemble_dir, dataset=mnist, progress=False)
    images, labels = mnist.test_images.numpy(), mnist.test_labels.numpy()
    expected = (member_probabilities(members, images).argmax(1) == labels).mean()
    assert metrics.accuracy == pytest.approx(expected, abs=2e-4)  # ONNX Runtime vs PyTorch: a tie may fall either way
    singles = [json.loads((m / "metrics.json").read_text())["accuracy"] for m in members]
    assert metrics.accuracy > min(singles)
    assert (ensemble_dir / "metrics.json").is_file() and (ensemble_dir / "confusion.png").is_file()


def test_one_onnx_file_holds_every_member(ensemble_dir, members, mnist, tmp_path):
    done = export_onnx(ensemble_dir, tmp_path / "ens.onnx", dataset=mnist)
    assert done.verification is not None and done.verification.same_class >= 0.999
    images = mnist.test_images[:300].numpy()
    from_file = digitlab.load_model(tmp_path / "ens.onnx").predict_proba(images)
    np.testing.assert_allclose(from_file, member_probabilities(members, images), atol=2e-5)
    member_parameters = sum(digitlab.load_model(m).parameter_count for m in members)
    assert done.parameters == member_parameters


def test_the_cli_writes_reports_and_predicts_with_it(capsys, members, tmp_path, digit_png):
    code, out, _ = run_cli(capsys, "ensemble", *members, "--out", tmp_path / "cli")
    assert code == 0, out
    assert "wrote" in out and "2 members" in out and "ensemble: test accuracy" in out
    assert "seed 1" in out and "seed 2" in out
    code, out, _ = run_cli(capsys, "predict", digit_png, "--model", tmp_path / "cli", "--json")
    assert code == 0 and json.loads(out)[0]["digit"] == "7"  # seven.png


def test_runs_that_cannot_be_averaged_are_refused_and_nothing_is_written(capsys, members, tmp_path):
    cases = [
        ([members[0]], "2 to 8 runs"),
        ([members[0], members[0]], "the same weights"),
        ([members[0], BUNDLED_LINE_RUN], "reads lines"),
        ([members[0], tmp_path / "none"], "not a run directory"),
    ]
    for runs, words in cases:
        with pytest.raises((ConfigError, CheckpointError), match=words):
            digitlab.ensemble(runs, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    code, _, err = run_cli(capsys, "ensemble", members[0], members[0], "--out", tmp_path / "out")
    assert code == 2 and "the same weights" in err and "Traceback" not in err
    (tmp_path / "taken").mkdir()
    code, _, err = run_cli(capsys, "ensemble", *members, "--out", tmp_path / "taken")
    assert code == 2 and "exists already" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging folder left behind


def test_another_dataset_cannot_join(members, tmp_path, shared_data_dir):
    fashion = digitlab.load_dataset("fashion-mnist", data_dir=shared_data_dir)
    other = digitlab.train("fast", subset=600, dataset=fashion, out=tmp_path, progress=False, evaluate_after=False)
    with pytest.raises(ConfigError, match="differ in dataset"):
        digitlab.ensemble([members[0], other.path], tmp_path / "mixed")


def test_a_damaged_member_list_in_config_json_is_refused_before_anything_is_built(ensemble_dir, tmp_path):
    config = json.loads((ensemble_dir / "config.json").read_text())
    for members, words in (
        ([config["model"]["args"]["members"][0]] * 9, "2 to 8 members"),
        ([{"x": 1}] * 2, "model entry"),
    ):
        broken = tmp_path / f"broken{len(members)}"
        broken.mkdir()
        (broken / "model.safetensors").write_bytes((ensemble_dir / "model.safetensors").read_bytes())
        config["model"]["args"]["members"] = members
        (broken / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match=words):
            digitlab.load_model(broken)


def test_the_service_serves_an_ensemble(ensemble_dir, members, mnist):
    model = digitlab.load_model(ensemble_dir)
    with TestClient(create_app(model)) as client:
        (info,) = client.get("/api/models").json()["models"]
        assert info["name"] == "ensemble" and info["backend"] == "onnx"
        assert info["parameters"] == sum(digitlab.load_model(m).parameter_count for m in members)
        answer = client.post("/api/predict", json={"pixels": mnist.test_images[0, 0].tolist()}).json()
    expected = member_probabilities(members, mnist.test_images[:1].numpy())[0]
    assert answer["digit"] == str(expected.argmax())
    assert answer["confidence"] == pytest.approx(float(expected.max()), abs=1e-4)


def test_shifted_views_average_the_image_and_its_four_one_pixel_shifts(members, mnist, tmp_path, capsys):
    # Test-time augmentation (issue 17): each member reads the image and its shifts by one pixel up,
    # down, left and right, the uncovered row or column background (a few MNIST digits touch the edge).
    images = mnist.test_images[:300].numpy()
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    views = [padded[:, :, 1 - r : 29 - r, 1 - c : 29 - c] for r, c in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
    for runs in ([members[0]], members):
        folder = digitlab.ensemble(runs, tmp_path / f"tta{len(runs)}", shifts=1)
        expected = np.mean([member_probabilities(runs, view) for view in views], 0)
        for backend, atol in (("torch", 2e-5), ("onnx", 1e-4)):  # ONNX: folded batch norms, five views' rounding
            model = digitlab.load_model(folder, backend=backend)
            np.testing.assert_allclose(model.predict_proba(images), expected, atol=atol)
        config = json.loads((folder / "config.json").read_text())
        assert config["model"]["args"]["shifts"] == 1 and config["ensemble"]["shifts"] == 1
        assert "four one-pixel shifts" in config["recipe"]["description"]
    plain = digitlab.load_model(members[0], backend="torch").predict_proba(images)
    assert not np.allclose(plain, expected, atol=1e-3)  # the views change the probabilities
    code, out, _ = run_cli(capsys, "ensemble", members[1], "--shifts", "1", "--out", tmp_path / "cli", "--no-evaluate")
    assert code == 0 and "1 member, each over the image and its four one-pixel shifts" in out
    with pytest.raises(ConfigError, match="--shifts is 0"):
        digitlab.ensemble(members, tmp_path / "two", shifts=2)
    code, _, err = run_cli(capsys, "ensemble", members[1], "--out", tmp_path / "one")
    assert code == 2 and "one run with --shifts 1" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli", "tta1", "tta2"]


def test_a_shifted_view_fills_what_it_uncovers_with_background_instead_of_wrapping():
    import torch

    from digitlab.models.ensemble import shifted

    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    down = shifted(x, 1, 0)
    assert torch.equal(down[0, 0, 0], torch.zeros(4)) and torch.equal(down[0, 0, 1:], x[0, 0, :3])
    left = shifted(x, 0, -1)
    assert torch.equal(left[0, 0, :, 3], torch.zeros(4)) and torch.equal(left[0, 0, :, :3], x[0, 0, :, 1:])


def test_damaged_shifts_in_config_json_are_refused(members, tmp_path):
    folder = digitlab.ensemble([members[0]], tmp_path / "tta", shifts=1)
    config = json.loads((folder / "config.json").read_text())
    for shifts, words in ((3, "shifts are 0"), ("1", "shifts are 0"), (0, "2 to 8 members")):
        config["model"]["args"]["shifts"] = shifts
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match=words):
            digitlab.load_model(folder)
