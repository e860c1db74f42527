"""Model factories by name: one registry, every model answers the same interface.

A model takes float32 images in [0, 1] of shape (N, C, H, W) and returns logits (N, K).
Any normalisation a model wants is inside it (a `Normalize` layer with buffers), so a
checkpoint rebuilt from `create_model(name, **args)` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from ..errors import ConfigError, unknown_name

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}
# Model name -> f(**args): how many tensors (parameters and buffers) the factory's network has for
# those arguments, counted without building it. A config.json's model is checked against its
# weights file with it before anything is built: building 20,000 layers, even on the meta
# device, took 56 s.
TENSOR_COUNTS: dict[str, Callable[..., int]] = {}
# Model name -> what it reads: "digits" (one image, (N, C, H, W) -> (N, K) logits: the classifiers)
# or "lines" (a line of writing, (N, 1, 32, W) -> (N, W // 4, K) per-frame logits for CTC: the
# line recognizer). Training, evaluation, loading and export ask it which way to go.
TASKS: dict[str, str] = {}
TASK_NAMES = ("digits", "lines")


def register_model(fn: ModelFactory | None = None, *, tensors: Callable[..., int] | None = None, task: str = "digits"):
    """Register a factory under its function name, with '_' written as '-'; `tensors(**args)`, when
    given, counts the tensors in its state_dict for the same arguments (see TENSOR_COUNTS); `task`:
    what it reads (TASKS). Used bare (@register_model) or with keywords (@register_model(tensors=...))."""
    if task not in TASK_NAMES:
        raise ValueError(f"task must be one of {TASK_NAMES}, not {task!r}")

    def register(factory: ModelFactory) -> ModelFactory:
        name = factory.__name__.replace("_", "-")
        MODELS[name] = factory
        TASKS[name] = task
        if tensors is not None:
            TENSOR_COUNTS[name] = tensors
        return factory

    return register(fn) if fn is not None else register


def model_names() -> list[str]:
    return sorted(MODELS)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block; after it, each module's own training flag as it was (not
    model.train(), which would also switch on a part the caller had kept in eval mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_task(name: str) -> str:
    """What the registered model `name` reads: "digits" or "lines" (an unknown name: "digits", and
    create_model says it is unknown)."""
    return TASKS.get(name, "digits")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name or argument is a clear error."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:  # a bad keyword from a config or the command line
        raise ConfigError(f"model {name!r} cannot be built with {kwargs}: {err}") from err


def create_model_from_config(model_config: dict) -> nn.Module:
    """Rebuild a model from a run's config.json "model" entry: {"name", "args"}.

    JSON turns tuples into lists; factories take tuples (shapes, widths), so lists are turned back.
    """
    try:
        name = model_config["name"]
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config["args"].items()}
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"a run's model entry needs a 'name' and an 'args' mapping; got {model_config!r}") from err
    return create_model(name, **args)


def tensor_count(model_config) -> int | None:
    """The number of tensors the network of a run's "model" entry has, from its arguments alone;
    None when the model has no count or its arguments do not fit it (building it says why)."""
    try:
        count = TENSOR_COUNTS.get(model_config["name"])
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config["args"].items()}
        return None if count is None else int(count(**args))
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from . import cnn, ensemble, linenet, mlp, opencv_mlp_net  # noqa: E402,F401  (registers the models)
from .summary import summarize  # noqa: E402,F401
