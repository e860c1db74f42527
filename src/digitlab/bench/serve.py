"""`digitlab bench serve`: a bounded load test of `digitlab serve` on loopback, beside the peer a
user would write.

    from digitlab.bench.serve import bench_serve
    report = bench_serve(clients=16, seconds=10)

The service runs as its own process (`python -m digitlab serve` on a free loopback port, as a
user would start it, with its default workers: one per core, or `workers`); the clients are
coroutines in this process, each with one keep-alive HTTP/1.1 connection, sending the next
request as soon as the last is answered (a closed loop). Raw sockets rather than an HTTP
library: the clients share the machine with the service, and the less CPU they take, the more
is measured of the service. Then, the same load on the peer (bench/peer.py: FastAPI, Pillow,
the same model in PyTorch eager) under uvicorn with as many workers, so that the table shows
what digitlab's path is worth.

Kinds of request, each sent for `seconds` after a short warm-up:
- pixels: POST /api/predict with JSON {"pixels": a 28x28 MNIST test digit}: the model sees it
  as it is (what a program that has MNIST-style arrays sends);
- canvas: POST /api/predict with JSON {"image": a PNG data URL}: the same digits drawn large,
  dark on white, as the page's drawing pad sends them; prepared MNIST-style by the service;
- upload: POST /api/predict, multipart/form-data, field "file": the same digits as PNGs of one
  digit, dark on white, 16 to 64 pixels across (common.upload_requests); prepared too.

Measured: requests answered, errors (any status but 200, or a broken connection: the run
fails if there is one), requests per second, latency p50/p90/p99/max (from writing the
request to reading the whole answer), the share of the DIGITS test digits, each sent once
after the load, whose answer names its MNIST label, and each worker's peak resident memory
(VmHWM). Results go to a JSON file and a section of BENCHMARKS.md. Targets (issue 16, 16
clients on 2 cores): TARGETS.

`bench_abuse` (`digitlab bench serve --abuse`) sends the same 28x28 load while abusive clients,
in a process of their own, send a bounded mix of malformed requests (see EXPECTED): the good
requests must all succeed, every abusive one must be refused or closed (none left hanging), and
the service must stay up with its memory (the sum of its workers') bounded. Beside them, once
each, the hostile images of issue 18: a dot field and ruled lines to read, a DDS that Pillow
cannot decode, blank pages of 6300x6300 at once, the annotation of a 6300x6300 photo, and
clients that do not read its answer.
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import socket
import struct
import time
import zlib
from collections import Counter
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..api import load_dataset
from ..errors import ConfigError
from ..files import read_json, write_json
from ..serve.app import MAX_BODY, MAX_READS, READ_QUEUE, READ_TIME_LIMIT, READ_TIMEOUT, WRITE_TIMEOUT
from .common import (
    START_TIMEOUT,
    LoadTestError,
    MemorySampler,
    free_port,
    http_request,
    machine,
    request_bodies,
    start_peer,
    start_service,
    stop_service,
    upload_requests,
    worker_pids,
    workers_memory_mb,
    write_section,
)

START, END = "<!-- bench serve: begin -->", "<!-- bench serve: end -->"
HEADING = "## The service under load (`digitlab bench serve`)"
TARGET_RPS, TARGET_P99_MS = 500, 50  # for "pixels" at 16 clients under abuse (issue 4)
KINDS = ("pixels", "canvas", "upload")
# requests/s and p99 (ms) each kind should reach at 16 clients on 2 cores (issue 16)
TARGETS = {"upload": (1000, 50), "canvas": (500, 50), "pixels": (2000, 50)}
DIGITS = 256  # distinct MNIST test digits sent, in turn
WARM_UP_SECONDS = 1.0


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one answer: its head read whole, then Content-Length bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    start = head.lower().find(b"content-length:")
    length = int(head[start + 15 : head.index(b"\r\n", start)]) if start >= 0 else 0
    return status, await reader.readexactly(length)


async def _load(
    port: int, requests: list[bytes], labels: np.ndarray, clients: int, seconds: float, check_every: int = 8
) -> dict:
    """`clients` closed-loop clients for `seconds`; every `check_every`-th answer's digit is
    checked against its label (0: none: bench_serve checks a fixed set apart, see _digits_right)."""
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
                elif check_every and i % check_every == 0:  # a sample: the clients' CPU is the service's too
                    checked += 1
                    right += json.loads(body)["digit"] == str(labels[i % len(labels)])
                i += clients
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as err:
            errors.append(f"client {k}: {type(err).__name__}: {err}")
        finally:
            writer.close()

    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:10],
        "seconds": elapsed,
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "digits_right": right / checked if checked else None,
        "digits_checked": checked,
    }


async def _digits_right(port: int, requests: list[bytes], labels: np.ndarray) -> float:
    """The share of `requests` (each sent once, one at a time) whose answer names its label."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    right = 0
    try:
        for request, label in zip(requests, labels):
            writer.write(request)
            status, body = await _read_answer(reader)
            right += status == 200 and json.loads(body)["digit"] == str(label)
    finally:
        writer.close()
    return right / len(requests)


