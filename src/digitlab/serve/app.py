"""The digitlab service: a REST API and a browser page, on FastAPI.

    from digitlab.serve import create_app
    app = create_app()                      # the bundled model; or create_app(model="runs/...")
    # uvicorn.run(app, host="127.0.0.1", port=8000) -- or `digitlab serve`

Endpoints (every error is JSON: {"error": message, "status": code}):

- POST /api/predict: one digit -> {"digit", "confidence", "top3", "probabilities" (ten)}, and
  with ?input=true "input" (the 28x28 uint8 image the model saw, rows of ints). The digit comes as
  * an uploaded file (multipart/form-data, field "file"), or the raw image as the body
    (Content-Type image/png, image/jpeg, ...): prepared MNIST-style first;
  * JSON {"image": "data:image/png;base64,..."} (a canvas's toDataURL()): prepared too;
  * JSON {"pixels": [[...28 numbers...] x 28]}: an MNIST-style digit, ink bright, 0-255 (or
    0-1 floats), which the model sees as it is -- unless "prepare": true.
- POST /api/read: a photo (multipart field "file", or the raw body) -> reading.to_json() (text,
  lines, digits with boxes and confidences); ?annotate=true adds "annotated", a data URL of the
  photo with boxes and readings (at most ANNOTATED_SIDE pixels on its longer side; PNG, or JPEG
  where the PNG would pass ANNOTATED_BYTES); ?unsure_below=0.6 sets the unsure threshold.
- GET /api/models: the model being served. GET /healthz: {"status": "ok", "version", "worker": the
  process id of the worker that answered (`serve --workers`)}.
- GET /docs (Swagger UI) and GET /redoc (ReDoc): the API as /openapi.json describes it (schema.py:
  every answer's fields, boxes as (x, y, w, h) in the original image's pixels). Their scripts are
  served from the fastapi-offline package under /static-offline-docs/, never from a CDN: offline,
  FastAPI's default /docs was a blank page.
- GET /: the page (static/index.html, its assets under /static/): draw a digit, drop a photo.

Limits: a request body over `max_body` bytes -> 413 (from Content-Length before anything is
read, or as soon as a chunked body passes it); an image declaring more than `max_pixels` pixels
-> 413 before it is decoded; not an image -> 415; malformed JSON, a wrong array shape, an image
with no digit -> 422. Model work runs off the event loop: predictions in one inference thread,
those that arrive together in one batch (up to `max_batch`), each image prepared alone so that
one that fails, however, fails alone; reads in a thread of their own (Reader), so that neither
waits for the other.

Bounds against abuse (each found missing by `digitlab bench serve --abuse`, see BodyLimits and
GuardedHttp): a request's head must arrive within `read_timeout` seconds and fit in MAX_HEAD
bytes (else 408 / 431, closed), and its body within `read_timeout` more (else 408); the bodies
held at once, across requests, fit in `body_budget` bytes (else 503); a client that hangs up
mid-body ends its request quietly; an unexpected error is a JSON 500 too. Found missing by issue
18: the pixels of the images in work, as their headers declare them, fit in `pixel_budget`
(PixelBudget, else 503 after IMAGE_WAIT s); a read works at most `read_time_limit` seconds (else
422), stops when its client hangs up, and refuses images of more than read.MAX_MARKS marks; an
error drops its tracebacks, which held the decoded image; a response its client stops reading
for WRITE_TIMEOUT seconds is dropped; HTTP that httptools cannot parse gets a JSON 400.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import ctypes
import ctypes.util
import functools
import json
import logging
import multiprocessing
import os
import re
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from ..api import BUNDLED_MODEL, LineModel, Model, load_line_model, load_model, predict
from ..errors import ConfigError, DigitlabError
from ..files import read_json
from ..preprocess import (
    MAX_PIXELS,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    declared_size,
    to_mnist_style,
    to_uint8_digit,
)
from ..read import METHODS, UNSURE_BELOW
from ..read import annotate as annotate_image
from ..read import read as read_digits
from ..version import __version__
from .schema import ErrorAnswer, Health, Models, PredictAnswer, ReadAnswer, predict_request_schema

MAX_BODY = 10 * 1024 * 1024  # bytes: a phone photo is 2-8 MB
MAX_BATCH = 64  # predictions read in one model call
READ_TIMEOUT = 10.0  # seconds for a request's head, and again for its body: an 8 MB photo in 10 s is 6.4 Mbit/s
MAX_HEAD = 64 * 1024  # bytes of request line and headers; h11's default is 16 KiB, nginx's 32 KiB
BODY_BUDGET = 64 * 1024 * 1024  # bytes of request bodies held at once, across requests: six phone photos
WRITE_TIMEOUT = 10.0  # seconds a response may wait for its client to read on, before the connection is dropped
# Decoded images cost 20-25 bytes a pixel while they are prepared (float32 grey and its working
# copies), their bodies far less: 12 blank 6300x6300 pages are 52 KB PNGs. The pixels that images
# being prepared or read may declare at once, across requests (a 40 MP image and a phone photo);
# an image of at most SMALL_IMAGE pixels is not counted (the page's canvas is 280x280).
PIXEL_BUDGET = 48_000_000
SMALL_IMAGE = 2_000_000
IMAGE_WAIT = 10.0  # seconds a request may wait for room in PIXEL_BUDGET, else 503
MAX_READS = 1  # reads (/api/read) worked on at once, in a thread of their own beside the inference thread
READ_QUEUE = 4  # reads that may wait for it; more -> 503
# Seconds one read may work, decoding included: `bench read`'s slowest real image takes 0.65 s
# (2-core AMD EPYC); a page of 484 printed digits 7 s of CPU.
READ_TIME_LIMIT = 10.0
DISCONNECT_POLL = 0.1  # seconds between looks at whether a read's client is still there
ANNOTATED_SIDE = 1600  # pixels on the longer side of ?annotate=true's image, at most
ANNOTATED_BYTES = 2 * 1024 * 1024  # its encoded size, at most: PNG where that fits, else JPEG
log = logging.getLogger(__name__)
STATIC = resources.files("digitlab.serve") / "static"
DOCS_ASSETS = "/static-offline-docs"  # where fastapi-offline serves Swagger UI's and ReDoc's scripts (its default)


class ServiceError(Exception):
    """An error answered as JSON with this HTTP status (and these headers)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _json(payload: Any) -> Response:
    """A JSON response without FastAPI's generic encoder (arrays of 784 ints add up)."""
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


