"""The digitlab service: a REST API and a browser page, on FastAPI.

    from digitlab.serve import create_app
    app = create_app()                      # the bundled model; or create_app(model="runs/...")
    # uvicorn.run(app, host="127.0.0.1", port=8000) -- or `digitlab serve`

Endpoints (every error is JSON: {"error": message, "status": code}):

- POST /api/predict: one digit -> {"digit", "confidence", "top3", "probabilities" (ten),
  "input" (the 28x28 uint8 image the model saw, rows of ints)}. The digit comes as
  * an uploaded file (multipart/form-data, field "file"), or the raw image as the body
    (Content-Type image/png, image/jpeg, ...): prepared MNIST-style first;
  * JSON {"image": "data:image/png;base64,..."} (a canvas's toDataURL()): prepared too;
  * JSON {"pixels": [[...28 numbers...] x 28]}: an MNIST-style digit, ink bright, 0-255 (or
    0-1 floats), which the model sees as it is -- unless "prepare": true.
- POST /api/read: a photo (multipart field "file", or the raw body) -> reading.to_json() (text,
  lines, digits with boxes and confidences); ?annotate=true adds "annotated", a PNG data URL
  of the photo with boxes and readings; ?unsure_below=0.6 sets the unsure threshold.
- GET /api/models: the model being served. GET /healthz: {"status": "ok"}. GET /docs: OpenAPI.
- GET /: the page (static/index.html, its assets under /static/): draw a digit, drop a photo.

Limits: a request body over `max_body` bytes -> 413 (from Content-Length before anything is
read, or as soon as a chunked body passes it); an image declaring more than `max_pixels` pixels
-> 413 before it is decoded; not an image -> 415; malformed JSON, a wrong array shape, an image
with no digit -> 422. Model work runs off the event loop, in one inference thread; requests
that arrive together are read in one batch (up to `max_batch`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..api import BUNDLED_MODEL, Model, load_model, predict, read
from ..api import annotate as annotate_image
from ..checkpoint import read_json
from ..errors import DigitlabError
from ..preprocess import MAX_PIXELS, ImageTooLargeError, NotAnImageError
from ..read import UNSURE_BELOW

MAX_BODY = 10 * 1024 * 1024  # bytes: a phone photo is 2-8 MB
MAX_BATCH = 64  # predictions read in one model call
STATIC = resources.files("digitlab.serve") / "static"


class ServiceError(Exception):
    """An error answered as JSON with this HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _json(payload: Any) -> Response:
    """A JSON response without FastAPI's generic encoder (arrays of 784 ints add up)."""
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


# --- the body limit -------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with 413, from its Content-Length
    before anything is read, or -- a chunked body has none -- as soon as the bytes read pass it."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_error(scope, receive, send, 400, "Content-Length is not a number")
            if size > self.limit:
                return await _send_error(scope, receive, send, 413, self._message(size))
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(received)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as err:
            if not started:
                await _send_error(scope, receive, send, 413, self._message(err.size, at_least=True))

    def _message(self, size: int, at_least: bool = False) -> str:
        return (f"the request body is {'more than ' if at_least else ''}{size:,} bytes; the limit is "
                f"{self.limit:,} bytes")


class _BodyTooLarge(Exception):
    def __init__(self, size: int):
        self.size = size


async def _send_error(scope, receive, send, status: int, message: str) -> None:
    """`_error`'s answer, sent from the middleware, closing the connection (the body is unread)."""
    response = _error(status, message)
    response.headers["connection"] = "close"
    await response(scope, receive, send)


# --- the inference thread and its batches ---------------------------------------------------------


