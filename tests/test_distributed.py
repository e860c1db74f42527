"""Multi-process training under torchrun, for real: gloo processes on this machine's CPU.

Each test starts real `torchrun ... -m digitlab train` jobs on loopback and reads the run
directories they write.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobtools import job_environment, run_dirs
from servicetools import free_port

TRAIN = ["fast", "--limit", "12000", "--epochs", "3", "--quiet", "--device", "cpu"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(*args) -> list[str]:
    return [*TORCHRUN, *args, "-m", "digitlab", "train"]


def only_run(out: Path) -> Path:
    runs = run_dirs(out)
    assert len(runs) == 1, f"expected one run directory in {out}, found {runs}"
    return runs[0]


def history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


def accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["accuracy"]


def rank_process(rank: int, marker: str, timeout: float = 120) -> int:
    """The pid of the training process with RANK=rank whose command line contains `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in cmdline and "torch.distributed.run" not in cmdline and f"RANK={rank}".encode() in env:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no process with RANK={rank} running {marker!r}")


def wait_for(path: Path, job: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert job.poll() is None, f"the job ended (exit {job.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


def test_two_processes_match_one_and_resume_after_a_rank_dies(shared_data_dir, tmp_path):
    env = job_environment(shared_data_dir)
    one, two, broken = tmp_path / "one", tmp_path / "two", tmp_path / "broken"
    subprocess.run(
        [sys.executable, "-m", "digitlab", "train", *TRAIN, "--out", str(one)], env=env, check=True, timeout=600
    )
    subprocess.run(
        torchrun("--standalone", "--nproc-per-node", "2") + [*TRAIN, "--out", str(two)],
        env=env,
        check=True,
        timeout=600,
    )
    single, double = only_run(one), only_run(two)  # rank 1 wrote no run directory of its own

    config = json.loads((double / "config.json").read_text())
    assert config["train"]["processes"] == 2 and config["train"]["backend"] == "gloo"
    # Same global batch, same shuffled order: the same optimisation, up to each process
    # normalising (BatchNorm) over its half of the batch and drawing its own dropout/augmentation.
    assert abs(accuracy(single) - accuracy(double)) <= 0.003
    for a, b in zip(history(single), history(double), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05), (a, b)
        assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=0.005), (a, b)

    # The same job again; rank 1 is killed once epoch 1 is checkpointed. torchrun stops the
    # job (no hang) and names the rank; --resume under torchrun then finishes it, exactly.
    job = subprocess.Popen(
        torchrun("--standalone", "--nproc-per-node", "2") + [*TRAIN, "--out", str(broken)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        victim = rank_process(1, f"--out {broken}")
        wait_for(broken, job)
        while not run_dirs(broken):  # renamed into place
            assert job.poll() is None
            time.sleep(0.01)
        wait_for(only_run(broken) / "checkpoint" / "latest.json", job)
        os.kill(victim, signal.SIGKILL)
        output, _ = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode != 0
    assert "SIGKILL" in output and "rank      : 1" in output, output[-3000:]
    run = only_run(broken)
    assert not (run / "metrics.json").exists()
    subprocess.run(
        torchrun("--standalone", "--nproc-per-node", "2") + ["--resume", str(run), "--quiet"],
        env=env,
        check=True,
        timeout=600,
    )
    for a, b in zip(history(double), history(run), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["val_accuracy"] == a["val_accuracy"], (a, b)
    assert accuracy(run) == accuracy(double)


def test_two_machines_on_loopback_and_a_lost_peer_is_a_clear_error(shared_data_dir, tmp_path):
    """torchrun's multi-node flags, two 'machines' of one process each on 127.0.0.1. Node 1's
    process is killed mid-training: node 0's process, waiting for it in an all-reduce, stops
    with digitlab's own error (exit 2) within seconds instead of hanging."""
    env = job_environment(shared_data_dir)
    port = str(free_port())
    nodes = []
    for node in (0, 1):
        args = [
            "--nnodes",
            "2",
            "--node-rank",
            str(node),
            "--nproc-per-node",
            "1",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            port,
        ]
        out = tmp_path / f"node{node}"
        nodes.append(
            subprocess.Popen(
                torchrun(*args) + ["fast", "--epochs", "3", "--quiet", "--out", str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        victim = rank_process(1, f"--out {tmp_path / 'node1'}")
        wait_for(tmp_path / "node0", nodes[0])  # rank 0 has made its run directory: training is under way
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        output, _ = nodes[0].communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        for job in nodes:
            job.kill()
            job.communicate()
    assert nodes[0].returncode != 0
    assert "digitlab: error: process 0 of 2 lost contact with the others" in output, output[-3000:]
    assert "exitcode  : 2" in output
    assert waited < 60
    assert not (tmp_path / "node1").exists()  # only rank 0 ever writes
