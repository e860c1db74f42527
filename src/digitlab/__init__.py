"""digitlab: handwritten-digit recognition — classic recipes reproduced, faster ones of our own.

The public API (see digitlab.api): load_dataset, train, evaluate, load_model, Model, Run,
predict, read, and the error family DigitlabError.
"""

__version__ = "0.1.0"

from .errors import DigitlabError  # noqa: E402
from .api import Model, Prediction, Run, evaluate, load_dataset, load_model, predict, read, train  # noqa: E402

__all__ = ["DigitlabError", "Model", "Prediction", "Run", "evaluate", "load_dataset", "load_model", "predict",
           "read", "train", "__version__"]