class Batcher:
    """Runs model work in one thread, off the event loop. Predictions that arrive while the
    model is busy wait and are then read together in one batch: one model call instead of many."""

    def __init__(self, model: Model, max_batch: int = MAX_BATCH, max_pixels: int = MAX_PIXELS):
        self.model = model
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="digitlab-inference")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, function, *args, **kwargs):
        """Any model work, in the inference thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: function(*args, **kwargs))

    async def predict(self, image, prepare: bool):
        """One prediction, batched with those waiting beside it."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, prepare, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await asyncio.gather(*(self._run_group([item for item in batch if item[1] == prepare], prepare)
                                   for prepare in (False, True)))

    async def _run_group(self, items: list, prepare: bool) -> None:
        if not items:
            return
        try:
            results = await self.run(self._predict_each, [image for image, _, _ in items], prepare)
        except Exception as err:  # noqa: BLE001 -- handed to the waiting requests
            results = [err] * len(items)
        for (_, _, future), result in zip(items, results):
            if future.done():  # its client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _predict_each(self, images: list, prepare: bool) -> list:
        """Predictions for a batch; an image that fails fails alone (its error in its place)."""
        try:
            return predict(images, self.model, prepare=prepare, max_pixels=self.max_pixels)
        except DigitlabError:
            if len(images) == 1:
                raise
        results = []
        for image in images:
            try:
                results.append(predict([image], self.model, prepare=prepare, max_pixels=self.max_pixels)[0])
            except DigitlabError as err:
                results.append(err)
        return results


# --- parsing requests -----------------------------------------------------------------------------