def _requests(kind: str, images: np.ndarray, port: int) -> list[bytes]:
    if kind == "upload":
        return upload_requests(images, port)
    return [http_request("/api/predict", body, port) for body in request_bodies(kind, images)]


def _measure(name: str, process, port: int, kinds, images, labels, clients: int, seconds: float, progress: bool):
    """Each kind's load on the running server `process` (digitlab's or the peer), then the share
    of the fixed set read right; and its workers' peak memory (VmHWM) at the end."""
    runs = {}
    for kind in kinds:
        requests = _requests(kind, images, port)
        asyncio.run(_load(port, requests, labels, min(clients, 4), WARM_UP_SECONDS, check_every=0))
        result = asyncio.run(_load(port, requests, labels, clients, seconds, check_every=0))
        result["digits_right"] = asyncio.run(_digits_right(port, requests, labels))
        result["digits_checked"] = len(requests)
        result["request_bytes"] = int(np.mean([len(r) for r in requests]))
        runs[kind] = result
        if progress:
            print(
                f"{name} {kind}: {result['requests_per_second']:.0f} requests/s, p50 {result['p50_ms']:.1f} ms, "
                f"p99 {result['p99_ms']:.1f} ms, {result['errors']} errors, "
                f"{result['digits_right'] * 100:.1f}% right",
                flush=True,
            )
    return runs, workers_memory_mb(process.pid)


