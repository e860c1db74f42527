"""Ship the most accurate MNIST models in the package: src/digitlab/weights/NAME/, each with its card.

    DIGITLAB_DATA=../shared/data digitlab bench seeds --recipes digitnet-max --seeds 3 --ensemble \
        --max-seconds 100000 --out runs/max
    DIGITLAB_DATA=../shared/data python benchmarks/ship_models.py digitnet-max=runs/max/digitnet-max-<stamp> \
        mnist-ensemble=runs/max/digitnet-max-ensemble-0-1-2-<stamp>

Copies each run directory (a run, or an ensemble from `digitlab ensemble`) under its NAME, measures it
on its dataset's test split with `digitlab evaluate`'s code (the figure its card states and
`digitlab evaluate NAME` reproduces), records that in its config.json ("evaluation", as the service
reads it), and writes NAME/README.md: recipe, command, data, accuracy, training time, files.
Nothing was chosen by the test split: the recipe was chosen on a validation split of MNIST train
(BENCHMARKS.md, "The most accurate models"), and every seed run is shipped as it ended.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path

import digitlab
from digitlab.bench.common import machine
from digitlab.checkpoint import CONFIG, HISTORY, WEIGHTS, load_weights, save_weights
from digitlab.files import read_json, write_json, write_text
from digitlab.inference import BUNDLED_MODEL
from digitlab.models import count_parameters

WEIGHTS_DIR = BUNDLED_MODEL.parent


def training_seconds(run: Path, config: dict) -> float:
    """A run's training time (its history's epochs), or an ensemble's members' together."""
    if "ensemble" in config:
        return sum(m["training_seconds"] or 0.0 for m in config["ensemble"]["members"])
    return sum(row["seconds"] for row in read_json(run / HISTORY))


def describe(config: dict) -> str:
    recipe = config["recipe"]
    if "ensemble" not in config:
        return (
            f"one run of `{recipe['name']}` with seed {recipe['seed']}, shipped as it ended (no seed was picked by its "
            f"test figure): {network(config['model'], recipe)}"
        )
    members = config["ensemble"]["members"]
    seeds = ", ".join(str(m["seed"]) for m in members)
    singles = ", ".join(f"{m['test_accuracy']:.2%}" for m in members if m["test_accuracy"] is not None)
    views = (
        " over the image and its four one-pixel shifts (test-time augmentation: `digitlab ensemble --shifts 1`, "
        "chosen on the MNIST hold-out; five passes of the network an image)"
        if config["ensemble"].get("shifts")
        else ""
    )
    if len(members) == 1:
        return (
            f"one run of `{members[0]['recipe']}` with seed {seeds}, shipped as it ended (no seed was picked by its "
            f"test figure): {network(config['model']['args']['members'][0], recipe)}; its probabilities averaged"
            f"{views} (the image alone: {singles})"
        )
    return (
        f"an ensemble (`digitlab ensemble`) of {len(members)} runs of `{members[0]['recipe']}` with seeds {seeds} "
        f"(alone, the image only: {singles}); its probabilities are theirs averaged{views}, each at its own "
        "calibration temperature"
    )


def network(model: dict, recipe: dict) -> str:
    """A run's network and training in words, from its model entry and recipe."""
    args = model["args"]
    widths = "-".join(str(w) for w in args.get("widths", ()))
    augment = ", ".join(f"{k} {v:g}" for k, v in (recipe["augment"] or {}).items() if v)
    return (
        f"the `{model['name']}` CNN, {widths} wide with {args.get('depth', 1)} convolutions a stage, "
        f"{recipe['epochs']} epochs, augmentation {augment or 'none'}"
    )


def threads(config: dict) -> str:
    """The threads a run trained with, in words (an ensemble's members: BENCHMARKS.md's rows say)."""
    count = config["train"].get("threads")
    if count is None:
        return "as BENCHMARKS.md's seed rows say"
    return "1 thread (another training on the other core)" if count == 1 else f"{count} threads"


