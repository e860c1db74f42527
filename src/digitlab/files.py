"""Files written whole or not at all, and JSON and text read and written safely.

Writes go to a temporary name in the same folder, then a rename. Temporary names start with "."
and end with TEMP_SUFFIX (files) or are hidden folders, so a process killed mid-write leaves only
hidden leftovers that `remove_temporaries` can recognise and clear. JSON is read only from regular
files and within bounds (`read_json`, `loads_json`): every file a user hands over is untrusted.

Kept free of torch so that every stage (plots included) can use it cheaply.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, WriteError

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it) and restored at once
os.umask(_UMASK)
# A run's JSON files are small: config.json ~2 KB, and the largest digitlab writes, the results of
# `bench read`, 71 KB. 8 MiB is a hundred times that, and parses in 1.6 s (2 busy EPYC cores).
MAX_JSON_BYTES = 8 << 20
MAX_JSON_DEPTH = 32  # the deepest digitlab writes is 7 (speed.json); json.loads itself gives up near 1000
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string literal, escapes included
OPENING, CLOSING = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def atomic_write(path: Path, write) -> Path:
    """Call write(tmp_path) for a temporary file beside `path`, fsync it, then rename it over `path`.

    Any OSError (a full disk, a read-only folder, no permission) becomes a WriteError naming
    the file; `path` then still holds what it held before.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files 0600; give them the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(f"could not write {path}: {err.strerror or err}") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            Path(tmp).unlink(missing_ok=True)
    return path


def output_file(path: str | os.PathLike, suffixes: tuple[str, ...], kind: str) -> Path:
    """`path` as a file to write, checked before any work is done -- the one rule for every file
    digitlab writes where a user names it (export's ONNX file, read's annotation, a benchmark's
    JSON and Markdown): its folder must exist already (a file's folder is never created: a typo'd
    folder would appear wherever the typo points, the filesystem's root included), it is not a
    folder, and it ends with one of `suffixes` (case aside), the formats digitlab writes `kind`
    ("an annotation", as the message says it) in.
    WriteError (exit 2) otherwise, naming what to do; nothing is created here."""
    path = Path(path)
    if path.is_dir():
        example = path / f"out{suffixes[0]}"
        raise WriteError(f"cannot write {path}: it is a folder; name the file to write in it, e.g. {example}")
    if path.suffix.lower() not in suffixes:
        ending = f"ends with {path.suffix!r}" if path.suffix else "has no extension"
        raise WriteError(f"cannot write {path}: it {ending}; digitlab writes {kind} as {_choices(suffixes)}")
    folder = path.parent
    if not folder.is_dir():
        existing = _existing(folder)
        if existing != folder and existing.is_dir():
            raise WriteError(
                f"cannot write {path}: the folder {folder} does not exist (create it first: digitlab "
                "creates no folder for a file you name)"
            )
        raise WriteError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write {path}: the folder {folder} is not writable")
    return path


def output_folder(path: str | os.PathLike) -> Path:
    """`path` as a folder to write into, checked before any work: the folders a user names for
    output (train's and evaluate's --out, predict's --show-input, bench's --out and --failures)
    are what was asked for, so a missing one is created, with its parents, when the first file
    is written there -- unless something in the way is a file, or the nearest existing folder
    is not writable: WriteError (exit 2) then. Nothing is created here."""
    path = Path(path)
    existing = _existing(path)
    if not existing.is_dir():
        where = "it is a file" if existing == path else f"{existing} is a file"
        raise WriteError(f"cannot write into the folder {path}: {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        missing = "" if existing == path else f" (to create {path} in it)"
        raise WriteError(f"cannot write into the folder {path}: {existing} is not writable{missing}")
    return path


def _existing(path: Path) -> Path:
    """`path` itself or the nearest of its parents that exists (as anything, a link's target included)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor or "."))


def _choices(suffixes: tuple[str, ...]) -> str:
    names = [repr(s) for s in suffixes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def free_name(parent: Path, stem: str) -> Path:
    """parent/stem, or parent/stem-2, stem-3, ...: the first that does not exist (two run folders
    stamped in the same second)."""
    path, suffix = parent / stem, 1
    while path.exists():
        suffix += 1
        path = parent / f"{stem}-{suffix}"
    return path


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new hidden folder in `parent` with the usual permissions (mkdtemp makes it 0700)."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as err:
        raise WriteError(f"could not create a folder in {parent}: {err.strerror or err}") from err
    return tmp


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the '.NAME.XXXX.tmp' leftovers of atomic writes that a killed process never
    finished, directly in `folder`: regular files only (atomic_write makes no links, so a link of
    such a name is not its own, and is left alone). Returns what went."""
    removed = []
    if Path(folder).is_dir():
        for entry in Path(folder).iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and _is_regular_file(entry):
                try:
                    entry.unlink(missing_ok=True)
                except OSError:  # a read-only folder: the next write there fails with a clear error anyway
                    continue
                removed.append(entry)
    return removed


def _is_regular_file(path: Path) -> bool:
    """A regular file itself, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


# --- JSON and text ----------------------------------------------------------------------------------


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
    would raise RecursionError near 1000 levels), an integer over Python's 4300-digit limit
    (ValueError), or NaN / Infinity, which are not JSON and which json.loads takes by default
    (history.json of a run whose loss diverged holds them: its readers pass allow_nan=True).
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
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    torch = sys.modules.get("torch")  # not imported here: a value can only be a tensor once torch is loaded
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
