"""digitlab: handwritten-digit recognition — classic recipes reproduced, faster ones of our own.

The public API (see digitlab.api): load_dataset, train, evaluate, ensemble, load_model, Model, Run,
load_line_model, LineModel (the line recognizer), predict, read, annotate, and the error family
DigitlabError.

The API's names are imported from digitlab.api on first use, not here: the API imports torch
(2 s on 2 cores), which `import digitlab.errors` and `digitlab --help` do without.
"""

import sys
import types

from .errors import DigitlabError
from .version import __version__

__all__ = [
    "DigitlabError",
    "LineModel",
    "Model",
    "Prediction",
    "Run",
    "__version__",
    "annotate",
    "ensemble",
    "evaluate",
    "load_dataset",
    "load_line_model",
    "load_model",
    "predict",
    "read",
    "train",
]
API = frozenset(__all__) - {"DigitlabError", "__version__"}  # the names digitlab.api gives


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import api  # imported here: start-up time (torch)

    globals().update({n: getattr(api, n) for n in API})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *API})


class _Package(types.ModuleType):
    """digitlab itself. evaluate, read and train name both API functions and submodules, and
    importing a submodule binds it on its package (digitlab.train = the module), which would hide
    the function from __getattr__: that binding is dropped, so `digitlab.train` is the function
    whichever was imported first, as when this file imported the API at its top."""

    def __setattr__(self, name: str, value) -> None:
        if name in API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
