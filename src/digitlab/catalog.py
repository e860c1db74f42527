"""What can be trained, described without training: recipe tables and model summaries.

`digitlab recipes` imports no torch (a second on 2 cores): the shipped recipes' parameter counts
are recorded below, and only the model summaries and a recipe without a recorded count build a
network.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .data import DATASETS
from .errors import DigitlabError, UnknownNameError
from .files import read_json
from .recipes import RECIPES, Recipe, get_recipe

if TYPE_CHECKING:
    from torch import nn

MEASURED = "measured.json"  # written by `digitlab bench seeds`, shipped with the package
# count_parameters(recipe_model(recipe)) of the shipped recipes, so that the table builds no network;
# tests/test_layout.py builds every recipe's model and checks its count here.
PARAMETERS = {
    "opencv-mlp": 669_706,
    "keras-cnn": 600_810,
    "keras-mlp-dropout": 535_818,
    "keras-mlp-sigmoid": 235_146,
    "keras-mlp-512": 669_706,
    "keras-cifar10-mlp": 3_676_682,
    "digitnet": 113_898,
    "digitnet-pen": 113_898,
    "digitnet-real": 307_882,
    "digitnet-max": 307_882,
    "fashion-max": 1_187_146,
    "fast": 33_914,
    "fast-995": 68_146,
    "linenet": 222_987,
}


def recipe_model(recipe: Recipe) -> nn.Module:
    """The recipe's model with the shapes of its dataset, built without loading the data."""
    from .models import create_model, model_task  # imported here: start-up time (torch, 1 s)

    if model_task(recipe.model) == "lines":  # lines of any width, the digits and CTC's blank
        return create_model(recipe.model, **recipe.model_args)
    spec = DATASETS[recipe.dataset]
    return create_model(recipe.model, in_shape=spec.image_shape, num_classes=len(spec.classes), **recipe.model_args)


def recipe_parameters(recipe: Recipe) -> int:
    """The number of parameters of the recipe's model: recorded in PARAMETERS, else counted on it."""
    if recipe.name in PARAMETERS:
        return PARAMETERS[recipe.name]
    from .models import count_parameters  # imported here: start-up time (torch, 1 s)

    return count_parameters(recipe_model(recipe))


def measured_accuracies() -> dict[str, dict]:
    """recipe -> {"mean", "sd", "n", "date", "device"} from the last `digitlab bench seeds`."""
    try:
        return json.loads(resources.files("digitlab").joinpath(MEASURED).read_text())
    except FileNotFoundError:
        return {}


def recipe_table() -> list[dict]:
    measured = measured_accuracies()
    rows = []
    for recipe in RECIPES.values():
        m = measured.get(recipe.name)
        text = None
        if m:
            text = f"{m['mean'] * 100:.2f}%" + (f" ± {m['sd'] * 100:.2f}" if m["n"] > 1 else "") + f" (n={m['n']})"
        rows.append(
            {
                "name": recipe.name,
                "description": recipe.description,
                "dataset": f"mix of {len(recipe.mix)}" if recipe.mix else recipe.dataset,
                "mix": recipe.mix,
                "model": recipe.model,
                "parameters": recipe_parameters(recipe),
                "published_accuracy": recipe.published_accuracy,
                "measured": text,
                "measured_detail": m,
                "source": recipe.source,
            }
        )
    return rows


def shipped_table() -> list[dict]:
    """The models shipped in the package (checkpoint.named_models), a row each: name, folder, and
    from its config.json the recipe and the evaluation recorded there (None where it holds none);
    "bundled" has same_as: the folder name it stands for. Reads JSON only: no torch."""
    from .checkpoint import BUNDLED, BUNDLED_RUN, CONFIG, named_models

    rows = []
    for name, folder in named_models().items():
        row = {"name": name, "folder": str(folder), "same_as": None, "recipe": None, "evaluation": None}
        if name == BUNDLED:
            row["same_as"] = BUNDLED_RUN.name
        else:
            try:
                config = read_json(folder / CONFIG)
            except DigitlabError:  # a damaged card says so where it is loaded, not in the listing
                config = {}
            evaluation = config.get("evaluation") if isinstance(config, dict) else None
            if isinstance(evaluation, dict) and isinstance(evaluation.get("accuracy"), (int, float)):
                row["evaluation"] = evaluation
            recipe = config.get("recipe") if isinstance(config, dict) else None
            row["recipe"] = recipe.get("name") if isinstance(recipe, dict) else None
            row["recipe"] = _ensemble_recipe(config) or row["recipe"]
        rows.append(row)
    return rows


def _ensemble_recipe(config) -> str | None:
    """An ensemble's recipe in a few words ("5 x digitnet-max +shifts"; one run over shifted views:
    "digitnet-max +shifts"), from the members its config.json records; None for a plain run."""
    together = config.get("ensemble") if isinstance(config, dict) else None
    members = together.get("members") if isinstance(together, dict) else None
    if not (isinstance(members, list) and members and all(isinstance(m, dict) for m in members)):
        return None
    names = sorted({str(m.get("recipe")) for m in members})
    count = "" if len(members) == 1 else f"{len(members)} x "
    return count + "/".join(names) + (" +shifts" if together.get("shifts") else "")


def summary_text(target: str) -> str:
    """The Keras-style summary of a recipe's model, or of the model in a run directory: a folder
    that exists, else a recipe, else a shipped model's name (checkpoint.named_models)."""
    # imported here: start-up time (torch, 1 s), which `digitlab recipes` does without
    from .checkpoint import CONFIG, named_models, resolve_model
    from .models import create_model_from_config, model_task, summarize
    from .preprocess import LINE_HEIGHT, LINE_SAMPLE_WIDTH

    path = Path(target)
    if not path.is_dir() and target not in RECIPES:
        path = resolve_model(target)  # a shipped model's name: its folder
    if path.is_dir():
        config = read_json(path / CONFIG)
        model = create_model_from_config(config["model"])
        return summarize(model, tuple(config["dataset"]["image_shape"]), f"{config['recipe']['name']} ({path})")
    if target not in RECIPES:
        raise UnknownNameError(
            f"{target!r} is neither a run directory nor a recipe (nor a shipped model); recipes: {', '.join(RECIPES)}; "
            f"shipped models: {', '.join(named_models())}"
        )
    recipe = get_recipe(target)
    if model_task(recipe.model) == "lines":  # any width: shown for a line 64 wide (16 frames)
        shape = (1, LINE_HEIGHT, LINE_SAMPLE_WIDTH)
        return summarize(recipe_model(recipe), shape, f"{recipe.name} (a line {LINE_SAMPLE_WIDTH} pixels wide)")
    return summarize(recipe_model(recipe), DATASETS[recipe.dataset].image_shape, recipe.name)
