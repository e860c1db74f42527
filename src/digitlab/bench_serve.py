"""`digitlab bench serve`: a bounded load test of `digitlab serve` on loopback.

    from digitlab.bench_serve import bench_serve
    report = bench_serve(clients=16, seconds=10)

The service runs as its own process (`python -m digitlab serve` on a free loopback port, as a
user would start it); the clients are coroutines in this process, each with one keep-alive
HTTP/1.1 connection, sending the next request as soon as the last is answered (a closed
loop). Raw sockets rather than an HTTP library: the clients share the machine with the
service, and the less CPU they take, the more is measured of the service.

Kinds of request, each sent for `seconds` after a short warm-up:
- pixels: POST /api/predict with JSON {"pixels": a 28x28 MNIST test digit}: the model sees it
  as it is (what a program that has MNIST-style arrays sends);
- canvas: POST /api/predict with JSON {"image": a PNG data URL}: the same digits drawn large,
  dark on white, as the page's drawing pad sends them; prepared MNIST-style by the service.

Measured: requests answered, errors (any status but 200, or a broken connection: the run
fails if there is one), requests per second, latency p50/p90/p99/max (from writing the
request to reading the whole answer), the share of answers that name the digit's MNIST label,
and the service's peak resident memory (VmHWM). Results go to a JSON file and a section of
BENCHMARKS.md. Target (issue 4): >= 500 predictions/s with p99 <= 50 ms at 16 clients on 2 cores.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch

from .bench import machine, write_section
from .checkpoint import write_json
from .errors import ConfigError, DigitlabError

START, END = "<!-- bench serve: begin -->", "<!-- bench serve: end -->"
HEADING = "## The service under load (`digitlab bench serve`)"
TARGET_RPS, TARGET_P99_MS = 500, 50  # for "pixels" at 16 clients
KINDS = ("pixels", "canvas")
DIGITS = 256  # distinct MNIST test digits sent, in turn
WARM_UP_SECONDS = 1.0
START_TIMEOUT = 60  # seconds for the service to answer /healthz


class LoadTestError(DigitlabError):
    """The service did not start, or a request failed during the load test."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(port: int, model=None, extra: list[str] | None = None) -> subprocess.Popen:
    """`python -m digitlab serve` on 127.0.0.1:port, returned once /healthz answers."""
    command = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--log-level", "warning"]
    if model is not None:
        command += ["--model", str(model)]
    process = subprocess.Popen(command + (extra or []), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise LoadTestError(f"`{' '.join(command)}` exited with {process.returncode}:\n{output[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    stop_service(process)
    raise LoadTestError(f"the service did not answer /healthz on port {port} within {START_TIMEOUT} s")


def stop_service(process: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM, as a service manager would stop it; its exit code (SIGKILL after `timeout`)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout:
        process.stdout.close()
    return process.returncode


def peak_rss_mb(pid: int) -> float | None:
    """A live process's peak resident memory (VmHWM) in MiB; None where /proc does not tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


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


def http_request(path: str, body: bytes, port: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the service closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _load(port: int, requests: list[bytes], labels: np.ndarray, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    checked = right = 0

    async def client(k: int) -> None:
        nonlocal checked, right
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                await writer.drain()
                status, body = await _read_answer(reader)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors.append(f"{status}: {body[:200].decode(errors='replace')}")
                elif i % 8 == 0:  # parse a sample: the clients' CPU is the service's too
                    checked += 1
                    right += json.loads(body)["digit"] == str(labels[i % len(labels)])
                i += clients
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as err:
            errors.append(f"client {k}: {type(err).__name__}: {err}")
        finally:
            writer.close()

    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies), "errors": len(errors), "error_samples": errors[:10],
        "seconds": elapsed, "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
        "digits_right": right / checked if checked else None, "digits_checked": checked,
    }


def bench_serve(clients: int = 16, seconds: float = 10, kinds=KINDS, model=None, data_dir=None,
                results: Path | None = Path("benchmarks/results/serve.json"),
                markdown: Path | None = Path("BENCHMARKS.md"), progress: bool = True) -> dict:
    """Load-test the service; write `results` and the BENCHMARKS.md section (None: don't)."""
    from .api import load_dataset

    if clients < 1 or seconds <= 0:
        raise ConfigError(f"clients must be at least 1 and seconds positive, got {clients} and {seconds}")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ConfigError(f"unknown request kinds {sorted(unknown)}; choose from {list(KINDS)}")
    mnist = load_dataset("mnist", data_dir=data_dir, progress=False)
    images = mnist.test_images[:DIGITS, 0].numpy()
    labels = mnist.test_labels[:DIGITS].numpy()
    port = free_port()
    process = start_service(port, model)
    runs = {}
    try:
        for kind in kinds:
            requests = [http_request("/api/predict", body, port) for body in request_bodies(kind, images)]
            asyncio.run(_load(port, requests, labels, min(clients, 4), WARM_UP_SECONDS))
            result = asyncio.run(_load(port, requests, labels, clients, seconds))
            result["request_bytes"] = int(np.mean([len(r) for r in requests]))
            runs[kind] = result
            if progress:
                print(f"{kind}: {result['requests_per_second']:.0f} requests/s, p50 {result['p50_ms']:.1f} ms, "
                      f"p99 {result['p99_ms']:.1f} ms, {result['errors']} errors", flush=True)
        rss = peak_rss_mb(process.pid)
    finally:
        exit_code = stop_service(process)
    report = {
        "command": "digitlab bench serve" + (f" --clients {clients}" if clients != 16 else "")
                   + (f" --seconds {seconds:g}" if seconds != 10 else "")
                   + (f" --kinds {' '.join(kinds)}" if tuple(kinds) != KINDS else "")
                   + (f" --model {model}" if model else ""),
        "date": date.today().isoformat(), "machine": machine(), "torch": torch.__version__,
        "clients": clients, "seconds": seconds, "service_threads": 1, "service_peak_rss_mb": rss,
        "service_exit_code": exit_code, "runs": runs,
    }
    if results is not None:
        write_json(Path(results), report)
    if markdown is not None:
        publish(report, Path(markdown))
    failed = {kind: run["error_samples"] for kind, run in runs.items() if run["errors"]}
    if failed:
        raise LoadTestError(f"requests failed under load: {failed}")
    return report


def publish(report: dict, markdown: Path) -> None:
    lines = [START,
             "| request | clients | requests | errors | requests/s | p50 | p90 | p99 | max | digits right |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    what = {"pixels": "`/api/predict` JSON 28x28 pixels", "canvas": "`/api/predict` JSON canvas PNG data URL"}
    for kind, run in report["runs"].items():
        right = ("—" if run["digits_right"] is None
                 else f"{run['digits_right'] * 100:.1f}% of {run['digits_checked']}")
        lines.append(f"| {what[kind]} | {report['clients']} | {run['requests']:,} | {run['errors']} | "
                     f"{run['requests_per_second']:.0f} | {run['p50_ms']:.1f} ms | {run['p90_ms']:.1f} ms | "
                     f"{run['p99_ms']:.1f} ms | {run['max_ms']:.1f} ms | {right} |")
    pixels = report["runs"].get("pixels")
    verdict = ""
    if pixels is not None and report["clients"] == 16:
        met = pixels["requests_per_second"] >= TARGET_RPS and pixels["p99_ms"] <= TARGET_P99_MS
        verdict = (f" Target for 28x28 pixels at 16 clients: >= {TARGET_RPS} requests/s with p99 <= "
                   f"{TARGET_P99_MS} ms: {'met' if met else 'NOT met'}.")
    rss = report["service_peak_rss_mb"]
    lines += ["", f"`{report['command']}` on {report['date']}: {report['machine']}, torch {report['torch']}; "
                  f"service and clients on the same machine, each kind sent for {report['seconds']:g} s after "
                  f"a {WARM_UP_SECONDS:g} s warm-up; the service's peak memory (VmHWM) "
                  f"{f'{rss:.0f} MiB' if rss is not None else 'unknown'}; it exited with "
                  f"{report['service_exit_code']} on SIGTERM.{verdict}", END]
    write_section(markdown, START, END, "\n".join(lines), HEADING + "\n\n")
