import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared datasets (DIGITLAB_DATA). Missing under CI is a failure, not a skip."""
    # Resolved: tests link to it from tmp folders, where the README's relative ../shared/data would dangle.
    root = Path(os.environ.get("DIGITLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")).resolve()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        message = f"the shared datasets are not at {root}: set DIGITLAB_DATA"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def mnist(shared_data_dir):
    """Real MNIST, loaded once for the whole session."""
    from digitlab import load_dataset

    return load_dataset("mnist", data_dir=shared_data_dir, download=False, progress=False)
