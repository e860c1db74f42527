"""Writing files whole or not at all: a temporary name in the same folder, then a rename.

Kept free of torch so that every stage (plots included) can use it cheaply. Temporary names
start with "." and end with TEMP_SUFFIX (files) or are hidden folders, so a process killed
mid-write leaves only hidden leftovers that `remove_temporaries` can recognise and clear.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import WriteError

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it) and restored at once
os.umask(_UMASK)


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
