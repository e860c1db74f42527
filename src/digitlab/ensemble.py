"""Ensembles of trained runs: `digitlab ensemble RUN... --out DIR [--shifts 1]`.

    from digitlab.ensemble import make_ensemble
    folder = make_ensemble(["runs/a", "runs/b", "runs/c"], "runs/ensemble")
    model = digitlab.load_model(folder)          # like any run: predict, evaluate, serve, export
    make_ensemble(["runs/a"], "runs/a-tta", shifts=1)   # one run over the image and its 4 one-pixel shifts

The result is a run directory like any other: config.json names the registered model `ensemble`
(models/ensemble.py) with the members' model entries and calibration temperatures as its arguments;
model.safetensors holds their weights under "members.I."; so load_model, `--model`, evaluate, serve
and export take it unchanged, and its ONNX export is one graph holding every member. Each member is
checked as load_model checks a run (model_files.build_network) before anything is written, and the
folder appears whole or not at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .checkpoint import CONFIG, HISTORY, METRICS, WEIGHTS, resolve_model, save_weights, weights_digest
from .errors import CheckpointError, ConfigError
from .files import make_temp_dir, read_json, write_json
from .model_files import build_network
from .models import model_task
from .models.ensemble import MAX_MEMBERS, SHIFTS, fewest_members
from .recipes import held_out_seed
from .version import __version__

# What the members must share: the images they take, the classes they give, the data they learnt.
SHARED = ("dataset", "train.data", "train.test")


def make_ensemble(runs: list[str | Path], out: str | Path, shifts: int = 0) -> Path:
    """Write the ensemble of `runs` (2 to MAX_MEMBERS run directories or shipped models' names, digit
    models trained on the same dataset; 1 with `shifts`) into the new folder `out`, and return it.
    shifts 1: every member reads the image and its four one-pixel shifts (test-time augmentation),
    all their probabilities averaged. ConfigError where the runs cannot be averaged (a line model,
    another dataset or classes, the same weights twice) or `out` exists."""
    if shifts not in SHIFTS:
        raise ConfigError(f"--shifts is 0 (the image alone) or 1 (also its four one-pixel shifts), not {shifts!r}")
    fewest = fewest_members(shifts)
    if not fewest <= len(runs) <= MAX_MEMBERS:
        raise ConfigError(
            f"an ensemble has {fewest} to {MAX_MEMBERS} runs{' with --shifts' if shifts else ''}, not {len(runs)}"
            + ("" if shifts or len(runs) != 1 else " (one run with --shifts 1: its test-time augmentation)")
        )
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists already: name a new folder for the ensemble")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent} is not a folder: the ensemble's folder is made inside one that exists")
    members = [_member(resolve_model(run)) for run in runs]
    _check_compatible(members)
    state = {
        f"members.{i}.{name}": tensor
        for i, m in enumerate(members)
        for name, tensor in m["network"].state_dict().items()
    }
    staging = make_temp_dir(out.parent, out.name)
    try:
        save_weights(staging / WEIGHTS, state)
        write_json(staging / CONFIG, ensemble_config(members, shifts))
        os.rename(staging, out)  # the whole folder at once: a kill before this leaves only the hidden staging one
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _member(path: Path) -> dict:
    """One run, checked and built as load_model builds it, with what the ensemble records of it."""
    if not path.is_dir():
        raise ConfigError(f"{path} is not a run directory (a folder with {CONFIG} and {WEIGHTS})")
    config = read_json(path / CONFIG)
    network = build_network(config, path / CONFIG, path / WEIGHTS)
    name = config["model"]["name"]
    if name == "ensemble":
        raise ConfigError(f"{path} is an ensemble already: name its member runs instead")
    if model_task(name) != "digits":
        raise ConfigError(f"{path} is a {name} run, which reads lines: an ensemble averages single-digit models")
    history = read_json(path / HISTORY, allow_nan=True) if (path / HISTORY).is_file() else []
    metrics = read_json(path / METRICS) if (path / METRICS).is_file() else {}
    if not metrics and config.get("train", {}).get("validation") == "test set" and history:
        # not evaluated (`bench seeds` trains with evaluate_after off): a run validated on the test set
        # measured it after its last epoch, as its metrics.json would have
        metrics = {"accuracy": history[-1].get("val_accuracy")}
    return {
        "path": path,
        "config": config,
        "network": network,
        "digest": weights_digest(path / WEIGHTS),
        "seconds": sum(float(row.get("seconds", 0.0)) for row in history if isinstance(row, dict)) or None,
        "test_accuracy": metrics.get("accuracy") if isinstance(metrics, dict) else None,
    }


def _shared(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_compatible(members: list[dict]) -> None:
    first = members[0]
    for member in members[1:]:
        for key in SHARED:
            if _shared(member["config"], key) != _shared(first["config"], key):
                raise ConfigError(
                    f"{member['path']} and {first['path']} differ in {key}: an ensemble's members take the same "
                    "images into the same classes, trained on the same data"
                )
    digests = [m["digest"] for m in members]
    for i, digest in enumerate(digests):
        if digest in digests[:i]:
            raise CheckpointError(
                f"{members[i]['path']} has the same weights as {members[digests.index(digest)]['path']}"
            )


def ensemble_config(members: list[dict], shifts: int = 0) -> dict:
    """The ensemble's config.json: the first member's recipe, dataset and training data under the
    name `ensemble`, the model entry models/ensemble.py builds, and a record of each member."""
    first = members[0]["config"]
    recipes = sorted({m["config"]["recipe"]["name"] for m in members})
    temperatures = [float(m["config"].get("calibration", {}).get("temperature", 1.0)) for m in members]
    splits = {
        (m["config"].get("train", {}).get("val_split"), m["config"].get("train", {}).get("subset")) for m in members
    }
    train = dict(first.get("train", {}))
    # evaluate's 'val' split is the held-out part of one seed's split: only where every member held out the same
    same_split = len(splits) == 1 and len({held_out_seed(m["config"]["recipe"]) for m in members}) == 1
    train.update(val_split=train.get("val_split") if same_split else 0.0, processes=None, threads=None)
    return {
        "digitlab_version": __version__,
        "recipe": {
            **first["recipe"],
            "name": "ensemble",
            "description": f"{len(members)} run{'s' * (len(members) > 1)} of {', '.join(recipes)}, "
            + ("their probabilities" if len(members) > 1 else "its probabilities")
            + (" over the image and its four one-pixel shifts" if shifts else "")
            + " averaged",
            "model": "ensemble",
            "model_args": {},
        },
        "model": {
            "name": "ensemble",
            "args": {
                "in_shape": first["model"]["args"]["in_shape"],
                "num_classes": first["model"]["args"]["num_classes"],
                "members": [m["config"]["model"] for m in members],
                "temperatures": temperatures,
                "shifts": shifts,
            },
        },
        "dataset": first["dataset"],
        "train": train,
        "calibration": {
            "temperature": 1.0,
            "note": "an ensemble: each member's probabilities at its own calibration temperature, averaged"
            + (" over the image and its four one-pixel shifts" if shifts else ""),
        },
        "ensemble": {
            "shifts": shifts,
            "members": [
                {
                    "run": str(m["path"]),
                    "recipe": m["config"]["recipe"]["name"],
                    "seed": m["config"]["recipe"].get("seed"),
                    "weights_sha256": m["digest"],
                    "training_seconds": m["seconds"],
                    "test_accuracy": m["test_accuracy"],
                }
                for m in members
            ],
        },
    }
