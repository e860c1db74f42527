"""The most accurate MNIST models shipped in the package (issue 17): `digitnet-max` and `mnist-ensemble`
load by name, and `digitlab evaluate NAME` reproduces the accuracy their cards and configs state."""

from __future__ import annotations

import json
import re

import pytest
import torch

import digitlab
from digitlab.checkpoint import SHIPPED
from digitlab.cli import main

SHIPPED_MAX = ("digitnet-max", "mnist-ensemble")


@pytest.mark.parametrize("name", SHIPPED_MAX)
def test_evaluate_reproduces_the_shipped_accuracy(name, capsys, tmp_path, shared_data_dir):
    config = json.loads((SHIPPED / name / "config.json").read_text())
    stated = config["evaluation"]["accuracy"]
    card = (SHIPPED / name / "README.md").read_text()
    assert f"**{stated:.2%}**" in card
    code = main(["evaluate", name, "--out", str(tmp_path), "--data-dir", str(shared_data_dir)])
    out = capsys.readouterr().out
    assert code == 0
    measured = float(re.search(r"accuracy (\d+\.\d+)%", out).group(1)) / 100
    assert measured == pytest.approx(stated, abs=1e-4)
    assert not any(p.name.startswith("metrics") for p in (SHIPPED / name).iterdir())  # nothing written there


def test_the_shipped_ensemble_holds_runs_of_the_shipped_recipe_and_beats_the_single_model():
    single = json.loads((SHIPPED / "digitnet-max" / "config.json").read_text())
    together = json.loads((SHIPPED / "mnist-ensemble" / "config.json").read_text())
    members = together["ensemble"]["members"]
    assert {m["recipe"] for m in members} == {"digitnet-max"} and len(members) >= 3
    # the single model: one run of the recipe, trained on all of MNIST train, read over the image and
    # its four one-pixel shifts (chosen on the hold-out), as the ensemble's members are
    (run,) = single["ensemble"]["members"]
    assert run["recipe"] == "digitnet-max" and single["train"]["val_split"] in (0, 0.0)
    assert single["model"]["args"]["shifts"] == 1 and together["model"]["args"]["shifts"] == 1
    assert run["weights_sha256"] in {m["weights_sha256"] for m in members}
    # the ensemble reads more of the test set than any of its members alone (the shipped single model among them)
    assert together["evaluation"]["accuracy"] > max(m["test_accuracy"] for m in members)
    assert together["evaluation"]["accuracy"] > single["evaluation"]["accuracy"]
    assert digitlab.load_model("mnist-ensemble").config["model"]["name"] == "ensemble"
    size = sum(p.stat().st_size for name in SHIPPED_MAX for p in (SHIPPED / name).iterdir())
    assert size < 8 * 1024 * 1024  # a few MB in all
    assert all(p.stat().st_size < 5_000_000 for name in SHIPPED_MAX for p in (SHIPPED / name).iterdir())


def test_the_ensemble_stored_in_float16_reads_as_its_float32_weights(shared_data_dir):
    # mnist-ensemble's five members weigh 6 MB in float32: stored in float16, loaded into float32
    from safetensors.torch import load_file

    stored = load_file(SHIPPED / "mnist-ensemble" / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    model = digitlab.load_model("mnist-ensemble", backend="torch")
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    for key, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, stored[key].to(tensor.dtype))  # the float16 values exactly, nothing else