def card(name: str, folder: Path, config: dict, seconds: float, command: str, note: str = "") -> str:
    evaluation = config["evaluation"]
    model = digitlab.load_model(folder, backend="torch")
    files = ", ".join(f"`{p.name}` ({p.stat().st_size / 1024:,.0f} KB)" for p in sorted(folder.iterdir()))
    together = " (its members together)" if len(config.get("ensemble", {}).get("members", ())) > 1 else ""
    return f"""# `{name}`

`--model {name}` in predict, read, serve, evaluate and export; `digitlab.load_model("{name}")`.

- What: {describe(config)}; {count_parameters(model.module):,} parameters.
- Data: MNIST train (60,000 images), nothing else; neither the recipe nor a seed was chosen on the test
  set (the recipe was chosen on a validation split of MNIST train: BENCHMARKS.md, "The most accurate
  models").
- Made by: `{command}`, then `python benchmarks/ship_models.py ...` ({date.today().isoformat()}).
- Training: {seconds:.0f} s{together} on a {machine()},
  {threads(config)}, bf16 autocast.
- Test accuracy: **{evaluation["accuracy"]:.2%}** on the {evaluation["n"]:,} images of the {evaluation["dataset"]}
  test split; `digitlab evaluate {name}` reproduces it.
- Files: {files}.
""" + (f"- Note: {note}\n" if note else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=RUN", help="the shipped name and the run directory")
    parser.add_argument(
        "--command",
        default="DIGITLAB_DATA=../shared/data digitlab bench seeds --recipes digitnet-max --seeds 3 --ensemble "
        "--max-seconds 100000 --out runs/max",
        help="the command that trained them, for the cards",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        metavar="NAME=TEXT",
        help="a line for NAME's card: what a reader should know of how it was made (repeatable)",
    )
    parser.add_argument(
        "--float16",
        action="append",
        default=[],
        metavar="NAME",
        help="store NAME's weights as float16 (half the file; loaded back into float32), measured as stored",
    )
    args = parser.parse_args()
    notes = dict(spec.partition("=")[::2] for spec in args.note)
    for spec in args.models:
        name, _, run = spec.partition("=")
        ship(name, Path(run), args.command, notes.get(name, ""), name in args.float16)


def ship(name: str, run: Path, command: str, note: str, float16: bool) -> None:
    """Copy `run` into the package as NAME, measured as it is stored there, with its card."""
    config = read_json(run / CONFIG)
    seconds = training_seconds(run, config)
    if "ensemble" in config:  # the members' folders are this machine's: keep their names only
        for member in config["ensemble"]["members"]:
            member["run"] = Path(member["run"]).name
    weights = load_weights(run / WEIGHTS)
    if float16:
        weights = {key: t.half() if t.is_floating_point() else t for key, t in weights.items()}
        config["stored"] = "float16 weights (loaded into float32): the float32 file is over 5 MB"
    folder = WEIGHTS_DIR / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    save_weights(folder / WEIGHTS, weights)
    write_json(folder / CONFIG, config)
    metrics = digitlab.evaluate(folder, out=run / "shipping", progress=False)  # the stored weights
    config["evaluation"] = {
        "dataset": config["dataset"]["name"],
        "split": "test",
        "n": len(metrics.labels),
        "accuracy": metrics.accuracy,
    }
    if float16:
        images = digitlab.load_dataset(config["dataset"]["name"], progress=False).test_images.numpy()
        stored = digitlab.load_model(folder, backend="torch").predict(images)
        same = (stored == digitlab.load_model(run, backend="torch").predict(images)).mean()
        note = (
            f"the weights are stored as float16 (loaded into float32), to keep the file under 5 MB: same class as "
            f"the float32 weights on {same:.2%} of the {len(images):,} test images. " + note
        ).strip()
    write_json(folder / CONFIG, config)
    text = card(name, folder, config, seconds, command, note)
    write_text(folder / "README.md", text)
    print(text)
    print(json.dumps({name: config["evaluation"]}))


if __name__ == "__main__":
    main()
