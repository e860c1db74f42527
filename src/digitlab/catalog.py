"""What can be trained, described without training: recipe tables and model summaries."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from torch import nn

from .checkpoint import CONFIG
from .data import DATASETS
from .errors import UnknownNameError
from .files import read_json
from .models import count_parameters, create_model, create_model_from_config, summarize
from .recipes import RECIPES, Recipe, get_recipe

MEASURED = "measured.json"  # written by `digitlab bench seeds`, shipped with the package


def recipe_model(recipe: Recipe) -> nn.Module:
    """The recipe's model with the shapes of its dataset, built without loading the data."""
    spec = DATASETS[recipe.dataset]
    return create_model(recipe.model, in_shape=spec.image_shape, num_classes=len(spec.classes), **recipe.model_args)


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
        rows.append({
            "name": recipe.name,
            "description": recipe.description,
            "dataset": recipe.dataset,
            "model": recipe.model,
            "parameters": count_parameters(recipe_model(recipe)),
            "published_accuracy": recipe.published_accuracy,
            "measured": text,
            "measured_detail": m,
            "source": recipe.source,
        })
    return rows


def summary_text(target: str) -> str:
    """The Keras-style summary of a recipe's model, or of the model in a run directory."""
    path = Path(target)
    if path.is_dir():
        config = read_json(path / CONFIG)
        model = create_model_from_config(config["model"])
        return summarize(model, tuple(config["dataset"]["image_shape"]), f"{config['recipe']['name']} ({path})")
    if target not in RECIPES:
        raise UnknownNameError(f"{target!r} is neither a run directory nor a recipe; "
                               f"recipes: {', '.join(RECIPES)}")
    recipe = get_recipe(target)
    return summarize(recipe_model(recipe), DATASETS[recipe.dataset].image_shape, recipe.name)
