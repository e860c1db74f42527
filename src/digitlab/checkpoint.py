"""Run directories on disk: safetensors weights beside JSON, written atomically.

Nothing users load is ever unpickled: weights and optimiser tensors are safetensors,
everything else is JSON. Every file is written to a temporary name in the same folder
and renamed only when whole, so a crash never leaves a half-written file.

A run directory (DESIGN.md):
    config.json         recipe, model name and arguments, dataset, normalisation, version
    model.safetensors   the weights the run keeps: the latest epoch's, or with --keep best the best
                        validation epoch's so far
    history.json        one row per epoch, and history.csv the same rows as CSV
    tensorboard/        with --tensorboard: the rows as TensorBoard scalars
    metrics.json, report.txt, *.png   written by evaluation
    checkpoint/latest.json  -> checkpoint/epoch-NNNN/{model,optimizer,rng}.safetensors + state.json
                        (+ best.safetensors with --keep best: the best epoch's weights so far)
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from .errors import CheckpointError, WriteError
from .files import atomic_write, make_temp_dir, read_json, remove_temporaries, write_json, write_text

if TYPE_CHECKING:  # torch is imported where tensors are handled: named_models is for `digitlab recipes` too
    import torch

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
# An int8 export of the run's weights (`digitlab export RUN --int8 --onnx RUN/model-int8.onnx`), which
# load_model runs in their place on the CPU; it records the sha256 of the weights it was made from.
INT8 = "model-int8.onnx"
# The shipped models: run directories inside the package, each usable by its folder's name (named_models).
SHIPPED = Path(__file__).with_name("weights")
# The bundled default model: a run directory shipped in the package (weights/README.md is its card).
BUNDLED_RUN = SHIPPED / "digitnet-real"
BUNDLED_LINE_RUN = SHIPPED / "linenet"  # the bundled line recognizer
BUNDLED = "bundled"  # the name that always means BUNDLED_RUN
HISTORY = "history.json"
HISTORY_CSV = "history.csv"  # the same rows, rewritten whole beside history.json after each epoch
TENSORBOARD = "tensorboard"  # --tensorboard's event files (train.TensorBoardLog)
CHECKPOINTS = "checkpoint"
METRICS = "metrics.json"  # written last by evaluation: a run directory with it is complete
# Written by evaluation (evaluate.evaluate_run) beside METRICS: these names for the test split, and
# NAME-SPLIT.EXT for another (`split_file`); CURVES, drawn from history.json, has one name for every split.
REPORT = "report.txt"
CONFUSION = "confusion.png"
ERRORS = "errors.png"
SAMPLES = "samples.png"
CURVES = "curves.png"
LATEST = "latest.json"  # in checkpoint/: names the newest complete epoch folder
EPOCH_FOLDER = re.compile(r"epoch-\d{4,}")  # checkpoint/epoch-NNNN
EPOCH_TEMP = re.compile(r"\.epoch-\d{4,}\..+")  # make_temp_dir's name for one still being written
OPTIMIZER = "optimizer.safetensors"  # in an epoch folder, beside WEIGHTS (the model's tensors then)
RNG = "rng.safetensors"
STATE = "state.json"
BEST = "best.safetensors"  # in an epoch folder of a --keep best run: the best validation epoch's weights so far
CHECKPOINT_FILES = (WEIGHTS, OPTIMIZER, RNG, STATE)
HISTORY_NUMBERS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")  # what every history row has
OPTIMIZER_TENSOR = re.compile(r"state\.(\d+)\.([A-Za-z_]\w*)")  # as optimizer_to_files names them


def named_models() -> dict[str, Path]:
    """The models shipped in the package by name: "bundled" (BUNDLED_RUN), then every folder of
    SHIPPED holding a run's CONFIG and WEIGHTS, by its folder name, sorted. Lists folders only:
    nothing is read or imported (`digitlab recipes` shows them without torch)."""
    try:
        folders = sorted(SHIPPED.iterdir())
    except OSError:  # an installation without its weights folder
        folders = []
    found = {BUNDLED: BUNDLED_RUN}
    for folder in folders:
        if (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file():
            found[folder.name] = folder
    return found


def resolve_model(spec: str | Path) -> Path:
    """What a model argument (`--model`, `load_model(...)`) names: a path that exists is that path,
    even where a shipped model has its name; else a shipped model's name (named_models) is its
    folder; else the path as given, for the caller's own "not a run directory" error."""
    path = Path(spec)
    if path.exists():
        return path
    return named_models().get(str(spec), path)


