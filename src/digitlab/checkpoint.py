"""Run directories on disk: safetensors weights beside JSON, written atomically.

Nothing users load is ever unpickled: weights and optimiser tensors are safetensors,
everything else is JSON. Every file is written to a temporary name in the same folder
and renamed only when whole, so a crash never leaves a half-written file.

A run directory (DESIGN.md):
    config.json         recipe, model name and arguments, dataset, normalisation, version
    model.safetensors   the latest weights
    history.json        one row per epoch
    metrics.json, report.txt, *.png   written by evaluation
    checkpoint/latest.json  -> checkpoint/epoch-NNNN/{model,optimizer}.safetensors + state.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, WriteError
from .files import atomic_write, make_temp_dir, remove_temporaries

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
HISTORY = "history.json"
CHECKPOINTS = "checkpoint"
METRICS = "metrics.json"  # written last by evaluation: a run directory with it is complete
# A run's JSON files are small: config.json ~2 KB, and the largest digitlab writes, the results of
# `bench read`, 71 KB. 8 MiB is a hundred times that, and parses in 1.6 s (2 busy EPYC cores).
MAX_JSON_BYTES = 8 << 20
MAX_JSON_DEPTH = 32  # the deepest digitlab writes is 7 (speed.json); json.loads itself gives up near 1000
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string literal, escapes included
OPENING, CLOSING = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path, *, allow_nan: bool = False) -> Any:
    """The JSON in the regular file `path`, parsed by `loads_json`.

    Refused with a CheckpointError when it is missing, is not a regular file (a folder, a FIFO,
    a device, or a link to one: /dev/zero would be read until memory ran out), is larger than
    MAX_JSON_BYTES, or is not UTF-8 text that `loads_json` accepts.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO to read waits for a writer, forever; a regular file ignores the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} is missing") from err
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{path} is {_file_kind(mode)}, not a JSON file")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_JSON_BYTES + 1)  # one byte more than allowed tells a longer file
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    finally:
        os.close(fd)
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is larger than the {MAX_JSON_BYTES >> 20} MiB a digitlab JSON file can be")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    return loads_json(text, str(path), allow_nan=allow_nan)


def loads_json(text: str, name: str, *, allow_nan: bool = False) -> Any:
    """JSON text already in memory (an ONNX file's metadata, say), parsed as `read_json` parses a file.

    Refused with a CheckpointError naming `name`: longer than MAX_JSON_BYTES, not JSON, nested
    deeper than MAX_JSON_DEPTH (checked first: json.loads, and whatever later walks the value,
    would raise RecursionError near 1000 levels), an integer over Python's 4300-digit limit (ValueError), or NaN / Infinity, which are
    not JSON and which json.loads takes by default (history.json of a run whose loss diverged
    holds them: its readers pass allow_nan=True).
    """
    if len(text) > MAX_JSON_BYTES:
        raise CheckpointError(f"{name} is larger than the {MAX_JSON_BYTES >> 20} MiB a digitlab JSON text can be")
    if _depth(text) > MAX_JSON_DEPTH:  # before json.loads, whose recursion is Python's
        raise CheckpointError(f"{name} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=None if allow_nan else _refuse_constant)
    except RecursionError as err:  # cannot happen within MAX_JSON_DEPTH; kept as a last guard
        raise CheckpointError(f"{name} is not valid JSON: nested too deeply") from err
    except ValueError as err:  # JSONDecodeError; an integer past sys.get_int_max_str_digits(); NaN
        raise CheckpointError(f"{name} is not valid JSON: {err}") from err


def _refuse_constant(word: str) -> None:
    raise ValueError(f"{word} is not a JSON number")


def _depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text, counted on its brackets outside strings, in C
    (re and numpy): 0.5 s for 7.7 MB holding 300,000 strings, half what json.loads takes for it
    (2 busy EPYC cores), where walking the parsed value in Python took 2.3 s."""
    codes = np.frombuffer(JSON_STRING.sub("", text).encode(), np.uint8)
    steps = np.isin(codes, OPENING).astype(np.int32) - np.isin(codes, CLOSING)
    return int(np.cumsum(steps).max(initial=0))


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp))
        except SafetensorError as err:  # how safetensors reports a failed write (a full disk, say)
            raise OSError(str(err)) from err

    return atomic_write(path, write)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err


# --- optimiser state: tensors to safetensors, the rest to JSON -------------------------


def optimizer_to_files(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer.state_dict() into flat tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


# --- per-epoch checkpoints -------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    rng: dict[str, torch.Tensor],
    state: dict,
) -> Path:
    """Write checkpoint/epoch-NNNN/ whole, then point checkpoint/latest.json at it.

    The folder is built under a temporary name and renamed when complete; latest.json is
    replaced atomically afterwards, so at every instant it names a complete checkpoint.
    Older epoch folders are removed only after that.
    """
    root = Path(run_dir) / CHECKPOINTS
    name = f"epoch-{epoch:04d}"
    tmp = make_temp_dir(root, name)
    try:
        opt_tensors, opt_meta = optimizer_to_files(optimizer_state)
        save_weights(tmp / "model.safetensors", model_state)
        save_weights(tmp / "optimizer.safetensors", opt_tensors)
        save_weights(tmp / "rng.safetensors", rng)
        write_json(tmp / "state.json", {**state, "epoch": epoch, "optimizer": opt_meta})
        final = root / name
        if final.exists():  # a rerun of the same epoch after a crash past this point
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json(root / "latest.json", {"epoch": epoch, "folder": name})
    except (OSError, WriteError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"could not save the checkpoint of epoch {epoch} in {root}: {_reason(err)}; "
                         f"the previous checkpoint is intact, and --resume {run_dir} continues from it") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in root.iterdir():
        if old.name != name and old.name != "latest.json":
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    return final


def _reason(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, WriteError) and isinstance(err.__cause__, OSError) else err
    return cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINTS / "latest.json").is_file()


def remove_partial_writes(run_dir: Path) -> None:
    """Clear what a killed process left half-written in a run directory: hidden temporary
    files, and checkpoint folders never renamed into place. Complete files are untouched."""
    remove_temporaries(Path(run_dir))
    root = Path(run_dir) / CHECKPOINTS
    remove_temporaries(root)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".epoch-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def load_checkpoint(run_dir: Path) -> dict:
    """The latest complete checkpoint: model, optimizer, rng tensors and the JSON state."""
    root = Path(run_dir) / CHECKPOINTS
    if not (root / "latest.json").is_file():
        raise CheckpointError(f"{run_dir} has no complete checkpoint to resume from (it stopped before its first "
                              f"epoch ended, or is not a run directory): train it again instead")
    latest = read_json(root / "latest.json")
    folder = root / str(latest.get("folder", ""))
    if not folder.is_dir() or "/" in latest.get("folder", "/"):
        raise CheckpointError(f"{root / 'latest.json'} names a checkpoint that does not exist: {folder}")
    state = read_json(folder / "state.json")
    return {
        "model": load_weights(folder / "model.safetensors"),
        "optimizer": optimizer_from_files(load_weights(folder / "optimizer.safetensors"), state.pop("optimizer")),
        "rng": load_weights(folder / "rng.safetensors"),
        "state": state,
    }