# --- bounds on a request's body --------------------------------------------------------------------


class BodyLimits:
    """ASGI middleware bounding what a request body may cost, each refusal a JSON error that closes
    the connection (the rest of the body is not read):

    - size: over `limit` bytes -> 413, from Content-Length before anything is read, or -- a chunked
      body has none -- as soon as the bytes read pass it;
    - time: the whole body must arrive within `timeout` seconds of the request's head, else 408.
      Without this a body sent a byte a second held its request open for as long as the client liked;
    - memory: the bodies held at once, all requests together, must fit in `budget` bytes, else 503
      with Retry-After. Without this, 100 clients each sending a 9 MB body at once took the service
      from 450 MiB to 1.65 GiB resident, and more clients would take more. The first
      HIGH_WATER_LIMIT (64 KiB) bytes of each body are not counted: uvicorn buffers that much per
      connection anyway before it stops reading, and so a flood of large bodies never turns away
      a small request (a 28x28 JSON digit is 2 KB, a canvas PNG 15 KB).

    A client that hangs up mid-body ends its request quietly: Starlette raises ClientDisconnect,
    which uvicorn would log as a server error, with a traceback, for each such client."""

    def __init__(self, app, limit: int, timeout: float = READ_TIMEOUT, budget: int = BODY_BUDGET):
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.budget = budget
        self.held = 0  # bytes of bodies counted against the budget now, all requests together

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
        deadline = asyncio.get_running_loop().time() + self.timeout
        received = counted = 0  # bytes of this body: read, and counted against the budget
        body_done = False
        started = False

        async def limited_receive():
            nonlocal received, counted, body_done
            if body_done:  # what is awaited now is the client's disconnect: no deadline on that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refused(408, f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] != "http.request":
                return message
            body_done = not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _Refused(413, self._message(received, at_least=True))
            more = max(received - HIGH_WATER_LIMIT, 0) - counted
            if more:
                if self.held + more > self.budget:
                    raise _Refused(
                        503,
                        f"the service is holding {self.held / 2**20:.0f} MiB of other request "
                        f"bodies, its limit: try again in a moment",
                        {"retry-after": "1"},
                    )
                self.held += more
                counted += more
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _Refused as err:
            if not started:
                await _send_error(scope, receive, send, err.status, err.message, err.headers)
        except ClientDisconnect:
            pass  # nobody is left to answer
        finally:
            self.held -= counted

    def _message(self, size: int, at_least: bool = False) -> str:
        return (
            f"the request body is {'more than ' if at_least else ''}{size:,} bytes; the limit is {self.limit:,} bytes"
        )


class _Refused(Exception):
    """Raised from a request's receive(): answer `status` instead of reading on."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


async def _send_error(scope, receive, send, status: int, message: str, headers: dict | None = None) -> None:
    """`_error`'s answer, sent from the middleware, closing the connection (the body is unread)."""
    response = _error(status, message)
    response.headers.update({"connection": "close", **(headers or {})})
    await response(scope, receive, send)


