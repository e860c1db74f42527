"""The user's own digits as training data: `digitlab train RECIPE --data SOURCE`.

A source is a dataset name (`digitlab datasets`), a folder with one subfolder per class (DIR/0/*.png
... DIR/9/*.png), or a CSV file of `file,label` rows (paths relative to the CSV's folder; a header
row `file,label` is allowed). Every image is any file `digitlab predict` accepts, prepared once, as
predict prepares it (preprocess.to_mnist_style): training sees a digit as reading will.

Nothing is skipped: every image that cannot be read or holds no ink is named in one DataError, and a
CSV row with a bad label or a missing field is refused naming its line. Several sources are joined:
their training images are concatenated, and the test split is the named datasets' test splits, or,
where no dataset is named, empty -- train.py then tests on the held-out validation part.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, DataError
from .download import read_capped
from .prepare import as_tensors

if TYPE_CHECKING:
    from .dataset import Dataset

DIGITS = tuple(str(d) for d in range(10))
MAX_LISTED = 20  # unreadable images named one by one in the error; the rest are counted
MAX_CSV_BYTES = 1 << 26


def is_path_source(source: str, names: list[str]) -> bool:
    """Whether `source` names a folder or file rather than a registered dataset."""
    return source not in names


def normalise_sources(sources, names: list[str]) -> list[str]:
    """Dataset names as given, folders and CSV files as absolute paths (what config.json records,
    so that --resume reloads the same data from anywhere). ConfigError for anything else."""
    out = []
    for source in sources:
        source = str(source)
        if not is_path_source(source, names):
            out.append(source)
            continue
        path = Path(source).expanduser()
        if not (path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv")):
            raise ConfigError(
                f"--data {source}: not a dataset name ({', '.join(names)}), a folder of class subfolders "
                "(DIR/0/ ... DIR/9/) or a .csv file of file,label rows"
            )
        out.append(str(path.resolve()))
    return out


def folder_entries(folder: Path) -> list[tuple[Path, int]]:
    """(image path, label) of every file in DIR/0/ ... DIR/9/, sorted; other entries are refused."""
    entries, strays = [], []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if not (child.is_dir() and child.name in DIGITS):
            strays.append(child.name)
            continue
        entries += [(f, int(child.name)) for f in sorted(child.iterdir()) if not f.name.startswith(".")]
    if strays:
        raise DataError(
            f"--data {folder}: holds {', '.join(strays[:5])}{' ...' if len(strays) > 5 else ''}: a folder of own "
            "digits holds only class subfolders 0 ... 9, one image file per digit in each"
        )
    return entries


def csv_entries(path: Path) -> list[tuple[Path, int]]:
    """(image path, label) of every row of a `file,label` CSV; DataError naming a bad line."""
    data = read_capped(path, MAX_CSV_BYTES, f"more than {MAX_CSV_BYTES >> 20} MiB: not a file,label list")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}): not a file,label list") from err
    entries = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if number == 1 and [c.lower() for c in cells] == ["file", "label"]:
            continue
        if len(cells) != 2 or not cells[0]:
            raise DataError(f"{path}, line {number}: {len(cells)} fields; each row is file,label (e.g. 7/a.png,7)")
        if cells[1] not in DIGITS:
            raise DataError(f"{path}, line {number}: label {cells[1]!r:.40} is not a digit 0-9")
        entries.append((path.parent / cells[0], int(cells[1])))
    return entries


def read_images(source: str, entries: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 28, 28) uint8 MNIST-style images and (N,) labels; one DataError naming every image
    that cannot be prepared."""
    from ..preprocess import to_mnist_style  # cv2: imported when the data is read, not at start-up

    if not entries:
        raise DataError(f"--data {source}: holds no images")
    images = np.empty((len(entries), 1, 28, 28), np.uint8)
    failures = []
    for i, (path, _) in enumerate(entries):
        try:
            images[i, 0] = to_mnist_style(path)
        except DataError as err:
            failures.append(f"  {path}: {err.summary}")
    if failures:
        more = len(failures) - MAX_LISTED
        listed = failures[:MAX_LISTED] + ([f"  ... and {more} more"] if more > 0 else [])
        raise DataError(
            f"--data {source}: {len(failures)} of {len(entries)} images cannot be used (fix or remove them):\n"
            + "\n".join(listed)
        )
    return images, np.array([label for _, label in entries], np.int64)


def read_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one folder or CSV source (an absolute path, as normalise_sources gives it)."""
    path = Path(source)
    if path.is_dir():
        return read_images(source, folder_entries(path))
    if path.is_file():
        return read_images(source, csv_entries(path))
    raise DataError(f"--data {source}: no such folder or file (any more)")


def load_sources(sources: list[str], names: list[str], load_named) -> Dataset:
    """One Dataset of the joined sources; `load_named(name)` loads a registered dataset."""
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    from .dataset import Dataset, channel_stats

    train_x, train_y, test_x, test_y, labels = [], [], [], [], []
    for source in sources:
        if is_path_source(source, names):
            images, targets = as_tensors(*read_source(source))
            train_x.append(images)
            train_y.append(targets)
            labels.append(Path(source).name)
            continue
        named = load_named(source)
        if named.image_shape != (1, 28, 28) or tuple(named.classes) != DIGITS:
            raise ConfigError(
                f"--data {source}: its images are {named.image_shape} of classes {', '.join(named.classes)}; "
                "joined data must be 28x28 grey digits 0-9"
            )
        train_x.append(named.train_images)
        train_y.append(named.train_labels)
        test_x.append(named.test_images)
        test_y.append(named.test_labels)
        labels.append(named.name)
    train_images, train_labels = torch.cat(train_x), torch.cat(train_y)
    if test_x:
        test_images, test_labels = torch.cat(test_x), torch.cat(test_y)
    else:  # no test split of its own: train.py tests on the held-out part
        test_images, test_labels = train_images[:0], train_labels[:0]
    mean, std = channel_stats(train_images)
    name = "+".join(labels)
    blocks = tuple((source, len(y)) for source, y in zip(sources, train_y, strict=True))
    return Dataset(name, train_images, train_labels, test_images, test_labels, DIGITS, mean, std, blocks)
