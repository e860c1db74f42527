"""Recipes that mix sources with sampling weights (recipes.Recipe.mix, train.source_order), and the
augmentation for binary and coarse scans. Real short runs on the shared USPS and Optdigits files."""

import importlib
import json

import pytest
import torch

import digitlab
from digitlab.cli import main
from digitlab.data import load_dataset, split_sources, split_validation
from digitlab.data.folders import load_sources
from digitlab.errors import ConfigError
from digitlab.recipes import Augment, get_recipe, parse_mix

train_module = importlib.import_module("digitlab.train")


def test_an_epoch_draws_each_source_in_its_share_and_every_image_before_any_twice():
    sources = torch.repeat_interleave(torch.arange(3), torch.tensor([1000, 90, 10]))
    order = train_module.source_order(sources, [0.5, 0.3, 0.2], torch.Generator().manual_seed(1))
    assert len(order) == 1100  # an epoch is as long as the training set
    drawn = torch.bincount(sources[order], minlength=3).tolist()
    assert drawn == [550, 330, 220]  # exactly the shares of 1,100
    # The big source gives 550 of its 1,000 images, none twice; the small ones cycle through theirs.
    assert len(set(order[sources[order] == 0].tolist())) == 550
    small = torch.bincount(order[sources[order] == 2], minlength=1100)[1090:]
    assert small.tolist() == [22] * 10  # 220 draws of 10 images: each exactly 22 times
    middle = torch.bincount(order[sources[order] == 1], minlength=1100)[1000:1090]
    assert sorted(set(middle.tolist())) == [3, 4]  # 330 = 3 rounds of 90 and 60 of a fourth
    # Seeded, and shuffled across sources.
    again = train_module.source_order(sources, [0.5, 0.3, 0.2], torch.Generator().manual_seed(1))
    other = train_module.source_order(sources, [0.5, 0.3, 0.2], torch.Generator().manual_seed(2))
    assert torch.equal(order, again) and not torch.equal(order, other)
    assert len(set(sources[order[:50]].tolist())) > 1


def test_the_shares_add_up_to_the_epoch_by_largest_remainders():
    sources = torch.repeat_interleave(torch.arange(3), torch.tensor([7, 7, 7]))
    order = train_module.source_order(sources, [1 / 3, 1 / 3, 1 / 3], torch.Generator().manual_seed(0))
    assert len(order) == 21 and torch.bincount(sources[order]).tolist() == [7, 7, 7]
    order = train_module.source_order(sources, [0.45, 0.45, 0.1], torch.Generator().manual_seed(0))
    assert torch.bincount(sources[order], minlength=3).tolist() == [10, 9, 2]  # 9.45, 9.45, 2.1 -> 21


@pytest.fixture(scope="module")
def joined(shared_data_dir):
    return load_sources(["usps", "optdigits"], ["usps", "optdigits"], lambda name: load_dataset(name, progress=False))


def test_joined_sources_know_where_each_training_image_came_from_after_the_split(joined):
    assert joined.train_sources == (("usps", 7291), ("optdigits", 1934))
    train_x, _, val_x, _ = split_validation(joined, 0.1, 3000, seed=5)
    ids = split_sources(joined, 0.1, 3000, seed=5)
    assert len(ids) == len(train_x) == 2700
    usps = {bytes(img.numpy()) for img in joined.train_images[:7291]}
    for image, source in zip(train_x[:300], ids[:300], strict=True):
        assert (bytes(image.numpy()) in usps) == (source == 0)
    assert split_sources(load_dataset("usps", progress=False), 0.1, None, 0) is None  # one source: no ids


def _mixed(**changes):
    mix = {"usps": 1.0, "optdigits": 3.0}
    recipe = get_recipe("digitnet-real")
    return recipe.override(mix=mix, epochs=1, batch_size=64, **changes)


def test_a_mixed_recipe_trains_on_its_sources_in_its_weights_and_records_them(tmp_path, shared_data_dir, monkeypatch):
    drawn = []
    real_order = train_module.source_order

    def recording(sources, shares, generator):
        order = real_order(sources, shares, generator)
        drawn.append(torch.bincount(sources[order], minlength=2).tolist())
        return order

    monkeypatch.setattr(train_module, "source_order", recording)
    run = digitlab.train(_mixed(), subset=1200, val_split=0.1, out=tmp_path, progress=False, evaluate_after=False)
    config = json.loads((run.path / "config.json").read_text())
    assert config["train"]["data"] == ["usps", "optdigits"]
    assert config["train"]["mix"] == {"usps": 0.25, "optdigits": 0.75}
    assert config["dataset"]["name"] == "usps+optdigits"
    assert drawn == [[270, 810]]  # 1,080 training images: a quarter from USPS, three quarters from Optdigits
    assert config["recipe"]["mix"] == {"usps": 1.0, "optdigits": 3.0}
    # --data in place of the mix: its sources, each image once an epoch, no weights.
    drawn.clear()
    run = digitlab.train(
        _mixed(), data=["usps"], subset=500, val_split=0.1, out=tmp_path, progress=False, evaluate_after=False
    )
    assert json.loads((run.path / "config.json").read_text())["train"]["mix"] is None and drawn == []


def test_a_mixed_run_resumes_to_the_same_history(tmp_path, shared_data_dir, monkeypatch):
    recipe = _mixed().override(epochs=2)
    common = dict(subset=600, val_split=0.1, progress=False, evaluate_after=False)
    whole = digitlab.train(recipe, out=tmp_path / "whole", **common)
    real_save = train_module.save_checkpoint

    def crash_after_first(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        digitlab.train(recipe, out=tmp_path / "broken", **common)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    (broken,) = (tmp_path / "broken").iterdir()
    resumed = digitlab.train(None, resume=broken, progress=False, evaluate_after=False)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in whole.history]


def test_the_mix_is_set_from_the_cli_and_bad_weights_are_clear_errors(tmp_path, shared_data_dir, capsys):
    assert parse_mix("mnist:3, usps:1") == {"mnist": 3.0, "usps": 1.0} and parse_mix("") == {}
    with pytest.raises(ConfigError, match="weight above 0"):
        get_recipe("digitnet").override(mix={"usps": 0})
    for bad in ("mix=usps", "mix=usps:x"):
        assert main(["train", "digitnet", "--set", bad, "--out", str(tmp_path)]) == 2
        assert "mix" in capsys.readouterr().err
    code = main(["train", "digitnet", "--set", "mix=usps:1,nosuchset:1", "--out", str(tmp_path), "--limit", "100"])
    assert code == 2 and "nosuchset" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written for a run that cannot start


def test_binarised_and_coarse_scans_are_seeded_and_stay_in_range(shared_data_dir):
    x = load_dataset("usps", progress=False).test_images[:64].float() / 255
    binary = train_module.augment_batch(x, Augment(binarize=1.0), torch.Generator().manual_seed(3))
    assert set(binary.unique().tolist()) == {0.0, 1.0}  # every image thresholded
    assert (binary.sum((1, 2, 3)) > 0).all()  # at a level below each image's peak: ink is left
    coarse = train_module.augment_batch(x, Augment(lowres=1.0), torch.Generator().manual_seed(3))
    again = train_module.augment_batch(x, Augment(lowres=1.0), torch.Generator().manual_seed(3))
    assert torch.equal(coarse, again) and coarse.min() >= 0 and coarse.max() <= 1
    assert (coarse - x).abs().amax((1, 2, 3)).min() > 0.05  # every image changed
    none = train_module.augment_batch(x, Augment(binarize=0.0, lowres=0.0), torch.Generator())
    assert torch.equal(none, x)
