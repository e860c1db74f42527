"""Where dataset files live, and fetching the missing ones from their mirrors.

Data directory: an explicit `data_dir` (the CLI's `--data-dir`), else the environment variable
DIGITLAB_DATA, else ~/.cache/digitlab. A dataset's files are `<data_dir>/<dataset>/<upstream name>`.
A download goes to a temporary name in the same folder, is checked against its published
checksum, and only then renamed: the cache never holds a partial or wrong file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm import tqdm

from ..errors import ChecksumError, DataError, DatasetNotFoundError

DATA_ENV = "DIGITLAB_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/digitlab")
TIMEOUT_S = 30  # per connection attempt and per read: a dead mirror is given up on, not waited for
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A published file: its upstream name, its checksums, and base URLs to try in order."""

    filename: str  # a plain name, or a path of plain names under the dataset's folder ("annotations/x.json")
    mirrors: tuple[str, ...]  # base URLs ending in "/", the original source first
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        # The name becomes a path inside the dataset's folder: plain names, "/"-separated, none "." or "..".
        parts = self.filename.split("/")
        if not self.filename or any(not p or p in (".", "..") or Path(p).name != p or "\\" in p for p in parts):
            raise ValueError(f"RemoteFile needs a plain file name or a relative path of them, not {self.filename!r}")
        if not (self.md5 or self.sha256):
            raise ValueError(f"RemoteFile {self.filename!r} needs an md5 or a sha256")
        object.__setattr__(self, "mirrors", tuple(self.mirrors))

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(base + self.filename for base in self.mirrors)

    @property
    def checksums(self) -> dict[str, str]:
        """Algorithm name (as hashlib spells it) -> expected hex digest, for those published."""
        published = {"md5": self.md5, "sha256": self.sha256}
        return {name: digest.lower() for name, digest in published.items() if digest}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: `data_dir` if given, else $DIGITLAB_DATA, else ~/.cache/digitlab."""
    if data_dir is not None and str(data_dir):
        chosen = Path(data_dir)
    elif os.environ.get(DATA_ENV):
        chosen = Path(os.environ[DATA_ENV])
    else:
        chosen = DEFAULT_DATA_DIR
    # Absolute, so that every message names a folder the user can find.
    return chosen.expanduser().absolute()


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks (never the whole file in memory)."""
    return _file_digest(path, "md5")


def _file_digest(path: str | os.PathLike, algorithm: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()  # reads in chunks


def verify_file(remote: RemoteFile, path: str | os.PathLike) -> dict:
    """{"file", "path", "status": "ok" | "missing" | "mismatch", "md5"} for one file on disk."""
    path = Path(path)
    if not path.is_file():
        return {"file": remote.filename, "path": str(path), "status": "missing", "md5": None}
    md5 = file_md5(path)  # always reported, so that a mismatch can be compared by hand
    digests = {name: md5 if name == "md5" else _file_digest(path, name) for name in remote.checksums}
    status = "ok" if digests == remote.checksums else "mismatch"
    return {"file": remote.filename, "path": str(path), "status": status, "md5": md5}


def fetch(remote: RemoteFile, folder: str | os.PathLike, progress: bool = True) -> Path:
    """Download `remote` into `folder`, verified, trying each mirror in order; the final path.

    Raises ChecksumError when a mirror served a file with the wrong checksum and no mirror served
    the right one, DatasetNotFoundError when no mirror could be reached (offline, say). Either
    way nothing is left in `folder`.
    """
    folder = Path(folder)
    failures = _try_mirrors(remote, folder, progress)
    if failures:
        raise _fetch_error(folder, [remote.filename], failures)
    return folder / remote.filename


def fetch_missing(remotes: Sequence[RemoteFile], folder: str | os.PathLike, progress: bool = True) -> list[Path]:
    """Download those of `remotes` not yet in `folder`; the paths of all of them.

    Stops at the first file no mirror can deliver (offline, every later file would fail the same
    way) with one error naming the folder and every file still missing.
    """
    folder = Path(folder)
    missing = [remote for remote in remotes if not (folder / remote.filename).is_file()]
    for i, remote in enumerate(missing):
        failures = _try_mirrors(remote, folder, progress)
        if failures:
            raise _fetch_error(folder, [r.filename for r in missing[i:]], failures)
    return [folder / remote.filename for remote in remotes]


def missing_files_error(folder: Path, filenames: Sequence[str]) -> DatasetNotFoundError:
    """The error for files absent from `folder` when downloading is off."""
    return DatasetNotFoundError(
        f"the {folder.name} dataset is not in {folder} and downloading is off: `digitlab data download "
        f"{folder.name}` fetches it; or point DIGITLAB_DATA or --data-dir at a folder that holds {folder.name}/",
        details=f"dataset files missing in {folder}: {', '.join(filenames)}\n" + _how_to_fix(folder),
    )


def _try_mirrors(remote: RemoteFile, folder: Path, progress: bool) -> list[tuple[str, Exception]]:
    """Try each mirror until one delivers a verified file; the (url, error) of each that failed.

    An empty list means the file is now in `folder`.
    """
    created = not folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the data folder {folder}: {_folder_problem(folder, err)}; "
            f"choose another with DIGITLAB_DATA or --data-dir"
        ) from err
    failures: list[tuple[str, Exception]] = []
    for url in remote.urls:
        try:
            _download(url, remote, folder, progress)
            return []
        except (OSError, http.client.HTTPException, ChecksumError) as err:
            # OSError covers urllib's URLError and HTTPError, timeouts and refused connections.
            if isinstance(err, urllib.error.HTTPError):
                err.close()  # an HTTP error response still holds its connection
            failures.append((url, err))
    if created:
        # Leave no trace of a failed download, not even an empty folder.
        with contextlib.suppress(OSError):
            folder.rmdir()
    return failures