class _Trivial(asyncio.Protocol):
    """A server that answers every request at once with the same small JSON, whatever it was:
    what the clients alone can drive (client_ceiling)."""

    ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{"digit":"7"}'

    def connection_made(self, transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
            start = self.buffer.lower().find(b"content-length:", 0, head_end)
            length = int(self.buffer[start + 15 : self.buffer.index(b"\r\n", start)]) if start >= 0 else 0
            if len(self.buffer) < head_end + 4 + length:
                return
            self.buffer = self.buffer[head_end + 4 + length :]
            self.transport.write(self.ANSWER)


def _trivial_server(port: int, ready) -> None:
    async def run():
        server = await asyncio.get_running_loop().create_server(_Trivial, "127.0.0.1", port)
        ready.set()
        await server.serve_forever()

    asyncio.run(run())


def client_ceiling(requests: list[bytes], clients: int, seconds: float) -> float:
    """Requests/s the clients reach against _Trivial in a process of its own: the most this load
    test could measure of any server on this machine (the clients share its cores)."""
    context = multiprocessing.get_context("spawn")
    ready, port = context.Event(), free_port()
    server = context.Process(target=_trivial_server, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(START_TIMEOUT):
            raise LoadTestError("the trivial server did not start")
        return asyncio.run(_load(port, requests, np.zeros(1), clients, seconds, check_every=0))["requests_per_second"]
    finally:
        server.kill()
        server.join()


def bench_serve(
    clients: int = 16,
    seconds: float = 10,
    kinds=KINDS,
    workers: int | None = None,
    peer: bool = True,
    model=None,
    data_dir=None,
    results: Path | None = Path("benchmarks/results/serve.json"),
    markdown: Path | None = Path("BENCHMARKS.md"),
    progress: bool = True,
) -> dict:
    """Load-test the service (`workers` processes; None: `digitlab serve`'s default, one per core)
    and then, if `peer`, the peer (bench/peer.py) under uvicorn with as many workers, one after the
    other on the same machine; write `results` and the BENCHMARKS.md section (None: don't)."""
    if clients < 1 or seconds <= 0 or (workers is not None and workers < 1):
        raise ConfigError(
            f"clients and workers must be at least 1 and seconds positive, got {clients}, {workers} and {seconds}"
        )
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ConfigError(f"unknown request kinds {sorted(unknown)}; choose from {list(KINDS)}")
    images, labels = _test_digits(data_dir)
    port = free_port()
    process = start_service(port, model, workers=workers)
    try:
        runs, memory = _measure("digitlab", process, port, kinds, images, labels, clients, seconds, progress)
    finally:
        exit_code = stop_service(process)
    ceiling = client_ceiling(_requests("pixels", images, port), clients, min(seconds, 3))
    if progress:
        print(f"the clients alone (a server answering at once): {ceiling:.0f} requests/s", flush=True)
    peer_report = None
    if peer:
        port = free_port()
        process = start_peer(port, len(memory["workers"]), model)
        try:
            peer_runs, peer_memory = _measure("peer", process, port, kinds, images, labels, clients, seconds, progress)
        finally:
            stop_service(process)
        peer_report = {"runs": peer_runs, "memory_mb": peer_memory}
    report = {
        "command": "digitlab bench serve"
        + (f" --clients {clients}" if clients != 16 else "")
        + (f" --seconds {seconds:g}" if seconds != 10 else "")
        + (f" --kinds {' '.join(kinds)}" if tuple(kinds) != KINDS else "")
        + (f" --workers {workers}" if workers is not None else "")
        + ("" if peer else " --no-peer")
        + (f" --model {model}" if model else ""),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "clients": clients,
        "seconds": seconds,
        "workers": len(memory["workers"]),
        "service_threads": 1,
        "service_memory_mb": memory,
        "service_peak_rss_mb": memory["sum"],
        "service_exit_code": exit_code,
        "client_ceiling_rps": ceiling,
        "runs": runs,
        "peer": peer_report,
    }
    if results is not None:
        _write_results(Path(results), report)
    if markdown is not None:
        publish(report, Path(markdown))
    failed = {kind: run["error_samples"] for kind, run in runs.items() if run["errors"]}
    if peer_report is not None:
        failed |= {f"peer {kind}": run["error_samples"] for kind, run in peer_report["runs"].items() if run["errors"]}
    if failed:
        raise LoadTestError(f"requests failed under load: {failed}")
    return report


def _test_digits(data_dir) -> tuple[np.ndarray, np.ndarray]:
    """The first DIGITS MNIST test digits, (N, 28, 28) uint8, and their labels."""
    mnist = load_dataset("mnist", data_dir=data_dir, progress=False)
    return mnist.test_images[:DIGITS, 0].numpy(), mnist.test_labels[:DIGITS].numpy()


def _write_results(path: Path, report: dict, abuse: bool = False) -> None:
    """serve.json holds the load test at its top level and the abuse test under "abuse": each
    rewrites its own part and keeps the other's."""
    previous = read_json(path) if path.exists() else {}
    if abuse:
        write_json(path, {**previous, "abuse": report})
    else:
        write_json(path, {**report, **({"abuse": previous["abuse"]} if "abuse" in previous else {})})


WHAT = {
    "pixels": "JSON 28x28 pixels",
    "canvas": "JSON canvas PNG data URL (280x280)",
    "upload": "uploaded PNG, one digit (16-64 px)",
}


def publish(report: dict, markdown: Path) -> None:
    lines = [
        START,
        "| server | request | requests | errors | requests/s | p50 | p90 | p99 | max | digits right | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    servers = [(f"digitlab ({report['workers']} workers)", report["runs"], True)]
    if report.get("peer"):
        servers.append(("peer: FastAPI + Pillow + PyTorch eager", report["peer"]["runs"], False))
    for kind in KINDS:
        for server, runs, judged in servers:
            if kind not in runs:
                continue
            run = runs[kind]
            lines.append(
                f"| {server} | {WHAT[kind]} | {run['requests']:,} | {run['errors']} | "
                f"{run['requests_per_second']:.0f} | {run['p50_ms']:.1f} ms | {run['p90_ms']:.1f} ms | "
                f"{run['p99_ms']:.1f} ms | {run['max_ms']:.1f} ms | {run['digits_right'] * 100:.1f}% | "
                f"{_verdict(kind, run) if judged and report['clients'] == 16 else ''} |"
            )
    memory = report["service_memory_mb"]
    each = ", ".join(f"{mb:.0f}" for mb in memory["workers"])
    peer = report.get("peer")
    peer_memory = (
        f"; the peer's {', '.join(f'{mb:.0f}' for mb in peer['memory_mb']['workers'])} MiB "
        f"(sum {peer['memory_mb']['sum']:.0f} MiB)"
        if peer
        else ""
    )
    lines += [
        "",
        "Targets (issue 16, 16 clients on 2 cores): "
        + "; ".join(f"{WHAT[k]} >= {rps:,} requests/s with p99 <= {p99} ms" for k, (rps, p99) in TARGETS.items())
        + ". Digits right: each of the "
        f"{DIGITS} MNIST test digits sent once after the load, as the kind sends it. The clients alone, "
        f"against a server that answers at once (a process of its own), reach "
        f"{report['client_ceiling_rps']:,.0f} requests/s of 28x28 pixels on this machine: the most "
        f"this test could measure.",
        "",
        f"`{report['command']}` on {report['date']}: {report['machine']}, torch {report['torch']}; "
        f"servers and clients (one asyncio process, raw sockets) on the same machine, one server at a "
        f"time, each kind sent for {report['seconds']:g} s after a {WARM_UP_SECONDS:g} s warm-up by "
        f"{report['clients']} clients on keep-alive connections. Peak memory (VmHWM) per worker: "
        f"digitlab's {each} MiB (sum {memory['sum']:.0f} MiB)" + peer_memory + "; digitlab "
        f"exited with {report['service_exit_code']} on SIGTERM.",
        END,
    ]
    write_section(markdown, START, END, "\n".join(lines), HEADING + "\n\n")


def _verdict(kind: str, run: dict) -> str:
    rps, p99 = TARGETS[kind]
    met = run["requests_per_second"] >= rps and run["p99_ms"] <= p99
    return f"{'met' if met else 'NOT met'} (>= {rps:,}/s, p99 <= {p99} ms)"


# --- the service under abuse: `digitlab bench serve --abuse` ----------------------------------------

ABUSE_START, ABUSE_END = "<!-- bench serve abuse: begin -->", "<!-- bench serve abuse: end -->"
ABUSE_HEADING = "## The service under abuse (`digitlab bench serve --abuse`)"
PACE = 0.1  # seconds between the requests of one paced kind of abuse: 10 a second of each
SLOW = 4  # clients trickling a head, and as many trickling a body, a byte every TRICKLE seconds
TRICKLE = 0.25
IDLE = 300  # connections opened at once and left silent
LARGE = 32  # bodies 1 MiB under the size limit (9 MiB by default: 288 MiB in all), sent at once
GRACE = 5.0  # seconds past the service's read timeout after which a client still waiting calls it a hang
# Hostile images (issue 18), sent once each at the start, beside the paced kinds: the sizes.
HOSTILE_SIDE = 6300  # pixels across the blank pages and the photo to annotate
BLANK_PAGES = 12  # blank HOSTILE_SIDE-square pages (a 52 KB PNG each at 6300) predicted at once
HOSTILE_READS = 2  # reads of a 62,500-dot PNG at once, then as many of 330 ruled lines
UNREAD = 4  # clients asking for the photo's annotation at once and not reading the answer for a while

# The right outcomes of each kind of abuse: an HTTP status; "closed", the service closed the
# connection without a word; "reset", it closed while the client was still sending -- how a
# refusal of a body it will not read ends. "hung" (nothing after read_timeout + GRACE seconds) is
# never right.
EXPECTED = {
    "wrong content type": {"400", "415", "422"},
    "truncated image": {"415", "422"},
    "undecodable image": {"415", "422"},
    "malformed JSON": {"422"},
    "malformed HTTP": {"400"},
    "half-closed": {"closed"},
    "huge Content-Length": {"413"},
    "huge declared pixels": {"413"},
    "oversized head": {"431", "reset"},
    "slow head": {"408"},
    "slow body": {"408"},
    "idle connections": {"closed"},
    "large bodies": {"415", "503", "reset"},
    "dot-field read": {"422", "503"},
    "ruled-lines read": {"200", "503"},
    "blank huge pages": {"422", "503"},
    "annotated huge photo": {"200", "503"},  # "200 too large": an answer over 3 MiB
    "unread answers": {"200", "503", "dropped"},  # "dropped": the service closed on it (write timeout)
}
SLOW_KINDS = ("slow head", "slow body", "idle connections")  # their seconds until the service closed are kept
PACED_READS = ("wrong content type", "truncated image", "undecodable image")  # with requests to /api/read
HOSTILE_KINDS = ("dot-field read", "ruled-lines read", "blank huge pages", "annotated huge photo", "unread answers")
# An error answered without a JSON body is wrong whatever its status: "400 not JSON" (uvicorn's own
# plain-text 400 was what malformed HTTP got).


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header declares width x height pixels (IHDR patched, its CRC redone)."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bad_dds() -> bytes:
    """A 48x48 DDS whose pixel-format flags are 0 (Pillow raised NotImplementedError for it)."""
    buffer = io.BytesIO()
    Image.new("RGBA", (48, 48)).save(buffer, "DDS")
    data = bytearray(buffer.getvalue())
    data[80:84] = bytes(4)
    return bytes(data)


def dot_field(n: int = 250, step: int = 10) -> bytes:
    """n x n dots of 3x3 pixels, `step` apart, as PNG: 307 KB at 250, which read for 41-48 s."""
    row = np.where(np.arange(n * step) % step // 3 == 1, 0, 255).astype(np.uint8)
    page = np.full((n * step, n * step), 255, np.uint8)
    for y in range(n):
        page[y * step + 3 : y * step + 6] = row
    return cv2.imencode(".png", page)[1].tobytes()


def ruled_lines(n: int = 330, width: int = 2000, step: int = 6) -> bytes:
    """n ruled lines `step` pixels apart, nothing written, as PNG: 8 KB, which read for 12-16 s."""
    page = np.full((n * step + 20, width), 255, np.uint8)
    page[10 : 10 + n * step : step] = 0
    return cv2.imencode(".png", page)[1].tobytes()


def grainy_photo(side: int) -> bytes:
    """A side x side JPEG of grainy paper with lines of digits: 2.9 MB at 6300, whose full-size
    annotation (a PNG) made a 33-99 MB answer."""
    rng = np.random.default_rng(0)
    page = cv2.GaussianBlur((235 + rng.normal(0, 6, (side, side))).clip(0, 255).astype(np.uint8), (0, 0), 1.2)
    for k in range(10):
        cv2.putText(
            page,
            "4071 93",
            (side // 20, side // 10 + k * side // 11),
            cv2.FONT_HERSHEY_SIMPLEX,
            side / 525,
            30,
            max(1, side // 210),
        )
    return cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes()


def abuse_requests(port: int, max_body: int) -> dict[str, list[bytes]]:
    """The paced kinds of abuse: raw HTTP/1.1 bytes for each, sent in turn, each on a new connection."""
    pad = np.full((280, 280), 253, np.uint8)  # a "1" as the page's drawing pad sends it
    cv2.line(pad, (140, 40), (140, 240), 30, 24)
    png, jpeg = (cv2.imencode(ext, pad)[1].tobytes() for ext in (".png", ".jpg"))

    def post(path: str, body: bytes, content_type: str | None = "application/json", length: int | None = None):
        return http_request(path, body, port, content_type, length)

    return {
        "wrong content type": [
            post("/api/predict", b'{"pixels": [[0]]}', "text/plain"),
            post("/api/predict", b"<digit>1</digit>", "application/xml"),
            post("/api/predict", png),  # a PNG said to be JSON
            post("/api/predict", png, "multipart/form-data"),  # no boundary
            post("/api/read", png[:64], None),
        ],  # no Content-Type at all
        "truncated image": [
            post(path, data[: len(data) // 2], content_type)
            for path in ("/api/predict", "/api/read")
            for data, content_type in ((png, "image/png"), (jpeg, "image/jpeg"))
        ],
        "undecodable image": [post(path, bad_dds(), "image/x-dds") for path in ("/api/predict", "/api/read")],
        "malformed JSON": [
            post("/api/predict", b'{"pixels": [[0, 0'),
            post("/api/predict", b"[" * 100_000 + b"]" * 100_000),  # deeper than json can go
            post("/api/predict", json.dumps({"pixels": [[10**400] * 28] * 28}).encode()),
            post("/api/predict", json.dumps({"pixels": [[float("nan")] * 28] * 28}).encode()),
            post("/api/predict", b'{"image": "data:image/png;base64,@@@"}'),
            post("/api/predict", b'{"pixels": ' + b"9" * 5000 + b"}"),
        ],  # more digits than int() takes
        "malformed HTTP": [
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64),  # a TLS hello
            b"GET\r\n\r\n",
            post("/api/predict", b"", length=-1),
            b"POST /api/predict HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
            b"POST /api/predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /api/predict HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",  # NUL in a header
            b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ],  # a method HTTP does not have
        "half-closed": [
            post("/api/predict", b"")[:30],  # part of a head, then the client's end is shut
            post("/api/predict", b"", "image/png", length=1000) + png[:100],
        ],  # a tenth of a body
        "huge Content-Length": [
            post("/api/predict", b"", "image/png", length=10**12),  # and no body
            post("/api/read", b"", "image/jpeg", length=max_body + 1),
        ],
        "huge declared pixels": [
            post("/api/predict", png_declaring(20_000, 20_000), "image/png"),
            post("/api/read", png_declaring(65_535, 65_535), "image/png"),
        ],
        "oversized head": [
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1_000_000 + b"\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n" + b"X-Many: headers\r\n" * 50_000 + b"\r\n",
        ],
    }


def _status(line: bytes) -> str:
    """The outcome named by the first line the service sent back: its status, or "closed"."""
    return line.split()[1].decode() if line.startswith(b"HTTP/1.1 ") else "closed"


async def _outcome(reader: asyncio.StreamReader) -> str:
    """The outcome of the answer being read: its status ("400 not JSON" for an error answered
    without a JSON body), or "closed"."""
    status = _status(await reader.readline())
    if status == "closed" or int(status) < 400:
        return status
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return status  # closed after the status line: what it was cannot be told
    return status if b"content-type: application/json" in head.lower() else f"{status} not JSON"


async def _exchange(port: int, data: bytes, limit: float, half_close: bool = False) -> str:
    """Send `data` on a new connection (then shut the client's side, if `half_close`); the outcome."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(limit):
            try:
                writer.write(data)
                if half_close:
                    writer.write_eof()
                await writer.drain()
            except OSError:  # refused or closed before all was sent: its answer may still be there to read
                pass
            return await _outcome(reader)
    except TimeoutError:
        return "hung"
    except ConnectionError:
        return "reset"
    finally:
        writer.close()


async def _slow_client(port: int, head: bytes, drip: bytes, limit: float) -> tuple[str, float]:
    """Send `head`, then `drip` a byte every TRICKLE seconds (and nothing once it is out) until the
    service answers or closes: the outcome and the seconds that took."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(limit):
            writer.write(head)
            for k in range(len(drip)):
                writer.write(drip[k : k + 1])
                await writer.drain()
                try:
                    return _status(await asyncio.wait_for(reader.readline(), TRICKLE)), time.monotonic() - began
                except TimeoutError:
                    pass
            return _status(await reader.readline()), time.monotonic() - began
    except TimeoutError:
        return "hung", time.monotonic() - began
    except ConnectionError:
        return "reset", time.monotonic() - began
    finally:
        writer.close()


async def _paced(port: int, kind: str, variants: list[bytes], seconds: float, limit: float) -> list[str]:
    """One client sending `variants` in turn, one every PACE seconds, for `seconds`: the outcomes."""
    outcomes = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        variant = variants[len(outcomes) % len(variants)]
        outcomes.append(await _exchange(port, variant, limit, half_close=kind == "half-closed"))
        await asyncio.sleep(PACE)
    return outcomes


async def _answer(port: int, data: bytes, limit: float, hold: float = 0.0) -> tuple[str, float]:
    """Send `data` on a new connection, read nothing for `hold` seconds (through a 4 KiB receive
    window, so that the answer backs up into the service), then the whole answer: its outcome
    ("200 too large" over 3 MiB; "dropped" when the service closed before it was whole; "hung"
    past `limit`) and the seconds until it was whole."""
    began = time.monotonic()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    try:
        async with asyncio.timeout(limit):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(hold)
            status = _status(await reader.readline())
            head = b"" if status == "closed" else await reader.readuntil(b"\r\n\r\n")
            if status == "closed":
                return ("dropped" if hold else "closed"), time.monotonic() - began
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if int(status) >= 400 and b"content-type: application/json" not in head.lower():
                status += " not JSON"
            return (f"{status} too large" if length > 3 * 2**20 else status), time.monotonic() - began
    except TimeoutError:
        return "hung", time.monotonic() - began
    except (ConnectionError, asyncio.IncompleteReadError):
        return "dropped", time.monotonic() - began
    finally:
        writer.close()


def _hostile_limit() -> float:
    """Seconds a hostile read may take before it counts as hung: it may wait for every other read
    the service admits, each up to its time limit, and then for the write timeout."""
    return (MAX_READS + READ_QUEUE) * READ_TIME_LIMIT + WRITE_TIMEOUT + GRACE


def hostile_requests(port: int, side: int) -> dict[str, bytes]:
    """The hostile images of issue 18 as raw HTTP/1.1 requests, by kind (2-3 s to make at 6300)."""
    blank = cv2.imencode(".png", np.full((side, side), 255, np.uint8))[1].tobytes()
    annotate = http_request("/api/read?annotate=true", grainy_photo(side), port, "image/jpeg")
    return {
        "blank huge pages": http_request("/api/predict", blank, port, "image/png"),
        "dot-field read": http_request("/api/read", dot_field(), port, "image/png"),
        "ruled-lines read": http_request("/api/read", ruled_lines(), port, "image/png"),
        "annotated huge photo": annotate,
        "unread answers": annotate,
    }


async def _hostile(
    port: int, requests: dict[str, bytes], limit: float, write_timeout: float
) -> dict[str, list[tuple[str, float]]]:
    """The hostile images, each kind once (see EXPECTED): the reads one kind after another, as they
    share the service's read thread, and the blank pages meanwhile."""
    pages = asyncio.gather(*(_answer(port, requests["blank huge pages"], limit) for _ in range(BLANK_PAGES)))
    done = {}
    for kind, n, hold in (
        ("dot-field read", HOSTILE_READS, 0.0),
        ("ruled-lines read", HOSTILE_READS, 0.0),
        ("annotated huge photo", 1, 0.0),
        ("unread answers", UNREAD, write_timeout + 1),
    ):
        done[kind] = await asyncio.gather(*(_answer(port, requests[kind], limit, hold) for _ in range(n)))
    done["blank huge pages"] = await pages
    return done


async def _abuse(port: int, seconds: float, read_timeout: float, max_body: int, hostile: dict[str, bytes]) -> dict:
    """Every kind of abuse at once: the paced kinds for `seconds`, the slow and idle clients, a
    burst of large bodies and the hostile images until the service has answered or closed each.
    Per kind: its count, its outcomes, how many were not right, and for the slow kinds and the
    hostile images the longest time until closed or answered."""
    limit = read_timeout + GRACE
    large = http_request("/api/read", b"\x89PNG\r\n\x1a\n" + bytes(max_body - 2**20 - 8), port, "image/png")
    slow_head = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    slow_body = http_request("/api/predict", b"", port, "image/png", length=100_000)
    # a paced kind that reads photos may wait for the read thread, busy with the hostile reads
    jobs = {
        kind: _paced(port, kind, variants, seconds, _hostile_limit() if kind in PACED_READS else limit)
        for kind, variants in abuse_requests(port, max_body).items()
    }
    jobs["slow head"] = asyncio.gather(*(_slow_client(port, b"", slow_head, limit) for _ in range(SLOW)))
    jobs["slow body"] = asyncio.gather(*(_slow_client(port, slow_body, bytes(100_000), limit) for _ in range(SLOW)))
    jobs["idle connections"] = asyncio.gather(*(_slow_client(port, b"", b"", limit) for _ in range(IDLE)))
    jobs["large bodies"] = asyncio.gather(*(_exchange(port, large, limit) for _ in range(LARGE)))
    jobs["hostile"] = _hostile(port, hostile, _hostile_limit(), WRITE_TIMEOUT)
    done = dict(zip(jobs, await asyncio.gather(*jobs.values())))
    done.update(done.pop("hostile"))
    report = {}
    for kind, results in done.items():
        timed = kind in SLOW_KINDS or kind in HOSTILE_KINDS
        outcomes = [r[0] for r in results] if timed else results
        report[kind] = {
            "sent": len(outcomes),
            "outcomes": dict(Counter(outcomes).most_common()),
            "expected": sorted(EXPECTED[kind]),
            "unexpected": sum(outcome not in EXPECTED[kind] for outcome in outcomes),
        }
        if timed:
            report[kind]["max_seconds"] = max(r[1] for r in results)
    return report


def _abuse_process(port: int, seconds: float, read_timeout: float, max_body: int, hostile_side: int, results) -> None:
    """The abusive clients' process: its own CPU and event loop, so that what it does delays the
    good clients only through the service (and the machine), as other clients would. The hostile
    images are made first: made in the event loop, they stalled it for seconds."""
    hostile = hostile_requests(port, hostile_side)
    results.put("started")
    results.put(asyncio.run(_abuse(port, seconds, read_timeout, max_body, hostile)))


def bench_abuse(
    clients: int = 16,
    seconds: float = 10,
    read_timeout: float | None = None,
    model=None,
    data_dir=None,
    results: Path | None = Path("benchmarks/results/serve.json"),
    markdown: Path | None = Path("BENCHMARKS.md"),
    progress: bool = True,
    hostile_side: int = HOSTILE_SIDE,
) -> dict:
    """The 28x28 load at `clients` for `seconds` while abusive clients send EXPECTED's kinds of
    abuse; the service runs with `read_timeout` (None: its default). hostile_side: pixels across
    the blank pages and the photo to annotate (issue 18's 6300: each costs the service 0.3-0.4 GiB
    while it works on it; 2500 for a short test). Writes the "abuse" part of
    `results` and its BENCHMARKS.md section (None: don't); raises LoadTestError, after writing,
    if a good request failed, an abusive one got an outcome not in EXPECTED, the service logged a
    traceback, or it did not answer afterwards."""
    read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
    if clients < 1 or seconds <= 0 or read_timeout <= 0 or hostile_side < 100:
        raise ConfigError(
            f"clients must be at least 1, seconds and read_timeout positive and hostile_side at "
            f"least 100, got {clients}, {seconds}, {read_timeout} and {hostile_side}"
        )
    images, labels = _test_digits(data_dir)
    port = free_port()
    requests = [http_request("/api/predict", body, port) for body in request_bodies("pixels", images)]
    load_before = os.getloadavg()[0]  # other jobs on the same cores show here, and in the latencies
    process = start_service(port, model, ["--read-timeout", f"{read_timeout:g}"])
    try:
        measured = _abuse_the_service(process, port, requests, labels, clients, seconds, read_timeout, hostile_side)
    finally:
        exit_code = stop_service(process)
        log = process.output()
    good = measured["good"]
    good["target_met"] = good["requests_per_second"] >= TARGET_RPS and good["p99_ms"] <= TARGET_P99_MS
    report = {
        "command": "digitlab bench serve --abuse"
        + (f" --clients {clients}" if clients != 16 else "")
        + (f" --seconds {seconds:g}" if seconds != 10 else "")
        + (f" --read-timeout {read_timeout:g}" if read_timeout != READ_TIMEOUT else "")
        + (f" --model {model}" if model else ""),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "load_average_before": load_before,
        "clients": clients,
        "seconds": seconds,
        "read_timeout": read_timeout,
        "hostile_side": hostile_side,
        **measured,
        "service_log_lines": len(log.splitlines()),
        "service_tracebacks": log.count("Traceback"),
        "service_exit_code": exit_code,
    }
    if results is not None:
        _write_results(Path(results), report, abuse=True)
    if markdown is not None:
        publish_abuse(report, Path(markdown))
    if progress:
        print(
            f"good requests during the abuse: {good['requests_per_second']:.0f}/s, p99 {good['p99_ms']:.1f} ms, "
            f"{good['errors']} errors; peak memory {report['service_peak_rss_mb']:.0f} MiB",
            flush=True,
        )
    problems = _abuse_problems(report, log)
    if problems:
        raise LoadTestError("the service under abuse: " + "; ".join(problems))
    return report


def _abuse_the_service(process, port, requests, labels, clients, seconds, read_timeout, hostile_side) -> dict:
    """The warm-up, then the good load beside the abusive clients' process, then one more second of good
    requests: what bench_abuse reports of the running service (in its report's key order)."""
    asyncio.run(_load(port, requests, labels, min(clients, 4), WARM_UP_SECONDS))
    # One worker: its VmHWM, before and after. Several: the sum of their VmRSS now, and its peak
    # sampled meanwhile (MemorySampler), as their VmHWMs peak at different moments.
    several = len(worker_pids(process.pid)) > 1
    rss_before = workers_memory_mb(process.pid, "VmRSS" if several else "VmHWM")
    context = multiprocessing.get_context("spawn")  # not fork: this process holds torch's threads
    queue = context.Queue()
    abusers = context.Process(
        target=_abuse_process, args=(port, seconds, read_timeout, MAX_BODY, hostile_side, queue), daemon=True
    )
    abusers.start()
    try:
        with MemorySampler(process.pid) as sampled:
            queue.get(timeout=START_TIMEOUT)  # "started"
            good = asyncio.run(_load(port, requests, labels, clients, seconds))
            abuse = queue.get(timeout=read_timeout + GRACE + 60 + 4 * _hostile_limit())  # 4 kinds of reads
    except Exception as err:  # noqa: BLE001 -- queue.Empty, or anything the clients hit
        raise LoadTestError(
            f"the abusive clients did not report (exit code {abusers.exitcode}): {type(err).__name__}: {err}"
        ) from err
    finally:
        abusers.join(10)
        if abusers.is_alive():
            abusers.kill()
    rss_peak = workers_memory_mb(process.pid)
    alive = process.poll() is None
    after = asyncio.run(_load(port, requests, labels, 1, 1.0)) if alive else None
    return {
        "good": good,
        "abuse": abuse,
        "service_rss_before_mb": rss_before["sum"],
        "service_peak_rss_mb": max(sampled.peak_mb, rss_before["sum"]) if several else rss_peak["sum"],
        "workers_peak_rss_mb": rss_peak["workers"],  # each one's VmHWM
        "alive_after": alive,
        "after": None if after is None else {"requests": after["requests"], "errors": after["errors"]},
    }


def _abuse_problems(report: dict, log: str) -> list[str]:
    """What makes the run fail: failed good requests, unexpected outcomes, a silent service, tracebacks."""
    good, after = report["good"], report["after"]
    problems = ([f"{good['errors']} good requests failed: {good['error_samples']}"] if good["errors"] else []) + [
        f"{kind}: {run['outcomes']}, expected only {run['expected']}"
        for kind, run in report["abuse"].items()
        if run["unexpected"]
    ]
    if not report["alive_after"] or after is None or after["errors"] or after["requests"] == 0:
        problems.append(
            f"the service did not answer after the abuse (alive: {report['alive_after']}, "
            f"exit code {report['service_exit_code']})"
        )
    if report["service_tracebacks"]:
        problems.append(f"the service logged {report['service_tracebacks']} tracebacks:\n{log[-3000:]}")
    return problems


def _abuse_memory(report: dict) -> str:
    workers = report.get("workers_peak_rss_mb", [None])
    if len(workers) == 1:
        return (
            f"The service's peak memory (VmHWM): {report['service_rss_before_mb']:.0f} MiB after the warm-up, "
            f"{report['service_peak_rss_mb']:.0f} MiB after the abuse."
        )
    return (
        f"The service's memory, its {len(workers)} workers' resident memory summed: "
        f"{report['service_rss_before_mb']:.0f} MiB after the warm-up, at most "
        f"{report['service_peak_rss_mb']:.0f} MiB during the abuse (sampled every 50 ms); each worker's "
        f"own peak (VmHWM): {', '.join(f'{mb:.0f}' for mb in workers)} MiB."
    )


def publish_abuse(report: dict, markdown: Path) -> None:
    lines = [
        ABUSE_START,
        "| abuse | sent | outcomes | right | longest until closed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, run in report["abuse"].items():
        outcomes = ", ".join(f"{outcome} ×{n}" for outcome, n in run["outcomes"].items())
        right = "yes" if not run["unexpected"] else f"NO: {run['unexpected']} not in {', '.join(run['expected'])}"
        closed = f"{run['max_seconds']:.1f} s" if "max_seconds" in run else ""
        lines.append(f"| {kind} | {run['sent']:,} | {outcomes} | {right} | {closed} |")
    good, after = report["good"], report["after"]
    side = report.get("hostile_side", HOSTILE_SIDE)
    lines += [
        "",
        f"Good requests meanwhile (`/api/predict` JSON 28x28 pixels, {report['clients']} clients, "
        f"{report['seconds']:g} s): {good['requests']:,} requests, {good['errors']} errors, "
        f"{good['requests_per_second']:.0f} requests/s, p50 {good['p50_ms']:.1f} ms, p90 "
        f"{good['p90_ms']:.1f} ms, p99 {good['p99_ms']:.1f} ms, max {good['max_ms']:.1f} ms; the target "
        f"(>= {TARGET_RPS} requests/s with p99 <= {TARGET_P99_MS} ms) "
        f"{'met' if good['target_met'] else 'NOT met'}.",
        "",
        _abuse_memory(report) + " Afterwards it was "
        f"{'alive' if report['alive_after'] else 'DEAD'} and answered "
        f"{after['requests'] if after else 0:,} requests in 1 s with {after['errors'] if after else '—'} "
        f"errors; its log: {report['service_log_lines']:,} lines, {report['service_tracebacks']} "
        f"tracebacks; it exited with {report['service_exit_code']} on SIGTERM.",
        "",
        f"`{report['command']}` on {report['date']}: {report['machine']}, torch {report['torch']}, "
        f"its 1-minute load average {report['load_average_before']:.1f} before the run (other jobs); "
        f"service, good clients and abusive clients (a process of their own) on the same machine; "
        f"the service's read timeout {report['read_timeout']:g} s, the paced kinds one request every "
        f"{PACE:g} s each on a new connection, {SLOW} slow heads and {SLOW} slow bodies at a byte every "
        f"{TRICKLE:g} s, {IDLE} idle connections and {LARGE} large bodies at once; the hostile images "
        f"once each from the start: {BLANK_PAGES} blank {side}x{side} PNGs to `/api/predict` at once, and "
        f"one kind after another to `/api/read`: {HOSTILE_READS} PNGs of 62,500 dots, {HOSTILE_READS} of "
        f"330 ruled lines, the annotation of a grainy {side}x{side} JPEG, and {UNREAD} clients asking for "
        f"it that read nothing for the service's write timeout and a second more.",
        ABUSE_END,
    ]
    write_section(markdown, ABUSE_START, ABUSE_END, "\n".join(lines), ABUSE_HEADING + "\n\n")