async def _image_bytes(request: Request) -> bytes:
    """The image in a request: multipart field "file", or the raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ServiceError(422, 'the form has no file field named "file"')
        data = await upload.read()
    else:
        data = await request.body()
    if not data:
        raise ServiceError(422, "the request holds no image (empty body)")
    return data


def _data_url_bytes(url: Any) -> bytes:
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        raise ServiceError(422, '"image" must be a data URL: "data:image/png;base64,..."')
    header, payload = url.split(",", 1)
    if not header.endswith(";base64"):
        raise ServiceError(422, "the data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ServiceError(422, f"the data URL's base64 is malformed: {err}") from err


def _pixels(value: Any) -> np.ndarray:
    if not isinstance(value, list) or len(value) != 28 or not all(isinstance(row, list) and len(row) == 28
                                                                   for row in value):
        raise ServiceError(422, '"pixels" must be a 28x28 array: 28 rows of 28 numbers')
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ServiceError(422, f'"pixels" must hold numbers only: {err}') from err
    if not np.isfinite(array).all():
        raise ServiceError(422, '"pixels" must hold finite numbers')
    if array.min() < 0 or array.max() > 255:
        raise ServiceError(422, '"pixels" must lie in 0-255 (or 0-1)')
    if array.max() <= 1 and not (array == np.round(array)).all():
        return np.round(array * 255).astype(np.uint8)  # floats in [0, 1]
    return np.round(array).astype(np.uint8)


def _prediction_json(prediction) -> dict:
    out = prediction.to_json()
    out["input"] = prediction.model_input.tolist()
    return out


def _reading_error(err: DigitlabError) -> ServiceError:
    if isinstance(err, ImageTooLargeError):
        return ServiceError(413, str(err))
    if isinstance(err, NotAnImageError):
        return ServiceError(415, str(err))
    return ServiceError(422, str(err))


# --- the app --------------------------------------------------------------------------------------


def create_app(model: Model | str | Path | None = None, *, max_body: int = MAX_BODY,
               max_pixels: int = MAX_PIXELS, max_batch: int = MAX_BATCH) -> FastAPI:
    """The service as an ASGI app. model: a Model, a run directory, an .onnx file from `digitlab export`,
    or None for the bundled one. A path is loaded with the default backend (ONNX Runtime, with
    torch.get_num_threads() threads)."""
    model = model if isinstance(model, Model) else load_model(model)
    batcher = Batcher(model, max_batch, max_pixels)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="digitlab", version=__version__, lifespan=lifespan,
                  description="Handwritten-digit recognition: one digit (`/api/predict`) or the digit strings "
                              "in a photo (`/api/read`). Errors are JSON: `{\"error\": message, \"status\": code}`.")
    app.state.model = model
    app.add_middleware(BodyLimit, limit=max_body)

    @app.exception_handler(ServiceError)
    async def service_error(_request, err: ServiceError):
        return _error(err.status, err.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail))

    @app.get("/healthz", summary="Liveness: 200 while the service runs")
    async def healthz():
        return {"status": "ok", "version": __version__}

    @app.get("/api/models", summary="The model being served")
    async def models():
        return {"models": [_model_info(model)]}

    @app.post("/api/predict", summary="Read one digit",
              description="An uploaded image (multipart field `file`, or the raw body with an image/* "
                          "Content-Type), or JSON: `{\"image\": \"data:image/png;base64,...\"}` or "
                          "`{\"pixels\": 28x28 array, ink bright 0-255, \"prepare\": false}`.")
    async def predict_endpoint(request: Request):
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                body = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ServiceError(422, f"the body is not valid JSON: {err}") from err
            if not isinstance(body, dict) or ("image" in body) == ("pixels" in body):
                raise ServiceError(422, 'send a JSON object with either "image" (a data URL) or "pixels" (28x28)')
            if "image" in body:
                image, prepare = _data_url_bytes(body["image"]), True
            else:
                image, prepare = _pixels(body["pixels"]), bool(body.get("prepare", False))
        else:
            image, prepare = await _image_bytes(request), True
        try:
            prediction = await batcher.predict(image, prepare)
        except DigitlabError as err:
            raise _reading_error(err) from err
        return _json(_prediction_json(prediction))

    @app.post("/api/read", summary="Read the digit strings in a photo",
              description="A photo (multipart field `file`, or the raw body). `annotate=true` adds the "
                          "annotated photo as a PNG data URL.")
    async def read_endpoint(request: Request, annotate: bool = False, unsure_below: float = UNSURE_BELOW):
        if not 0 <= unsure_below <= 1:
            raise ServiceError(422, f"unsure_below must lie in [0, 1], got {unsure_below}")
        data = await _image_bytes(request)

        def work():
            reading = read(data, model, unsure_below=unsure_below, max_pixels=max_pixels)
            out = reading.to_json()
            if annotate:
                ok, png = cv2.imencode(".png", cv2.cvtColor(annotate_image(data, reading, max_pixels=max_pixels),
                                                            cv2.COLOR_RGB2BGR))
                if ok:
                    out["annotated"] = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()
            return out

        try:
            return _json(await batcher.run(work))
        except DigitlabError as err:
            raise _reading_error(err) from err

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _model_info(model: Model) -> dict:
    """What /api/models says of a model: its recipe, where it lies, size, accuracy, calibration."""
    config = model.config
    evaluation = config.get("evaluation")
    if evaluation is None and model.path is not None and (Path(model.path) / "metrics.json").is_file():
        metrics = read_json(Path(model.path) / "metrics.json")
        evaluation = {key: metrics.get(key) for key in ("dataset", "split", "n", "accuracy")}
    bundled = model.path is not None and Path(model.path).resolve() == BUNDLED_MODEL.resolve()
    return {
        "name": config.get("recipe", {}).get("name"),
        "path": None if bundled or model.path is None else str(model.path),
        "bundled": bundled,
        "classes": list(model.classes),
        "parameters": model.parameter_count,
        "backend": model.backend,
        "evaluation": evaluation,
        "temperature": model.temperature,
        "active": True,
    }


def serve(model: Model | str | Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          max_body: int = MAX_BODY, max_pixels: int = MAX_PIXELS, threads: int = 1,
          log_level: str = "info") -> None:
    """Run the service on uvicorn until Ctrl-C or SIGTERM, then shut down cleanly (requests in
    flight answered, the inference thread stopped) and return. threads: PyTorch's and ONNX
    Runtime's threads for model work (a Model given already loaded keeps its own)."""
    import contextlib

    import torch
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn raises the signal again once it has shut down, so that the process dies
            # of it; for `digitlab serve` a stop that was asked for is a clean exit (status 0).
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    torch.set_num_threads(threads)
    app = create_app(model, max_body=max_body, max_pixels=max_pixels)
    Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)).run()