# --- bounds on a request's head, in uvicorn's protocol ---------------------------------------------


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools, what uvicorn[standard] runs), with the two bounds on
    a request's head that it lacks (measured before this class, uvicorn 0.54):

    - time: a connection must send a whole request head within `read_timeout` seconds of opening,
      or of its last answer, else it is closed (with a 408 if it had begun one). uvicorn's own
      keep-alive timeout starts only after an answer, and any byte received cancels it: 500
      idle connections, or a head sent a byte a second, stayed open for as long as the client
      wished, each holding a file descriptor (a service under systemd gets 1,024);
    - size: a head over `max_head` bytes -> 431 and closed. httptools buffers a header by
      concatenating bytes: one 300 MB header took 109 s of the service's event loop and its
      peak memory from 450 MiB to 1 GiB;
    - writing: a response whose client stops reading it (the transport's buffer full, writing
      paused) for `write_timeout` seconds is dropped with its connection. Without this six clients
      that never read their 99 MB annotations held 1.4 GB for as long as they stayed connected;
    - what httptools cannot parse (duplicate, negative or chunked-and-sized Content-Length, a NUL
      in a header, an unknown method, TLS) is a JSON 400 like every other error, not uvicorn's
      plain-text one.

    Body bounds are BodyLimits' (ASGI, in the app). uvicorn calls this class with its own
    arguments; `serve` binds read_timeout with functools.partial. It relies on attributes of
    HttpToolsProtocol (loop, transport, cycle, pipeline) that are not uvicorn's public API: a
    release that changes them fails tests/test_serve.py's abuse test."""

    def __init__(
        self,
        *args,
        read_timeout: float = READ_TIMEOUT,
        max_head: int = MAX_HEAD,
        write_timeout: float = WRITE_TIMEOUT,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.write_timer: asyncio.TimerHandle | None = None
        self.max_head = max_head
        self.reading_head = True  # False from a head's end to its body's end
        self.head_bytes = 0  # of the head being read, counted by whole reads (see data_received)
        self.parsed = 0  # heads and bodies completed on this connection
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc) -> None:
        self._stop_head_timer()
        self._stop_write_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:  # the transport's buffer is full: the client reads no faster
        super().pause_writing()
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(self.write_timeout, self._write_too_slow)

    def resume_writing(self) -> None:
        self._stop_write_timer()
        super().resume_writing()

    def _stop_write_timer(self) -> None:
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _write_too_slow(self) -> None:
        # abort, not close: close() would wait to send what is buffered, to a client that does not read
        self.write_timer = None
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that httptools cannot parse (`msg` is always "Invalid HTTP
        request received."), as JSON; a response already begun is cut off instead."""
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started or self.cycle.response_complete:
            self._write_error(
                400,
                "the request is not valid HTTP/1.1: check its request line and headers "
                "(Content-Length given once, not negative, not with Transfer-Encoding)",
            )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        parsed = self.parsed
        super().data_received(data)
        # Counted only when every byte of `data` went to one unfinished head: a read that also
        # ended a head or a body is not, so a head may pass max_head by one read (at most
        # 256 KiB) before it is refused, and no request is ever refused for its body's bytes.
        if self.reading_head and self.parsed == parsed and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head:
                self._refuse(431, f"the request's head is more than {self.max_head:,} bytes")

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self.reading_head, self.head_bytes = False, 0
        self.parsed += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_head = True  # what comes next is the next request's head
        self.parsed += 1
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:  # the client's turn to send a head
            self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self.head_timer = self.loop.call_later(self.read_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.head_bytes:
            self._refuse(408, f"the request's head did not arrive within {self.read_timeout:g} s")
        elif not self.transport.is_closing():  # an idle connection: closed without a word, as at keep-alive's end
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a JSON error, written here since no request has begun, and close."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # else a request is being answered: just close
            self._write_error(status, message)
        self.transport.close()

    def _write_error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )


# --- the inference thread and its batches ---------------------------------------------------------


class Batcher:
    """Runs model work in one thread, off the event loop. Predictions that arrive while the
    model is busy wait and are then read together in one batch: one model call instead of many.
    Images to prepare first (uploads, canvases) are prepared in a thread of their own, so that
    arrays never wait behind a photo: with the preparation in the inference thread, 12 blank
    6300x6300 pages under `bench serve --abuse` held the 28x28 predictions to 48 requests/s,
    p99 1.6 s."""

    def __init__(self, model: Model, max_batch: int = MAX_BATCH, max_pixels: int = MAX_PIXELS):
        self.model = model
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="digitlab-inference")
        self.preparer = ThreadPoolExecutor(1, thread_name_prefix="digitlab-prepare")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.preparing: set[asyncio.Task] = set()

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
        for task in list(self.preparing):
            task.cancel()
        self.preparer.shutdown(wait=True, cancel_futures=True)
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
            to_prepare = [item for item in batch if item[1]]
            if to_prepare:  # not awaited: the next arrays need not wait for these photos
                task = asyncio.get_running_loop().create_task(self._run_group(to_prepare, True))
                self.preparing.add(task)
                task.add_done_callback(self.preparing.discard)
            await self._run_group([item for item in batch if not item[1]], False)

    async def _run_group(self, items: list, prepare: bool) -> None:
        if not items:
            return
        images = [image for image, _, _ in items]
        try:
            if prepare:
                images = await asyncio.get_running_loop().run_in_executor(self.preparer, self._prepare_each, images)
            results = await self.run(self._predict_each, images)
        except Exception as err:  # noqa: BLE001 -- not one image's: the thread itself failed; handed to each
            results = [_failed(err, "the inference thread")] * len(items)
        for (_, _, future), result in zip(items, results):
            if future.done():  # its client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _prepare_each(self, images: list) -> list:
        """Each image prepared MNIST-style alone: an image that fails, with any exception, fails
        alone (its error in its place). Before, the batch was tried whole first, and an error that
        was no DigitlabError (a DDS file's NotImplementedError) failed every request batched with it."""
        prepared = []
        for image in images:
            try:
                prepared.append(to_mnist_style(image, max_pixels=self.max_pixels))
            except Exception as err:  # noqa: BLE001 -- its request's error
                prepared.append(_failed(err, "preparing an image"))
        return prepared

    def _predict_each(self, images: list) -> list:
        """Predictions for a batch of 28x28 arrays (or the errors their preparation gave, kept in
        their place), the arrays read in one model call."""
        results: list = [image if isinstance(image, BaseException) else None for image in images]
        ready = [(k, image) for k, image in enumerate(images) if not isinstance(image, BaseException)]
        if not ready:
            return results
        try:
            predictions = predict([x for _, x in ready], self.model, prepare=False)
        except Exception:  # noqa: BLE001 -- one input the model refuses: then each alone, to find it
            predictions = []
            for _, x in ready:
                try:
                    predictions.append(predict([x], self.model, prepare=False)[0])
                except Exception as err:  # noqa: BLE001 -- its request's error
                    predictions.append(_failed(err, "predicting"))
        for (k, _), prediction in zip(ready, predictions):
            results[k] = prediction
        return results


def _failed(err: BaseException, doing: str) -> BaseException:
    """`err`, to hand to its request, without the tracebacks of it and of the errors it came from:
    their frames held the decoded image, and 12 blank 6300x6300 pages that failed together took the
    service from 621 MiB to 2.6 GiB, held until their batch ended. What is no DigitlabError is a
    bug: logged first, with its traceback."""
    if not isinstance(err, DigitlabError):
        log.error("%s raised %s: %s", doing, type(err).__name__, err, exc_info=err)
    seen: set[int] = set()
    pending = [err]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        pending += [e.__cause__, e.__context__]
    return err


def _answer_error(err: BaseException) -> ServiceError:
    """The JSON error for what a request's image work raised: 413/415/422 for the image's own
    problems (DigitlabError), 500 for anything else (a bug, logged by `_failed`)."""
    if isinstance(err, DigitlabError):
        return _reading_error(err)
    return ServiceError(500, f"internal error: {type(err).__name__}")


# --- the images in flight: their pixels, and the read threads --------------------------------------


