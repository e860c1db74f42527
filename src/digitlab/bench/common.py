"""What the benchmark suites share: where they ran, their BENCHMARKS.md sections, process memory,
and `digitlab serve` started as its own process with raw HTTP/1.1 requests to it (serve, speed)."""

from __future__ import annotations

import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import DigitlabError
from ..files import write_text

START_TIMEOUT = 60  # seconds for the service to answer /healthz


class LoadTestError(DigitlabError):
    """The service did not start, or a request failed during the load test."""


# --- where the numbers were measured, and where they are written -------------------------------------


def machine() -> str:
    """'2-core AMD EPYC, no GPU' style description of where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {cpu}, {gpu}"


def write_section(markdown: Path, start: str, end: str, block: str, preamble: str) -> None:
    """Put `block` (which begins with `start` and ends with `end`) into `markdown` in place of
    the text between those markers, keeping everything else; where the markers are absent,
    append `preamble` (a heading and intro) and the block."""
    text = markdown.read_text() if markdown.exists() else "# Benchmarks\n"
    if start in text and end in text and text.index(start) < text.index(end):
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + preamble + block + "\n"
    write_text(markdown, text)


def process_memory_mb(pid: int | str = "self", field: str = "VmHWM") -> float | None:
    """A live process's memory in MiB from /proc/PID/status: VmHWM (peak resident, the default)
    or VmRSS (resident now); None where /proc does not tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def worker_pids(pid: int) -> list[int]:
    """The processes that answer requests for the service `pid`: its workers, the children it
    started with multiprocessing's spawn (digitlab's and uvicorn's --workers both do; its
    resource tracker, also a child, answers nothing), or `pid` itself when it has none."""
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            if parent == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                workers.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile
            continue
    return sorted(workers) or [pid]


def workers_memory_mb(pid: int, field: str = "VmHWM") -> dict:
    """Each worker's memory (process_memory_mb) of the service `pid`, and their sum:
    {"workers": [MiB, ...], "sum": MiB}; the supervisor, which holds no requests, apart."""
    workers = worker_pids(pid)  # one scan of /proc for both
    each = [process_memory_mb(worker, field) or 0.0 for worker in workers]
    supervisor = process_memory_mb(pid, field) if workers != [pid] else None
    return {"workers": each, "sum": sum(each), "supervisor": supervisor}


class MemorySampler:
    """The peak of the service's workers' resident memory taken together: the sum of their VmRSS,
    sampled every `interval` seconds in a thread of this process (`with MemorySampler(pid) as m:`,
    then m.peak_mb). The sum of each worker's own peak (VmHWM) overstates it: workers peak at
    different moments (under `bench serve --abuse`, 2 workers: +432 MiB summed peaks)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak_mb = 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        workers = worker_pids(self.pid)
        while not self.stopped.is_set():
            now = sum(process_memory_mb(worker, "VmRSS") or 0.0 for worker in workers)
            self.peak_mb = max(self.peak_mb, now)
            self.stopped.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


# --- the service as its own process --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service(subprocess.Popen):
    """`digitlab serve` as a child process. What it prints goes to a temporary file, not a pipe:
    a pipe nobody reads fills at 64 KiB and then blocks the service at its next log line, and
    under abuse uvicorn logs a warning for each malformed request."""

    def __init__(self, command: list[str], env: dict | None = None):
        self.log = tempfile.TemporaryFile()
        super().__init__(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def start_service(port: int, model=None, extra: list[str] | None = None, workers: int | None = None) -> Service:
    """`python -m digitlab serve` on 127.0.0.1:port (workers None: its default), returned once
    /healthz answers."""
    command = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--log-level", "warning"]
    if model is not None:
        command += ["--model", str(model)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return _started(Service(command + (extra or [])), command, port)


def start_peer(port: int, workers: int, model=None) -> Service:
    """The peer (bench/peer.py) under uvicorn with `workers` processes on 127.0.0.1:port, as its
    docstring starts it, returned once it answers."""
    command = [sys.executable, "-m", "uvicorn", "digitlab.bench.peer:create_app", "--factory"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    environment = {**os.environ, "DIGITLAB_PEER_MODEL": str(model or "")}
    return _started(Service(command, env=environment), command, port, "/docs")


def _started(process: Service, command: list[str], port: int, path: str = "/healthz") -> Service:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LoadTestError(f"`{' '.join(command)}` exited with {process.returncode}:\n{process.output()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    stop_service(process)
    raise LoadTestError(f"`{' '.join(command)}` did not answer {path} on port {port} within {START_TIMEOUT} s")


def stop_service(process: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM, as a service manager would stop it; its exit code (SIGKILL after `timeout`)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# --- requests to it ----------------------------------------------------------------------------------


UPLOAD_SIDES = (16, 24, 32, 48, 64)  # pixels across the uploaded PNGs, in turn
BOUNDARY = "digitlab-bench-7f3a9c"


UPLOAD_MARGIN = 0.1  # of the digit's longer side, on each side: a digit cropped from a form or a photo


def upload_requests(images: np.ndarray, port: int) -> list[bytes]:
    """POST /api/predict requests, multipart/form-data with field "file": each (28, 28) uint8
    MNIST digit (ink bright) as a single-digit PNG, dark ink on white, as a digit cropped from a
    form or a photo comes: cut to its ink, centred in a square with UPLOAD_MARGIN around it (not
    MNIST's 20-in-28 box), UPLOAD_SIDES pixels across in turn (INTER_AREA below 28, INTER_LINEAR
    above)."""
    requests = []
    for k, image in enumerate(images):
        side = UPLOAD_SIDES[k % len(UPLOAD_SIDES)]
        ys, xs = np.nonzero(image)
        ink = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        square = round(max(ink.shape) * (1 + 2 * UPLOAD_MARGIN))
        framed = np.zeros((square, square), np.uint8)
        top, left = (square - ink.shape[0]) // 2, (square - ink.shape[1]) // 2
        framed[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
        scaled = cv2.resize(framed, (side, side), interpolation=cv2.INTER_AREA if side < square else cv2.INTER_LINEAR)
        png = cv2.imencode(".png", 255 - scaled)[1].tobytes()
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + png
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        requests.append(http_request("/api/predict", body, port, f"multipart/form-data; boundary={BOUNDARY}"))
    return requests


def request_bodies(kind: str, images: np.ndarray) -> list[bytes]:
    """JSON bodies for /api/predict, one per (28, 28) uint8 MNIST digit (ink bright)."""
    bodies = []
    for image in images:
        if kind == "pixels":
            payload = {"pixels": image.tolist()}
        else:  # as the page's pad: 280x280, dark ink on light paper, PNG
            canvas = 253 - cv2.resize(image, (280, 280), interpolation=cv2.INTER_LINEAR) * (226 / 255)
            ok, png = cv2.imencode(".png", canvas.astype(np.uint8))
            payload = {"image": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()}
        bodies.append(json.dumps(payload, separators=(",", ":")).encode())
    return bodies


def http_request(
    path: str, body: bytes, port: int, content_type: str | None = "application/json", length: int | None = None
) -> bytes:
    """A POST as raw HTTP/1.1; `length` declares another Content-Length than the body's."""
    kind = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{kind}"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode() + body


def post(port: int, path: str, body: bytes, timeout: float = 30) -> int:
    """Send one POST to the service on loopback, read its whole answer, and give its HTTP status."""
    request = http_request(path, body, port).replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):  # the service closes the connection after its answer
            answer += chunk
    status = answer.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[1].isdigit():
        raise LoadTestError(f"the service answered {path} with {answer[:80]!r}")
    return int(status[1])
