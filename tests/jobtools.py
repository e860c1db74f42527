"""Helpers shared by the tests that start real `digitlab train` processes (crash, distributed)."""

from __future__ import annotations

import os
from pathlib import Path


def job_environment(shared_data_dir) -> dict:
    """The environment for a training subprocess: the shared data, unbuffered output."""
    return {**os.environ, "DIGITLAB_DATA": str(shared_data_dir), "PYTHONUNBUFFERED": "1"}


def run_dirs(out: Path) -> list[Path]:
    """The run directories in an --out folder; a run still being created (a hidden folder, see
    train.create_run_dir) is not one yet, and a folder not made yet holds none."""
    return [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