def shipped_name(path: str | Path) -> str | None:
    """The name named_models gives the folder `path` ("bundled" for BUNDLED_RUN), or None where
    `path` is not a shipped model's folder."""
    target = Path(path).resolve()
    return next((name for name, folder in named_models().items() if folder.resolve() == target), None)


def split_file(name: str, split: str) -> str:
    """The name of evaluation's file `name` (METRICS, REPORT, ...) for `split`: `name` itself for the
    test split, which keeps the plain names DESIGN.md lists, and NAME-SPLIT.EXT for another
    (metrics-val.json)."""
    if split == "test":
        return name
    stem, _, suffix = name.rpartition(".")
    return f"{stem}-{split}.{suffix}"


def history_csv(history: list[dict]) -> str:
    """The history rows as CSV text: a header of every key in the order the rows first have it (the
    epoch first), then a row per epoch; numbers as Python writes them (repr: read back exactly)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def write_history(run_dir: Path, history: list[dict]) -> None:
    """history.json, then history.csv: each written whole (atomic_write), so a kill between the two
    leaves the CSV at most one epoch behind, and resuming rewrites both from the checkpoint."""
    write_json(Path(run_dir) / HISTORY, history)
    write_text(Path(run_dir) / HISTORY_CSV, history_csv(history))


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}

    # Serialised here and written by atomic_write, not by safetensors' save_file: since 0.8 that
    # writes through a temporary file of its own (".tmpXXXXXX" beside the target), which a process
    # killed mid-write left in the run directory where remove_partial_writes does not look for it
    # (test_crash's 20 kills found one).
    try:
        data = save(tensors)
    except SafetensorError as err:
        raise OSError(str(err)) from err
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def weights_digest(path: Path) -> str:
    """The sha256 of a weights file, hex: what ties an export (INT8) to the weights it was made from."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

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
    import torch

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(
    tensors: dict[str, torch.Tensor],
    meta: dict,
    tensors_name: str = "the optimiser tensors",
    meta_name: str = "the optimiser state",
) -> dict:
    """The optimizer.state_dict() that optimizer_to_files split. CheckpointError, naming the file,
    when the tensor names or the JSON remainder are not as it writes them; whether they fit the
    optimiser of a network is train.check_optimizer_state's to check."""
    groups = meta.get("param_groups") if isinstance(meta, dict) else None
    if not (
        isinstance(groups, list)
        and groups
        and all(
            isinstance(g, dict)
            and isinstance(g.get("params"), list)
            and all(type(i) is int and i >= 0 for i in g["params"])
            for g in groups
        )
    ):
        raise damaged(
            meta_name,
            "the optimiser state ('optimizer') must hold 'param_groups', a list of objects "
            "whose 'params' list parameter numbers",
        )
    scalars = meta.get("scalars", {})
    if not (
        isinstance(scalars, dict) and all(re.fullmatch(r"\d+", k) and isinstance(v, dict) for k, v in scalars.items())
    ):
        raise damaged(meta_name, "the optimiser's 'scalars' must map parameter numbers to objects")
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        match = OPTIMIZER_TENSOR.fullmatch(name)
        if match is None:
            raise damaged(tensors_name, f"tensor {name[:80]!r} is not named state.INDEX.KEY")
        state.setdefault(int(match[1]), {})[match[2]] = value
    for index, entry in scalars.items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": groups}


def damaged(path: Path | str, problem: str) -> CheckpointError:
    """The error for a run file that digitlab did not write as it is (damaged, or edited)."""
    return CheckpointError(f"{path} is damaged or was not written by digitlab: {problem}")