class PixelBudget:
    """The pixels of the images being prepared or read, across requests, as their headers declare
    them (preprocess.declared_size): a request whose image does not fit in `budget` beside the
    others waits for room up to `wait` seconds, then gets 503 with Retry-After. BodyLimits bounds
    the bytes of bodies; this bounds what they decode to. An image of at most `small` pixels is
    not counted, so that large images never hold up a canvas drawing. With `shared` (SharedPixels,
    `serve --workers`), the budget is the whole service's: what every worker holds counts."""

    def __init__(
        self,
        budget: int = PIXEL_BUDGET,
        small: int = SMALL_IMAGE,
        wait: float = IMAGE_WAIT,
        shared: SharedPixels | None = None,
        worker: int = 0,
    ):
        self.budget, self.small, self.wait = budget, small, wait
        self.shared, self.worker = shared, worker
        self.held = 0
        self.changed = asyncio.Condition()
        if shared is not None:
            shared.reset(worker)  # a worker that replaces one that died starts from nothing

    @asynccontextmanager
    async def hold(self, pixels: int):
        counted = 0 if pixels <= self.small else min(pixels, self.budget)
        if counted:
            if self.shared is None:
                async with self.changed:
                    try:
                        async with asyncio.timeout(self.wait):
                            await self.changed.wait_for(lambda: self.held + counted <= self.budget)
                    except TimeoutError:
                        raise self._busy(self.held) from None
            else:
                deadline = asyncio.get_running_loop().time() + self.wait
                while not self.shared.try_add(self.worker, counted, self.budget):
                    if asyncio.get_running_loop().time() >= deadline:
                        raise self._busy(self.shared.total())
                    await asyncio.sleep(SHARED_POLL)
            self.held += counted
        try:
            yield
        finally:
            if counted:
                if self.shared is not None:
                    self.shared.remove(self.worker, counted)
                async with self.changed:
                    self.held -= counted
                    self.changed.notify_all()
                _give_back_memory()

    @staticmethod
    def _busy(held: int) -> ServiceError:
        return ServiceError(
            503,
            f"the service is working on {held:,} pixels of other images, its limit: try again in a moment",
            {"retry-after": "1"},
        )


SHARED_POLL = 0.02  # seconds between a worker's looks for room in the whole service's pixel budget


class SharedPixels:
    """The pixels each worker of one service holds (PixelBudget), in shared memory: one slot a
    worker, which only that worker writes, all read and written under one lock. Made by `serve`
    before the workers start, handed to each as it is spawned. Without it each worker had a pixel
    budget of its own, never below max_pixels: two workers held two 6300x6300 pages where one
    process held one, and `bench serve --abuse` peaked 257 MiB higher (+957 MiB against +699);
    with it, +638 MiB (2 workers, 2026-12-06)."""

    def __init__(self, workers: int):
        self.slots = multiprocessing.get_context("spawn").Array("q", workers)

    def try_add(self, worker: int, pixels: int, budget: int) -> bool:
        """Count `pixels` for `worker` if they fit in `budget` beside every worker's; False if not
        (or if the lock is not had within 0.1 s: its holder was killed in the few microseconds it
        holds it -- then 503 after IMAGE_WAIT rather than a hang)."""
        lock = self.slots.get_lock()
        if not lock.acquire(timeout=0.1):
            return False
        try:
            slots = self.slots.get_obj()
            if sum(slots) + pixels > budget:
                return False
            slots[worker] += pixels
            return True
        finally:
            lock.release()

    def remove(self, worker: int, pixels: int) -> None:
        with self.slots.get_lock():
            self.slots.get_obj()[worker] -= pixels

    def reset(self, worker: int) -> None:
        with self.slots.get_lock():
            self.slots.get_obj()[worker] = 0

    def total(self) -> int:
        with self.slots.get_lock():
            return sum(self.slots.get_obj())


