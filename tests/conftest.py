import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

import digitlab
from digitlab.serve import create_app


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


@pytest.fixture(scope="module")
def model():
    """The bundled model, loaded once per test module (a module may define its own `model`)."""
    return digitlab.load_model()


@pytest.fixture(scope="module")
def client(model):
    """The service on `model`, in-process (FastAPI's TestClient)."""
    with TestClient(create_app(model)) as c:
        yield c


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    """A drawn 7 as a 64x64 PNG file, dark ink on white."""
    path = tmp_path_factory.mktemp("image") / "seven.png"
    image = np.full((64, 64), 255, np.uint8)
    cv2.line(image, (16, 12), (48, 12), 0, 5)
    cv2.line(image, (48, 12), (26, 54), 0, 5)
    cv2.imwrite(str(path), image)
    return path
