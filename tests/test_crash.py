"""Training survives being killed at any instant, and a failing disk loses nothing.

Real `digitlab train` processes are SIGKILLed at random moments -- while loading, during an
epoch, in the middle of writing a checkpoint -- and resumed each time; after every kill every
file of the run directory must be whole, and the finished run must match one never
interrupted. A full disk and a read-only folder are real tmpfs mounts in a user namespace
(`unshare`), so the errors are the kernel's own ENOSPC and EROFS.
"""

import csv
import json
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from safetensors.torch import load_file

from digitlab.checkpoint import load_checkpoint
from jobtools import job_environment, run_dirs

EPOCHS = 24
TRAIN = ["fast", "--limit", "2000", "--val-split", "0.1", "--epochs", str(EPOCHS), "--quiet", "--device", "cpu"]
KILLS = 22


def train_command(out: Path) -> list[str]:
    runs = run_dirs(out)
    assert len(runs) <= 1, runs
    if runs:
        return [sys.executable, "-m", "digitlab", "train", "--resume", str(runs[0]), "--quiet"]
    return [sys.executable, "-m", "digitlab", "train", *TRAIN, "--out", str(out)]


def hidden_entries(*folders: Path) -> list[Path]:
    """Temporary files and folders of writes in progress (or cut short)."""
    try:
        return [p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.name.startswith(".")]
    except FileNotFoundError:  # renamed away while listed
        return [Path("(in flux)")]


def checkpoint_stamp(run: Path) -> int:
    try:
        return (run / "checkpoint" / "latest.json").stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def check_whole(run: Path) -> int:
    """Every visible file of the run directory is complete and consistent; returns the epochs
    its latest checkpoint holds (0 if none)."""
    config = json.loads((run / "config.json").read_text())  # a run directory appears with its config
    assert config["recipe"]["name"] == "fast"
    for path in run.iterdir():
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".png":
            assert cv2.imread(str(path)) is not None, f"{path} is not a whole PNG"
        elif path.suffix == ".txt":
            assert path.read_text().endswith("\n"), f"{path} is cut short"
    done = 0
    if (run / "checkpoint" / "latest.json").exists():
        checkpoint = load_checkpoint(run)
        done = checkpoint["state"]["epoch"]
        assert [row["epoch"] for row in checkpoint["state"]["history"]] == list(range(1, done + 1))
    if (run / "history.json").exists():
        rows = json.loads((run / "history.json").read_text())
        assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1))
        assert done - 1 <= len(rows) <= done  # written just after the checkpoint
    if (run / "history.csv").exists():  # written whole just after history.json: at most one row behind it
        with open(run / "history.csv", newline="") as file:
            rows_csv = list(csv.DictReader(file))
        assert [int(row["epoch"]) for row in rows_csv] == list(range(1, len(rows_csv) + 1))
        assert done - 1 <= len(rows_csv) <= done
    if (run / "metrics.json").exists():
        assert done == EPOCHS
    return done


def training_started(out: Path, since_ns: int) -> bool:
    """This attempt has written its config.json: data loaded, training about to begin."""
    try:
        (run,) = run_dirs(out)
        return (run / "config.json").stat().st_mtime_ns >= since_ns
    except (ValueError, FileNotFoundError):
        return False