def _folder_problem(folder: Path, err: OSError) -> str:
    """Why `folder` could not be made. mkdir says only "File exists" of a symbolic link whose target
    is missing (a relative link made from another folder, say: tests/test_bench_read.py's link to
    ../shared/data/mnist dangled when the data path was given relative), so such a link is named."""
    for path in (folder, *folder.parents):
        if path.is_symlink() and not path.exists():
            target = os.readlink(path)
            resolved = os.path.normpath(path.parent / target)
            where = target if resolved == target else f"{target} (that is, {resolved})"
            return f"{path} is a symbolic link to {where}, which does not exist (fix or remove the link)"
    return err.strerror or str(err)


def _download(url: str, remote: RemoteFile, folder: Path, progress: bool) -> None:
    """Stream `url` to a temporary file in `folder`, verify it, rename it to its final name."""
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    hashers = {name: hashlib.new(name) for name in remote.checksums}
    target = folder / remote.filename
    subfolder_created = not target.parent.is_dir()
    target.parent.mkdir(parents=True, exist_ok=True)  # a file under a subfolder ("annotations/...")
    # Same folder as the target, so that os.replace is an atomic rename on one file system.
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        with (
            os.fdopen(handle, "wb") as temp,
            urllib.request.urlopen(request, timeout=TIMEOUT_S) as response,
            tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None,
                unit="B",
                unit_scale=True,
                desc=remote.filename,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK_BYTES):
                temp.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
                bar.update(len(chunk))
            temp.flush()
            os.fsync(temp.fileno())  # whole on disk before it gets its real name
        for name, expected in remote.checksums.items():
            got = hashers[name].hexdigest()
            if got != expected:
                raise ChecksumError(f"{name} {got}, expected {expected}")
        os.replace(temp_path, target)
    except BaseException:
        # Also on Ctrl-C: never leave a partial download behind.
        temp_path.unlink(missing_ok=True)
        if subfolder_created:
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        raise


def _fetch_error(folder: Path, filenames: Sequence[str], failures: list[tuple[str, Exception]]) -> DataError:
    """One error naming the folder, the missing files, each URL tried and why it failed."""
    tried = "\n".join(f"  {url}: {_reason(err)}" for url, err in failures)
    bad_checksum = any(isinstance(err, ChecksumError) for _, err in failures)
    error_type = ChecksumError if bad_checksum else DatasetNotFoundError
    why = (
        "a mirror served a file with the wrong checksum (discarded)"
        if bad_checksum
        else "no mirror could be reached (offline?)"
    )
    name = folder.name
    return error_type(
        f"the {name} dataset is not in {folder} and could not be downloaded: {why}; put its files there, "
        f"or point DIGITLAB_DATA or --data-dir at a folder that holds {name}/",
        details=f"could not download {', '.join(filenames)} into {folder}.\nTried:\n{tried}\n" + _how_to_fix(folder),
    )


def _how_to_fix(folder: Path) -> str:
    return (
        f"To fix: put the files, under exactly these names, in {folder}; or point DIGITLAB_DATA "
        f"or --data-dir at a data folder that holds {folder.name}/<these files>."
    )


def _reason(err: Exception) -> str:
    """A short why for a failed URL: urllib's errors nest the useful part in `reason`."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, ChecksumError):
        return f"wrong checksum ({err}); the file was discarded"
    return str(err) or type(err).__name__


def _user_agent() -> str:
    # Name ourselves: some servers turn away the default Python-urllib agent.
    try:
        return f"digitlab/{version('digitlab')}"
    except PackageNotFoundError:
        return "digitlab"


def read_capped(path: Path, max_bytes: int, too_large: str) -> bytes:
    """A dataset file's bytes, never more than max_bytes + 1 of them read: a DataError when it cannot
    be read, or when it is larger (`too_large` says why that means it is not the file it should be)."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from err
    if len(data) > max_bytes:
        raise DataError(f"{path}: {too_large}")
    return data
