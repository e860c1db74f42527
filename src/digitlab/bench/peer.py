"""The peer `digitlab bench serve` measures digitlab's service against: the endpoint a user would
write with FastAPI, Pillow and PyTorch, run under uvicorn with as many workers as the service.

    DIGITLAB_PEER_MODEL=runs/... python -m uvicorn digitlab.bench.peer:create_app --factory --workers 2

POST /api/predict takes what digitlab's does -- an uploaded file (multipart field "file"), JSON
{"image": a data URL} or JSON {"pixels": 28x28} -- decodes an image with Pillow, converts it to
grey, inverts it when the paper is lighter than the ink (MNIST's ink is bright), resizes it to
28x28 whole (no cropping to the digit, no centring by mass: what MNIST's preparation did and
digitlab's does) and runs the same model (load_model(..., backend="torch"): the bundled one, or
DIGITLAB_PEER_MODEL) in PyTorch eager, one request at a time in the event loop. The answer is
{"digit", "confidence", "probabilities"}.

One PyTorch thread per worker, as digitlab's workers have: with two workers on two cores, more
threads each only oversubscribe them.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import torch
from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

from ..api import load_model

MODEL_VARIABLE = "DIGITLAB_PEER_MODEL"  # the model's path; unset: the bundled model


def create_app() -> FastAPI:
    torch.set_num_threads(1)
    model = load_model(os.environ.get(MODEL_VARIABLE) or None, backend="torch")
    app = FastAPI()

    @app.post("/api/predict")
    async def predict(request: Request):
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
            if "pixels" in body:
                pixels = np.asarray(body["pixels"], np.uint8)
            else:
                pixels = _to_28x28(base64.b64decode(body["image"].split(",", 1)[1]))
        else:
            form = await request.form()
            upload: UploadFile = form["file"]
            pixels = _to_28x28(await upload.read())
        probabilities = model.predict_proba(pixels[None])[0]
        best = int(probabilities.argmax())
        return JSONResponse(
            {"digit": str(best), "confidence": float(probabilities[best]), "probabilities": probabilities.tolist()}
        )

    return app


def _to_28x28(data: bytes) -> np.ndarray:
    """Pillow: decode, grey, ink bright, 28x28 (bicubic, Pillow's default for resize)."""
    image = Image.open(io.BytesIO(data)).convert("L")
    pixels = np.asarray(image.resize((28, 28)))
    return 255 - pixels if pixels.mean() > 127 else pixels