def _load_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _give_back_memory() -> None:
    """Return the freed heap to the system (glibc's malloc_trim), once a large image is done
    with: else each process keeps its largest work's pages resident, and with several workers
    the service keeps each one's (`bench serve --abuse`, 2 workers: each kept +280-300 MiB, as
    much as one process). Only after images over SMALL_IMAGE pixels: it costs a few ms."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Reader:
    """Reads (/api/read) in `max_reads` threads of their own, so that a read never waits for
    predictions nor they for it: in the one inference thread, a 307 KB PNG of 62,500 dots worked
    41-48 s and a prediction sent meanwhile waited as long. At most `queue` more reads wait for
    a thread (then 503). Each may work `time_limit` seconds (then 422, read.ReadingStopped), and
    stops as soon as its client hangs up: two such reads sent and abandoned had made the next
    prediction wait 86 s."""

    def __init__(
        self,
        model: Model,
        max_pixels: int,
        max_reads: int = MAX_READS,
        queue: int = READ_QUEUE,
        time_limit: float | None = READ_TIME_LIMIT,
        line_model: LineModel | None = None,
    ):
        self.model, self.max_pixels, self.time_limit = model, max_pixels, time_limit
        self.line_model = line_model  # loaded at the first read that needs it (1.3 s: its ONNX export)
        self.capacity = max_reads + queue
        self.admitted = 0  # reads working or waiting for a thread
        self.executor = ThreadPoolExecutor(max_reads, thread_name_prefix="digitlab-read")

    def stop(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def read(self, request: Request, data: bytes, unsure_below: float, annotate: bool, method: str) -> dict:
        if self.admitted >= self.capacity:
            raise ServiceError(
                503,
                f"the service is already reading {self.admitted} photos, its limit: try again in a moment",
                {"retry-after": "1"},
            )
        self.admitted += 1
        stop = threading.Event()
        try:
            work = asyncio.get_running_loop().run_in_executor(
                self.executor, self._work, data, unsure_below, annotate, method, stop
            )
            while not work.done():  # the work goes on to its end (or its next check) either way
                await asyncio.wait([work], timeout=DISCONNECT_POLL)
                if not work.done() and not stop.is_set() and await request.is_disconnected():
                    stop.set()
            result, error = work.result()
        finally:
            self.admitted -= 1
        if stop.is_set():
            raise ClientDisconnect()  # nobody to answer (BodyLimits ends the request quietly)
        if error is not None:
            raise _answer_error(error) from error
        return result

    def _work(self, data: bytes, unsure_below: float, annotate: bool, method: str, stop: threading.Event) -> tuple:
        """(the reading's JSON, None), or (None, the error, its tracebacks dropped): in the read thread."""
        try:
            if method != "segment" and self.line_model is None:
                self.line_model = load_line_model()
            reading = read_digits(
                data,
                self.model,
                unsure_below=unsure_below,
                max_pixels=self.max_pixels,
                time_limit=self.time_limit,
                cancelled=stop.is_set,
                method=method,
                line_model=None if method == "segment" else self.line_model,
            )
            out = reading.to_json()
            if annotate:
                out["annotated"] = _annotated(data, reading, self.max_pixels)
            return out, None
        except Exception as err:  # noqa: BLE001 -- its request's error
            return None, _failed(err, "reading a photo")


def _annotated(data: bytes, reading, max_pixels: int) -> str:
    """The photo with its reading drawn on, as a data URL: at most ANNOTATED_SIDE pixels on its
    longer side, and at most ANNOTATED_BYTES as PNG, else as JPEG at the best quality that fits
    (smaller still if none does). A 6300x6300 photo's full-size PNG made a 33-99 MB answer."""
    canvas = cv2.cvtColor(
        annotate_image(data, reading, max_pixels=max_pixels, max_side=ANNOTATED_SIDE), cv2.COLOR_RGB2BGR
    )
    ok, encoded = cv2.imencode(".png", canvas)
    kind = "png"
    while not ok or encoded.size > ANNOTATED_BYTES:
        if kind == "jpeg":  # over even at quality 30 (uniform noise, 1600x1600, is 0.72 MB at 30): halve it
            canvas = cv2.resize(
                canvas, (max(1, canvas.shape[1] // 2), max(1, canvas.shape[0] // 2)), interpolation=cv2.INTER_AREA
            )
        kind = "jpeg"
        for quality in (90, 75, 60, 45, 30):
            ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and encoded.size <= ANNOTATED_BYTES:
                break
        if not ok and max(canvas.shape[:2]) == 1:
            raise ConfigError(f"the annotation of a {reading.width}x{reading.height} image could not be encoded")
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode()


# --- parsing requests -----------------------------------------------------------------------------


async def _image_bytes(request: Request) -> bytes:
    """The image in a request: multipart field "file", or the raw body."""
    content_type = request.headers.get("content-type", "")
    # read here, not with request.body(), which keeps the whole body until the request ends: a
    # form's body is dropped once its file is copied out
    data = b"".join([chunk async for chunk in request.stream()])
    if content_type.startswith("multipart/form-data"):
        data = multipart_file(data, content_type)
    if not data:
        raise ServiceError(422, "the request holds no image (empty body)")
    return data


BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)
FIELD_NAME = re.compile(rb'^content-disposition:[^\r\n]*;\s*name=(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE | re.MULTILINE)


def multipart_file(body: bytes, content_type: str, field: str = "file") -> bytes:
    """The content of the part named `field` in a multipart/form-data body (RFC 7578), found with
    bytes.find on the body already read (BodyLimits bounds it). Starlette's form parser
    (python-multipart, callbacks a chunk, then a spooled file) took 0.2 ms of the event loop for
    each 16-64 px PNG upload, a fifth of what a worker spent on one."""
    found = BOUNDARY.search(content_type)
    if found is None:
        raise ServiceError(422, "a multipart/form-data body needs the boundary parameter in its Content-Type")
    delimiter = b"\r\n--" + (found.group(1) or found.group(2)).encode("latin-1")
    # the first delimiter may open the body (no CRLF before it), or follow a preamble
    position = len(delimiter) - 2 if body.startswith(delimiter[2:]) else body.find(delimiter) + len(delimiter)
    while position >= len(delimiter) - 2 and not body.startswith(b"--", position):  # "--" after one: the last
        head_end = body.find(b"\r\n\r\n", position)
        end = body.find(delimiter, head_end + 4) if head_end >= 0 else -1
        if end < 0:
            break
        name = FIELD_NAME.search(body, position, head_end + 2)
        if name is not None and (name.group(1) or name.group(2)) == field.encode():
            return body[head_end + 4 : end]
        position = end + len(delimiter)
    raise ServiceError(422, f'the form has no file field named "{field}"')


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
    """The body's "pixels" as the (28, 28) uint8 digit the model sees (preprocess.to_uint8_digit,
    whose values decide their scale: JSON does not keep 1.0 apart from 1). Pixels with no ink by the
    rule images are held to (all 0, all 255, uniform grey, noise) are 422 "no ink found", as a blank
    canvas is: 28x28 zeros had been read as a "1" at 90%, 255s as a "5" at 49%."""
    try:
        return to_uint8_digit(value, name='"pixels"', json_numbers=True)
    except ImageError as err:  # PixelError (shape, type, range) or "no ink found"
        raise ServiceError(422, str(err)) from err


async def _predict_input(request: Request) -> tuple[Any, bool]:
    """What /api/predict was sent: (the image's bytes, True: to prepare) or (28x28 pixels, prepare)."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return await _image_bytes(request), True
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServiceError(422, f"the body is not valid JSON: {err}") from err
    except RecursionError:  # "[[[[..." a few thousand deep, which was a 500
        raise ServiceError(422, "the body's JSON is nested too deeply") from None
    except ValueError:  # an integer of more digits than Python converts, which was a 500
        raise ServiceError(
            422, f"the body's JSON holds an integer of more than {sys.get_int_max_str_digits():,} digits"
        ) from None
    if not isinstance(body, dict) or ("image" in body) == ("pixels" in body):
        raise ServiceError(422, 'send a JSON object with either "image" (a data URL) or "pixels" (28x28)')
    if "image" in body:
        return _data_url_bytes(body["image"]), True
    return _pixels(body["pixels"]), bool(body.get("prepare", False))


def _declared_pixels(data: bytes, max_pixels: int) -> int:
    """The pixels an image's header declares (nothing is decoded); its error, as JSON, if it has one."""
    try:
        width, height = declared_size(data, max_pixels=max_pixels)
    except Exception as err:  # noqa: BLE001 -- the image's own error: 413, 415 or 422 (500 for a bug)
        raise _answer_error(_failed(err, "reading an image's header")) from err
    return width * height


def _prediction_json(prediction, with_input: bool) -> dict:
    """The answer; "input" (784 ints) only when asked for: it took 35 of the 44 us of encoding an
    answer, and 1.75 of its 2.2 KB."""
    out = prediction.to_json()
    if with_input:
        out["input"] = prediction.model_input.tolist()
    return out


def _reading_error(err: DigitlabError) -> ServiceError:
    if isinstance(err, ImageTooLargeError):
        return ServiceError(413, str(err))
    if isinstance(err, NotAnImageError):
        return ServiceError(415, str(err))
    return ServiceError(422, str(err))


# --- the app --------------------------------------------------------------------------------------


def create_app(
    model: Model | str | Path | None = None,
    *,
    max_body: int = MAX_BODY,
    max_pixels: int = MAX_PIXELS,
    max_batch: int = MAX_BATCH,
    read_timeout: float = READ_TIMEOUT,
    body_budget: int = BODY_BUDGET,
    pixel_budget: int = PIXEL_BUDGET,
    max_reads: int = MAX_READS,
    read_queue: int = READ_QUEUE,
    read_time_limit: float | None = READ_TIME_LIMIT,
    line_model: LineModel | str | Path | None = None,
    shared_pixels: SharedPixels | None = None,
    worker: int = 0,
    precision: str = "auto",
) -> FastAPI:
    """The service as an ASGI app. model: a Model, a run directory, an .onnx file from `digitlab export`,
    a shipped model's name, or None for the bundled one. A path is loaded with the default backend (ONNX Runtime, with
    torch.get_num_threads() threads). read_timeout: seconds for a request's body to arrive once its
    head has (the head's own deadline is the server's: see `serve`). pixel_budget: pixels of images
    in work at once (PixelBudget); max_reads: reads worked on at once, read_queue: reads that may
    wait, read_time_limit: seconds each may take (Reader). line_model: the line recognizer
    /api/read's `auto` and `sequence` use (a LineModel or a `linenet` run directory; None: the
    bundled one, loaded at the first read that needs it). shared_pixels, worker: the pixel budget
    is the whole service's, held in SharedPixels, this app counting in slot `worker` (`serve --workers`).
    precision: `load_model`'s, for a model given by its path (auto: a run's int8 export where it has one)."""
    model = model if isinstance(model, Model) else load_model(model, precision=precision)
    if line_model is not None and not isinstance(line_model, LineModel):
        line_model = load_line_model(line_model)
    batcher = Batcher(model, max_batch, max_pixels)
    reader = Reader(model, max_pixels, max_reads, read_queue, time_limit=read_time_limit, line_model=line_model)
    pixels = PixelBudget(max(pixel_budget, max_pixels), shared=shared_pixels, worker=worker)
    app = FastAPIOffline(  # FastAPI with /docs from the package's own copy of Swagger UI (and /redoc: _add_redoc)
        redoc_url=None,
        static_url=DOCS_ASSETS,
        title="digitlab",
        version=__version__,
        lifespan=_lifespan(batcher, reader),
        description="Handwritten-digit recognition: one digit (`/api/predict`) or the digit strings "
        'in a photo (`/api/read`). Errors are JSON: `{"error": message, "status": code}`. Boxes are '
        "`[x, y, w, h]`: left edge, top edge, width and height in pixels of the original image.",
        swagger_ui_parameters={"validatorUrl": None},  # else its badge sends the schema's URL to swagger.io
    )
    app.state.model = model
    app.add_middleware(BodyLimits, limit=max_body, timeout=read_timeout, budget=body_budget)
    _answer_errors_as_json(app)
    _add_health(app, model)
    _add_predict(app, batcher, pixels, max_pixels)
    _add_read(app, reader, pixels, max_pixels)
    _add_page(app)
    _add_redoc(app)
    return app


def _lifespan(batcher: Batcher, reader: Reader):
    """The app's lifespan: the inference thread starts with the app; at its end the thread and
    the read threads stop."""

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()
        reader.stop()

    return lifespan


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error as JSON {"error": message, "status": code}: the service's own (ServiceError),
    a malformed query (422), Starlette's (404, 405, ...), and a bug (500, still logged)."""

    @app.exception_handler(ServiceError)
    async def service_error(_request, err: ServiceError):
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def server_error(_request, err: Exception):  # a bug: JSON like every error (and still logged)
        return _error(500, f"internal error: {type(err).__name__}")


def _add_health(app: FastAPI, model: Model) -> None:
    """GET /healthz and GET /api/models."""

    @app.get("/healthz", summary="Liveness: 200 while the service runs", responses={200: {"model": Health}})
    async def healthz():
        return {"status": "ok", "version": __version__, "worker": os.getpid()}

    @app.get("/api/models", summary="The model being served", responses={200: {"model": Models}})
    async def models():
        return {"models": [_model_info(model)]}


def _add_predict(app: FastAPI, batcher: Batcher, pixels: PixelBudget, max_pixels: int) -> None:
    """POST /api/predict: one digit, predicted in the inference thread (Batcher)."""

    @app.post(
        "/api/predict",
        summary="Read one digit",
        description="An uploaded image (multipart field `file`, or the raw body with an image/* "
        'Content-Type), or JSON: `{"image": "data:image/png;base64,..."}` or '
        '`{"pixels": 28x28 array, ink bright 0-255, "prepare": false}`. An image or pixels with no '
        'ink (blank, uniform) is 422 "no ink found".',
        responses=_documented(PredictAnswer, "The digit read", {413: "too large", 415: "not an image"}),
        openapi_extra={**_request_body(predict_request_schema()), "parameters": [INPUT_PARAMETER]},
    )
    async def predict_endpoint(request: Request):
        with_input = _flag(request, "input")
        image, prepare = await _predict_input(request)
        async with pixels.hold(_declared_pixels(image, max_pixels) if prepare else 0):
            try:
                prediction = await batcher.predict(image, prepare)
            except Exception as err:  # noqa: BLE001 -- the image's own error (Batcher hands each its own)
                raise _answer_error(err) from err
        return _json(_prediction_json(prediction, with_input))


def _add_read(app: FastAPI, reader: Reader, pixels: PixelBudget, max_pixels: int) -> None:
    """POST /api/read: the digit strings in a photo, read in a read thread (Reader)."""

    @app.post(
        "/api/read",
        summary="Read the digit strings in a photo",
        description="A photo (multipart field `file`, or the raw body). Each digit and line comes "
        "with its box `[x, y, w, h]` in pixels of the photo as sent. `annotate=true` adds the "
        f"annotated photo as a data URL (PNG, or JPEG over {ANNOTATED_BYTES // 2**20} MiB; "
        f"at most {ANNOTATED_SIDE} pixels on its longer side). `method`: `auto` (the default: each line "
        "read both ways, the likelier kept), `segment` (cut into digits) or `sequence` (the line recognizer).",
        responses=_documented(ReadAnswer, "The lines of digits read", {413: "too large", 415: "not an image"}),
        openapi_extra=_request_body(),
    )
    async def read_endpoint(
        request: Request, annotate: bool = False, unsure_below: float = UNSURE_BELOW, method: str = "auto"
    ):
        if not 0 <= unsure_below <= 1:
            raise ServiceError(422, f"unsure_below must lie in [0, 1], got {unsure_below}")
        if method not in METHODS:
            raise ServiceError(422, f"method must be one of {', '.join(METHODS)}, not {method!r:.40}")
        data = await _image_bytes(request)
        async with pixels.hold(_declared_pixels(data, max_pixels)):
            return _json(await reader.read(request, data, unsure_below, annotate, method))


def _documented(answer, description: str, errors: dict[int, str]) -> dict:
    """An endpoint's answers for /openapi.json: `answer` (a schema.py model) for 200 and ErrorAnswer
    for its errors (422 replaces FastAPI's own validation-error schema, which this service never sends)."""
    errors = {**errors, 422: "malformed, or no digit in it", 503: "busy: try again (Retry-After)"}
    return {
        200: {"model": answer, "description": description},
        **{status: {"model": ErrorAnswer, "description": why} for status, why in sorted(errors.items())},
    }


# ?input=true, read by _flag rather than declared as a FastAPI Query parameter: solving that took
# 31 us of each /api/predict's event-loop time (cProfile, 12,982 requests), as much as the rest
# of FastAPI's dependency solving
INPUT_PARAMETER = {
    "name": "input",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": 'add "input": the 28x28 image the model saw (as the page shows it)',
}
FLAGS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _flag(request: Request, name: str) -> bool:
    """A boolean query parameter, as FastAPI reads one (true/false, 1/0, yes/no, on/off); else 422."""
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() not in FLAGS:
        raise ServiceError(422, f"query.{name}: Input should be a valid boolean, not {value!r:.40}")
    return FLAGS[value.lower()]


def _request_body(json_schema: dict | None = None) -> dict:
    """The request body's forms for /openapi.json (the endpoints read the request themselves)."""
    content = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }
    if json_schema is not None:
        content = {"application/json": {"schema": json_schema}, **content}
    return {"requestBody": {"required": True, "content": content}}


def _add_redoc(app: FastAPI) -> None:
    """GET /redoc: ReDoc, from fastapi-offline's copy, as FastAPIOffline serves it, but with a
    Content-Security-Policy that keeps its images on this server: ReDoc fetches its sidebar logo
    from cdn.redoc.ly (and hides it when that fails), a request to elsewhere each time it is opened."""

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="digitlab - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["content-security-policy"] = "img-src 'self' data: blob:"
        return page


def _add_page(app: FastAPI) -> None:
    """GET /: the page (static/index.html), and its assets under /static/."""

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")


def _model_info(model: Model) -> dict:
    """What /api/models says of a model: its recipe, where it lies, size, accuracy, calibration."""
    config = model.config
    evaluation = config.get("evaluation")
    if evaluation is None and model.path is not None and (Path(model.path) / "metrics.json").is_file():
        metrics = read_json(Path(model.path) / "metrics.json", allow_nan=True)  # a diverged run's loss is NaN
        evaluation = {key: metrics.get(key) for key in ("dataset", "split", "n", "accuracy")}
    bundled = model.path is not None and Path(model.path).resolve() == BUNDLED_MODEL.resolve()
    return {
        "name": config.get("recipe", {}).get("name"),
        "path": None if bundled or model.path is None else str(model.path),
        "bundled": bundled,
        "classes": list(model.classes),
        "parameters": model.parameter_count,
        "backend": model.backend,
        "precision": model.precision,
        "evaluation": evaluation,
        "temperature": model.temperature,
        "active": True,
    }


WORKERS = os.cpu_count() or 1  # `serve`'s default: one worker process per core


def serve(
    model: Model | str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body: int = MAX_BODY,
    max_pixels: int = MAX_PIXELS,
    threads: int = 1,
    workers: int = WORKERS,
    read_timeout: float = READ_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    log_level: str = "info",
    line_model: LineModel | str | Path | None = None,
    precision: str = "auto",
) -> None:
    """Run the service on uvicorn until Ctrl-C or SIGTERM, then shut down cleanly (requests in
    flight answered, the inference threads stopped) and return. threads: PyTorch's and ONNX
    Runtime's threads for model work (a Model given already loaded keeps its own). read_timeout:
    seconds for a request's head to arrive, and again for its body (GuardedHttp, BodyLimits);
    write_timeout: seconds a response may wait for its client to read on (GuardedHttp).

    workers: processes answering requests (default: one per core). Python runs one request's
    decoding, preparation and JSON at a time per process, so one process used one core of two.
    With workers > 1, `workers` sockets are bound here to the one port with SO_REUSEPORT, and
    `workers` processes, started with spawn (never fork: this process has imported torch, whose
    thread pools do not survive a fork), each accept on one of them (uvicorn's Multiprocess
    supervisor, _Supervisor); each builds its own app: its own model session, Batcher (batching
    kept) and Reader. One socket each rather than one shared: the kernel then deals new
    connections out among the sockets by their addresses, where on a shared socket the worker
    that woke first took every connection waiting (asyncio accepts up to the backlog at a time):
    200 connections in turn all went to one worker, and 16 keep-alive clients opening at once
    could all land on one. The model is loaded here once first, so that a
    bad model is one clear error (exit 2) before any worker starts; a worker then gets its path
    (a Model given loaded must have one). A worker that dies is restarted by the supervisor;
    one that fails while starting stops the service with an error. On SIGINT or SIGTERM each
    worker is sent SIGTERM, answers what it is working on, and exits; then so does `serve`.

    The bounds on memory hold for the whole service: each worker gets 1/workers of BODY_BUDGET,
    and PIXEL_BUDGET is shared by all (see `worker_limits`).

    No limit on connections (uvicorn's limit_concurrency): it counts open connections, idle ones
    too -- with limit_concurrency=50, 60 idle connections turned the next request of a client
    already connected into a 503. The head deadline closes idle connections instead."""
    if workers < 1 or threads < 1:
        raise ConfigError(f"workers and threads must be at least 1, got {workers} and {threads}")
    http = functools.partial(GuardedHttp, read_timeout=read_timeout, write_timeout=write_timeout)
    options = dict(host=host, port=port, http=http, log_level=log_level, timeout_graceful_shutdown=10)
    if workers == 1:
        torch.set_num_threads(threads)
        app = create_app(
            model,
            max_body=max_body,
            max_pixels=max_pixels,
            read_timeout=read_timeout,
            line_model=line_model,
            precision=precision,
        )
        _Server(uvicorn.Config(app, **options)).run()
        return
    if isinstance(model, Model) or isinstance(line_model, LineModel):
        model, line_model = _model_path(model), _model_path(line_model)
    torch.set_num_threads(threads)
    load_model(model, precision=precision)  # a bad model is one clear error here, before any worker starts (0.8 s)
    if line_model is not None:
        load_line_model(line_model)
    app_options = dict(
        max_body=max_body, max_pixels=max_pixels, read_timeout=read_timeout, line_model=line_model, precision=precision
    )
    factory = functools.partial(worker_app, model, threads, {**app_options, **worker_limits(workers)})
    config = uvicorn.Config(factory, factory=True, workers=workers, **options)
    supervisor = _Supervisor(config, _listening_sockets(host, port, workers, config.backlog))
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("uvicorn.error").info(  # configured by uvicorn.Config, as its own "running on" line
        "digitlab serving on http://%s:%d with %d workers (Ctrl-C to stop)", shown, port, workers
    )
    supervisor.run()
    if not supervisor.asked_to_stop:
        raise ServiceStopped("a worker failed to start (its log says why): the service stopped")


class ServiceStopped(DigitlabError):
    """The service stopped without being asked to: a worker failed while starting."""

    exit_code = 1


def _model_path(model):
    if not isinstance(model, (Model, LineModel)):
        return model
    if model.path is None:
        raise ConfigError(
            "with several workers each loads the model itself: pass its path, not a Model in memory (or workers=1)"
        )
    return model.path


def worker_limits(workers: int) -> dict:
    """A worker's share of the bounds that hold memory (create_app's arguments): 1/workers of
    BODY_BUDGET, so that the workers together hold what one process did, and the pixel budget
    the whole service's, shared (SharedPixels): shared out, a worker's could never fall below
    max_pixels (each must take the largest image allowed), and two workers held two 40 MP images
    where one process held one. Not divided: the reads, MAX_READS working and READ_QUEUE waiting
    in each worker: a read holds its body and its image's pixels, both in these budgets, and the
    connections are not dealt out evenly, so that a queue of READ_QUEUE / workers turned away
    with 503 a read that one process would have queued (`bench serve --abuse`)."""
    return dict(body_budget=BODY_BUDGET // workers, pixel_budget=PIXEL_BUDGET, shared_pixels=SharedPixels(workers))


def worker_app(model, threads: int, options: dict, worker: int = 0) -> FastAPI:
    """A worker's app (uvicorn's factory, called in the worker process): its own model session.
    threads is 1 from `serve`: two workers with two threads each on two cores oversubscribe.
    worker: its index (its socket's and its slot's in SharedPixels)."""
    torch.set_num_threads(threads)
    return create_app(model, worker=worker, **options)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn raises the signal again once it has shut down, so that the process dies
        # of it; for `digitlab serve` a stop that was asked for is a clean exit (status 0).
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def _listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """`count` sockets listening on host:port with SO_REUSEPORT. The port is first bound alone
    (without SO_REUSEPORT), so that a port in use -- by another `digitlab serve` of the same user
    too, which SO_REUSEPORT would otherwise let join and take half the connections -- is an error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
        sockets = []
        for _ in range(count):
            listening = socket.socket(family, kind, proto)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind(address)
            listening.listen(backlog)
            listening.set_inheritable(True)
            sockets.append(listening)
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sockets


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, with each worker on its own socket (the one at its index; see
    `serve`), remembering whether it stopped because it was asked to (SIGINT, SIGTERM) or because
    a worker failed to start."""

    asked_to_stop = False

    def init_processes(self) -> None:
        for index in range(len(self.sockets)):
            process = self._worker(index)
            process.start()
            self.processes.append(process)

    def handle_hup(self) -> None:  # uvicorn's would start workers outside their slots and sockets
        log.warning("SIGHUP ignored: restart `digitlab serve` to change its workers")

    handle_ttin = handle_ttou = handle_hup

    def _worker(self, index: int) -> Process:
        """Worker `index`: on socket `index`, its app made with worker=index (worker_app)."""
        config = copy.copy(self.config)
        config.app = functools.partial(self.config.app, worker=index)
        return Process(config, [self.sockets[index]])

    def keep_subprocess_alive(self) -> None:
        """uvicorn 0.55's, but a worker that died is replaced on its own socket: meanwhile the
        connections the kernel deals to that socket wait in its backlog (this process holds it)."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: kill it
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it would fail the same way again
                log.error("worker process [%s] failed to start: stopping the service", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("worker process [%s] died (exit code %s): starting another", process.pid, process.exitcode)
            replacement = self._worker(idx)
            replacement.start()
            self.processes[idx] = replacement

    def handle_int(self) -> None:
        self.asked_to_stop = True
        super().handle_int()

    def handle_term(self) -> None:
        self.asked_to_stop = True
        super().handle_term()
