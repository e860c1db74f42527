"""Helpers for the tests that run `digitlab serve` as its own process, as a user starts it: a free
loopback port, the service started and stopped, and raw HTTP/1.1 requests to send it."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

START_TIMEOUT = 60  # seconds for the service to answer /healthz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service(subprocess.Popen):
    """`digitlab serve` as a child process. What it prints goes to a temporary file, not a pipe:
    a pipe nobody reads fills at 64 KiB and then blocks the service at its next log line, and
    uvicorn logs a warning for each malformed request."""

    def __init__(self, command: list[str]):
        self.log = tempfile.TemporaryFile()
        super().__init__(command, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def start_service(port: int, extra: list[str] | None = None) -> Service:
    """`python -m digitlab serve` (the bundled model; its default workers, one per core) on
    127.0.0.1:port with `extra` options, returned once /healthz answers."""
    command = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--log-level", "warning"]
    command += extra or []
    process = Service(command)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`{' '.join(command)}` exited with {process.returncode}:\n{process.output()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    stop_service(process)
    raise RuntimeError(f"the service did not answer /healthz on port {port} within {START_TIMEOUT} s")


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


def http_request(path: str, body: bytes, port: int, content_type: str | None = "application/json") -> bytes:
    """A POST as raw HTTP/1.1, to write to a socket."""
    kind = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{kind}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
