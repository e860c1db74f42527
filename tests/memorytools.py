"""Memory of a live process, for the tests that bound what an input may cost."""

from __future__ import annotations

from pathlib import Path


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
