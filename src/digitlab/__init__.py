"""digitlab: handwritten-digit recognition — classic recipes reproduced, faster ones of our own.

The public API (see digitlab.api): load_dataset, train, evaluate, load_model, Model, Run,
predict, read, annotate, and the error family DigitlabError.
"""

__version__ = "0.1.0"

from .errors import DigitlabError  # noqa: E402
from .api import (Model, Prediction, Run, annotate, evaluate, load_dataset, load_model, predict, read,  # noqa: E402
                  train)

__all__ = ["DigitlabError", "Model", "Prediction", "Run", "annotate", "evaluate", "load_dataset", "load_model",
           "predict", "read", "train", "__version__"]