def test_training_killed_at_20_random_moments_resumes_to_the_same_result(shared_data_dir, tmp_path):
    env = job_environment(shared_data_dir)
    whole_out, killed_out = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(train_command(whole_out), env=env, check=True, timeout=600)
    (whole,) = whole_out.iterdir()

    rng = random.Random(20261121)
    moments = {"starting": 0, "during an epoch": 0, "writing a checkpoint": 0}
    cut_mid_write = 0
    epochs_seen = []
    for kill in range(KILLS):
        kind = ("starting", "during an epoch", "writing a checkpoint", "during an epoch", "writing a checkpoint")[
            kill % 5
        ]
        begun = time.time_ns()
        job = subprocess.Popen(
            train_command(killed_out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if kind == "starting":  # importing, loading the data
            time.sleep(rng.uniform(0, 2.5))
        else:
            while not training_started(killed_out, begun) and job.poll() is None:
                time.sleep(0.002)
            (run,) = run_dirs(killed_out)
            if kind == "during an epoch":  # after 0-2 more checkpoints, at a random instant of an epoch
                for _ in range(rng.randint(0, 2)):
                    stamp = checkpoint_stamp(run)
                    while checkpoint_stamp(run) == stamp and job.poll() is None:
                        time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.3))
            else:  # as soon as the next checkpoint's temporary folder shows up, within its writes
                while not hidden_entries(run / "checkpoint") and job.poll() is None:
                    time.sleep(0.0002)
                time.sleep(rng.uniform(0, 0.003))
        assert job.poll() is None, f"the run finished after only {kill} kills: make it longer ({job.stderr.read()})"
        job.send_signal(signal.SIGKILL)
        job.communicate()
        moments[kind] += 1
        runs = run_dirs(killed_out)
        if runs:
            cut_mid_write += bool(hidden_entries(runs[0], runs[0] / "checkpoint"))
            epochs_seen.append(check_whole(runs[0]))

    final = subprocess.run(train_command(killed_out), env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    (run,) = run_dirs(killed_out)
    assert check_whole(run) == EPOCHS
    assert hidden_entries(run, run / "checkpoint") == []  # resume cleared what the kills cut short
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [f"epoch-{EPOCHS:04d}", "latest.json"]
    assert len(json.loads((run / "history.json").read_text())) == EPOCHS

    print(f"kills: {moments}; {cut_mid_write} left a write unfinished; checkpointed epochs after each: {epochs_seen}")
    assert sum(moments.values()) >= 20 and cut_mid_write >= 4
    assert epochs_seen[-1] < EPOCHS  # the kills really interrupted the training
    a, b = (json.loads((r / "metrics.json").read_text())["accuracy"] for r in (whole, run))
    print(f"test accuracy: uninterrupted {a:.4f}, killed {sum(moments.values())} times {b:.4f}")
    assert abs(a - b) <= 0.003, (a, b)  # resumed from the exact RNG state: in practice identical


# --- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_prints_the_resume_command_and_that_command_continues_the_run(shared_data_dir, tmp_path):
    """SIGINT, as Ctrl-C sends it, to a real `digitlab train` after its first checkpoint: it stops
    with exit 130 and prints the run directory and the command to continue; that command, run as
    printed, continues from the next epoch and finishes the run."""
    env, out = job_environment(shared_data_dir), tmp_path / "runs"
    command = ["train", "fast", "--limit", "2000", "--val-split", "0.1", "--epochs", str(EPOCHS), "--device", "cpu"]
    job = subprocess.Popen(
        [sys.executable, "-m", "digitlab", *command, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as a terminal starts it: a suite run in the background (`pytest &` from a script) ignores
        # SIGINT, and a child would inherit that and never see the Ctrl-C this test sends
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    while not (run_dirs(out) and (run_dirs(out)[0] / "checkpoint" / "latest.json").exists()) and job.poll() is None:
        time.sleep(0.01)
    time.sleep(0.1)
    assert job.poll() is None, "the run finished before Ctrl-C: make it longer"
    job.send_signal(signal.SIGINT)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr
    (run,) = run_dirs(out)
    saved = load_checkpoint(run)["state"]["epoch"]
    lines = [line.split("\r")[-1] for line in stderr.splitlines()]
    assert f"interrupted: the run directory {run}: " in stderr and "Traceback" not in stderr
    span = "epoch 1 is" if saved == 1 else f"epochs 1-{saved} are"
    assert f"{span} in its checkpoint, of {EPOCHS}; resuming continues from epoch {saved + 1}" in stderr
    (printed,) = [line.removeprefix("to continue: ") for line in lines if line.startswith("to continue: ")]
    assert printed == f"digitlab train --resume {shlex.quote(str(run))} --device cpu"
    assert lines[-1] == "digitlab: interrupted" and stdout == ""

    words = shlex.split(printed)
    assert words[0] == "digitlab"
    resumed = subprocess.run(
        [sys.executable, "-m", "digitlab", *words[1:]], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {span} in its checkpoint; continuing from epoch {saved + 1} of {EPOCHS}" in resumed.stderr
    assert f"epoch {saved + 1}/{EPOCHS}: loss" in resumed.stderr and f"epoch 1/{EPOCHS}: loss" not in resumed.stderr
    assert check_whole(run) == EPOCHS and (run / "metrics.json").is_file()
    assert resumed.stdout.splitlines()[-1] == f"run directory: {run}"


# --- a full disk and a read-only folder --------------------------------------------------------

UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]


def in_private_tmpfs(script: str, mount: Path, size_kb: int, env: dict) -> subprocess.CompletedProcess:
    """Run a bash `script` in a new user+mount namespace where `mount` is a tmpfs of size_kb."""
    mount.mkdir()
    body = f"set -u; mount -t tmpfs -o size={size_kb}k tmpfs {mount} || exit 99; {script}"
    result = subprocess.run([*UNSHARE, "bash", "-c", body], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 99, f"could not mount a tmpfs in a user namespace: {result.stderr}"
    return result


def last_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-3:])


@pytest.fixture
def one_epoch_run(shared_data_dir, tmp_path) -> Path:
    """A finished 1-epoch run of `fast` on a subset: the state a failing disk must not harm."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "digitlab",
            "train",
            "fast",
            "--limit",
            "2000",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "seed"),
        ],
        env=job_environment(shared_data_dir),
        check=True,
        timeout=600,
    )
    (run,) = (tmp_path / "seed").iterdir()
    shutil.rmtree(run / "checkpoint")  # keep the config, retrain epoch 1 on the small disk
    for name in ("model.safetensors", "history.json", "metrics.json"):
        (run / name).unlink()
    return run


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(shared_data_dir, tmp_path, one_epoch_run):
    disk, copy = tmp_path / "disk", tmp_path / "after"
    python = f"{sys.executable} -m digitlab train --quiet --resume {disk}/run"
    # Epoch 1 trains and checkpoints; then a filler leaves 64 KiB free, and epoch 2's checkpoint
    # (~400 KiB) cannot be written.
    script = (
        f"cp -r {one_epoch_run} {disk}/run && {python} --epochs 1 > /dev/null 2>&1; "
        f"fill=$(( $(df -k --output=avail {disk} | tail -1) - 64 )); "
        f"head -c ${{fill}}k /dev/zero > {disk}/filler 2>/dev/null; "
        f'{python} --epochs 3; echo "exit $?"; cp -r {disk}/run {copy}'
    )
    result = in_private_tmpfs(script, disk, 2048, job_environment(shared_data_dir))
    assert "exit 2" in result.stdout, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "the previous checkpoint is intact" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    checkpoint = load_checkpoint(copy)
    assert checkpoint["state"]["epoch"] == 1
    assert [p.name for p in (copy / "checkpoint").iterdir() if p.name.startswith(".")] == []
    assert len(json.loads((copy / "history.json").read_text())) == 1


def test_a_read_only_run_directory_is_a_clear_error_and_keeps_its_checkpoint(shared_data_dir, tmp_path, one_epoch_run):
    disk, copy = tmp_path / "disk", tmp_path / "after"
    python = f"{sys.executable} -m digitlab train --quiet --resume {disk}/run"
    script = (
        f"cp -r {one_epoch_run} {disk}/run && {python} --epochs 1 > /dev/null 2>&1; "
        f"mount -o remount,ro {disk} || exit 98; "
        f'{python} --epochs 3; echo "exit $?"; cp -r {disk}/run {copy}'
    )
    result = in_private_tmpfs(script, disk, 8192, job_environment(shared_data_dir))
    assert "exit 2" in result.stdout, result.stdout + result.stderr
    assert "digitlab: error: could not write" in result.stderr and "Read-only file system" in result.stderr, last_lines(
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert load_checkpoint(copy)["state"]["epoch"] == 1
    assert (copy / "metrics.json").is_file()  # the finished epoch-1 run is untouched