def plain(path: Path, kind: str = "file", required: bool = False) -> bool:
    """Whether `path` exists as a `kind` ("file": a regular file, or "folder") of the run itself.

    CheckpointError when it is a symbolic link -- resume never reads, replaces or deletes through
    one, since what it points to is not the run's -- when it is something other than a `kind` (a
    folder where a file belongs, a FIFO that would block a read), or when it is missing and required.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        if required:
            raise CheckpointError(f"{path} is missing") from None
        return False
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    if stat.S_ISLNK(mode):
        raise CheckpointError(
            f"{path} is a symbolic link: --resume reads, replaces and deletes only the run "
            f"directory's own files and folders, never what a link points to (put the {kind} "
            f"itself there)"
        )
    if not (stat.S_ISDIR(mode) if kind == "folder" else stat.S_ISREG(mode)):
        raise CheckpointError(f"{path} is not a {kind}: not a run directory digitlab wrote")
    return True


def check_run_parts(run_dir: Path) -> None:
    """Raise CheckpointError unless every part of `run_dir` that resume reads, replaces or deletes
    is the run's own file or folder (`plain`): config.json, model.safetensors, history.json and
    .csv, metrics.json, tensorboard/, checkpoint/ and its latest.json and epoch folders. The run
    directory itself may be a link: the user named it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory (no such folder)")
    plain(run_dir / CONFIG, required=True)
    for name in (WEIGHTS, HISTORY, HISTORY_CSV, METRICS):
        plain(run_dir / name)
    plain(run_dir / TENSORBOARD, "folder")
    root = run_dir / CHECKPOINTS
    if plain(root, "folder"):
        for entry in root.iterdir():
            if EPOCH_FOLDER.fullmatch(entry.name):
                plain(entry, "folder")
            elif entry.name == LATEST:
                plain(entry)


def _is_folder(path: Path) -> bool:
    """A real folder: not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_folders(root: Path, pattern: re.Pattern, keep: str | None = None) -> None:
    """Delete the real folders in `root` named by `pattern` (digitlab's own names), except `keep`.
    A link of such a name is left alone, and rmtree unlinks links inside without following them."""
    for entry in root.iterdir():
        if entry.name != keep and pattern.fullmatch(entry.name) and _is_folder(entry):
            shutil.rmtree(entry, ignore_errors=True)


# --- per-epoch checkpoints -------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    rng: dict[str, torch.Tensor],
    state: dict,
    best: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint/epoch-NNNN/ whole, then point checkpoint/latest.json at it; `best`: the
    weights of a --keep best run's best epoch so far (state["best"] says which), as best.safetensors.

    The folder is built under a temporary name and renamed when complete; latest.json is
    replaced atomically afterwards, so at every instant it names a complete checkpoint.
    Older epoch folders are removed only after that.
    """
    root = Path(run_dir) / CHECKPOINTS
    name = f"epoch-{epoch:04d}"
    if root.is_symlink():
        raise WriteError(
            f"could not save the checkpoint of epoch {epoch}: {root} is a symbolic link, and digitlab "
            f"writes only into a run directory's own folders"
        )
    tmp = make_temp_dir(root, name)
    try:
        opt_tensors, opt_meta = optimizer_to_files(optimizer_state)
        save_weights(tmp / WEIGHTS, model_state)
        save_weights(tmp / OPTIMIZER, opt_tensors)
        save_weights(tmp / RNG, rng)
        if best is not None:
            save_weights(tmp / BEST, best)
        write_json(tmp / STATE, {**state, "epoch": epoch, "optimizer": opt_meta})
        final = root / name
        if os.path.lexists(final):  # a rerun of the same epoch after a crash past this point
            if not _is_folder(final):
                raise OSError(f"{final} is in the way and is not a checkpoint folder digitlab wrote")
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json(root / LATEST, {"epoch": epoch, "folder": name})
    except (OSError, WriteError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(
            f"could not save the checkpoint of epoch {epoch} in {root}: {_reason(err)}; "
            f"the previous checkpoint is intact, and --resume {run_dir} continues from it"
        ) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Only what digitlab wrote goes: older epoch folders and leftovers of killed writes. A file of
    # the user's in checkpoint/, or a link, stays (issue 18: everything else used to be deleted).
    _remove_folders(root, EPOCH_FOLDER, keep=name)
    _remove_folders(root, EPOCH_TEMP)
    remove_temporaries(root)
    return final


def _reason(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, WriteError) and isinstance(err.__cause__, OSError) else err
    return cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINTS / LATEST).is_file()


def remove_partial_writes(run_dir: Path) -> None:
    """Clear what a killed process left half-written in a run directory: hidden temporary
    files, and checkpoint folders never renamed into place. Complete files are untouched."""
    remove_temporaries(Path(run_dir))
    root = Path(run_dir) / CHECKPOINTS
    if _is_folder(root):  # never through a link: what it points to is not the run's
        remove_temporaries(root)
        _remove_folders(root, EPOCH_TEMP)


def load_checkpoint(run_dir: Path) -> dict:
    """The latest complete checkpoint: model, optimizer, rng tensors, the JSON state, its folder,
    and for a --keep best run "best": the best epoch, its val_accuracy and its weights ("model").

    Checked here, before anything uses it: latest.json names the folder of its epoch; that folder
    and its files are the run's own (`plain`); state.json holds the same epoch, one history row per
    epoch and the optimiser's settings, and its "best" (if any) an epoch of that history with the
    same val_accuracy; the optimiser's tensors are named as digitlab names them.
    Whether the tensors fit the network, optimiser and generators is train.prepare_resume's to check.
    """
    root = Path(run_dir) / CHECKPOINTS
    latest_path = root / LATEST
    if not (plain(root, "folder") and plain(latest_path)):
        raise CheckpointError(
            f"{run_dir} has no complete checkpoint to resume from (it stopped before its first "
            f"epoch ended, or is not a run directory): train it again instead"
        )
    epoch = _latest_epoch(read_json(latest_path), latest_path)
    folder = root / f"epoch-{epoch:04d}"
    if not plain(folder, "folder"):
        raise CheckpointError(f"{latest_path} names a checkpoint that does not exist: {folder}")
    for name in CHECKPOINT_FILES:
        plain(folder / name, required=True)
    # NaN is allowed: the history of a run whose loss diverged holds it.
    state = _checked_state(read_json(folder / STATE, allow_nan=True), epoch, folder / STATE)
    optimizer = optimizer_from_files(
        load_weights(folder / OPTIMIZER), state.pop("optimizer", None), str(folder / OPTIMIZER), str(folder / STATE)
    )
    checkpoint = {
        "model": load_weights(folder / WEIGHTS),
        "optimizer": optimizer,
        "rng": load_weights(folder / RNG),
        "state": state,
        "folder": folder,
    }
    if "best" in state:
        plain(folder / BEST, required=True)
        checkpoint["best"] = {**state["best"], "model": load_weights(folder / BEST)}
    return checkpoint


def _latest_epoch(latest: Any, path: Path) -> int:
    if not isinstance(latest, dict):
        raise damaged(path, f'it holds {_json_kind(latest)}, not {{"epoch": N, "folder": "epoch-NNNN"}}')
    epoch = latest.get("epoch")
    if type(epoch) is not int or epoch < 1:
        raise damaged(path, f"'epoch' must be a whole number of at least 1, not {epoch!r:.40}")
    if latest.get("folder") != f"epoch-{epoch:04d}":
        raise damaged(
            path, f"'folder' must be 'epoch-{epoch:04d}', the folder of epoch {epoch}, not {latest.get('folder')!r:.80}"
        )
    return epoch


def _checked_state(state: Any, epoch: int, path: Path) -> dict:
    if not isinstance(state, dict):
        raise damaged(path, f"it holds {_json_kind(state)}, not an object")
    if type(state.get("epoch")) is not int or state["epoch"] != epoch:
        raise damaged(path, f"'epoch' must be {epoch}, as {LATEST} says, not {state.get('epoch')!r:.40}")
    history = state.get("history")
    if not isinstance(history, list) or len(history) != epoch:
        raise damaged(path, f"'history' must list one row for each of its {epoch} epochs")
    for number, row in enumerate(history, 1):
        if not (
            isinstance(row, dict)
            and type(row.get("epoch")) is int
            and row["epoch"] == number
            and all(type(row.get(key)) in (int, float) for key in HISTORY_NUMBERS)
        ):
            raise damaged(
                path,
                f"history row {number} must be an object with 'epoch': {number} and numbers for "
                f"{', '.join(HISTORY_NUMBERS)}",
            )
    if "best" in state:
        _check_best(state["best"], history, path)
    return state


def _check_best(best: Any, history: list[dict], path: Path) -> None:
    """A --keep best checkpoint's "best": {"epoch": E, "val_accuracy": A}, E one of its epochs and A
    that epoch's val_accuracy in its history."""
    epoch = best.get("epoch") if isinstance(best, dict) else None
    if not (type(epoch) is int and 1 <= epoch <= len(history)):
        raise damaged(path, f"'best' must name one of its {len(history)} epochs, not {best!r:.60}")
    if best.get("val_accuracy") != history[epoch - 1]["val_accuracy"]:
        raise damaged(
            path,
            f"'best' gives epoch {epoch} a val_accuracy of {best.get('val_accuracy')!r:.40}, its history "
            f"{history[epoch - 1]['val_accuracy']!r}",
        )


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), "an object")
