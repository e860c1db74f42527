"""ORAND-CAR-A: cheque amounts (courtesy amount recognition, ICFHR 2014) with a box for every digit.

Layout (the Roboflow COCO export of github.com/Fzkuji/Labeled_ORAND-CAR-A, its ORAND-CAR-2014-coco/
folder): `annotations/instances_train2017.json` and `images/train2017/*.jpg`. Roboflow renames each
image `a_car_NNNNNN_png.rf.<hash>.jpg`: the original name a_car_NNNNNN stays in front, and its number
decides the split. `train` is every image numbered below 1100, `dev` 1100 and above (a_car_001100 to
a_car_001233 in this export: 946 and 134 images). The dev split is for reporting only: never trained
on, never used to choose a checkpoint or fit a threshold.

Two views of the same files:
- strings, for the reader: `orand_strings(split)`, each image with its digits left to right (its
  boxes sorted by x) and the boxes;
- single-digit crops, for the classifier: the `orand-car-a` dataset. Each image's ink is found once
  by `preprocess.ink_map` (the reader's first step; it decides the polarity), each box is cut from it
  with a margin, ink of the image's other boxes blanked, and prepared by `preprocess.center_digit`
  (the last step of `to_mnist_style`). Its train tensors come from train images only (`orand_crops`
  is called with "train"); its test split is the dev crops.

The json is checked before any image is decoded: its size, types, unique ids, categories that name
the digits 0-9 (the mapping comes from the names, not from the ids), every box inside its image.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..errors import DataError, DatasetNotFoundError

if TYPE_CHECKING:
    import torch

JSON_PATH = "annotations/instances_train2017.json"
IMAGES_DIR = "images/train2017"
DEV_FROM = 1100  # images numbered from here on are the dev split
SPLITS = ("train", "dev")
MAX_JSON_BYTES = 32 << 20  # the published json is 1.8 MB
MAX_IMAGES = 20_000
MAX_BOXES_PER_IMAGE = 32  # the published images hold 1 to 7
MAX_SIDE = 4096  # the published images are at most 307x108
MARGIN_FRACTION = 0.1  # of the box's longer side, at least MIN_MARGIN pixels: the strokes' soft edges
MIN_MARGIN = 2
FILE_NAME = re.compile(r"a_car_(\d{1,7})_png\.rf\.[0-9A-Za-z]+\.jpg")
SOURCE = "https://github.com/Fzkuji/Labeled_ORAND-CAR-A (folder ORAND-CAR-2014-coco/)"

Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels


@dataclass(frozen=True)
class OrandImage:
    """One image as the json describes it: its file, original number, split, digits and boxes by x."""

    file: str
    number: int
    split: str
    width: int
    height: int
    digits: str
    boxes: tuple[Box, ...]


class OrandString(NamedTuple):
    """One cheque amount for the reader: grey image (H, W) float32 in [0, 1], its digits, their boxes."""

    image: np.ndarray
    digits: str
    boxes: tuple[Box, ...]
    file: str


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}: damaged, or not ORAND-CAR-A's COCO annotations")


def _int(value, path: Path, where: str, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise _fail(path, f"{where} must be an integer {bound}, found {value!r}")
    return value


def _list(document: dict, key: str, path: Path) -> list[dict]:
    items = document.get(key)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _fail(path, f'"{key}" must be a list of objects')
    return items


def _categories(document: dict, path: Path) -> dict[int, str]:
    """Category id -> digit, from each category's name (COCO ids need not equal the digit)."""
    mapping: dict[int, str] = {}
    for i, category in enumerate(_list(document, "categories", path)):
        cid = _int(category.get("id"), path, f"categories[{i}].id")
        name = category.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[0-9]", name.strip()):
            raise _fail(path, f"categories[{i}] is named {name!r}, not a digit 0-9")
        if cid in mapping:
            raise _fail(path, f"category id {cid} appears twice")
        mapping[cid] = name.strip()
    if sorted(mapping.values()) != [str(d) for d in range(10)]:
        raise _fail(path, f"the categories name the digits {sorted(mapping.values())}, not each of 0-9 once")
    return mapping


def _images(document: dict, path: Path) -> dict[int, tuple[str, int, int, int]]:
    """Image id -> (file name, number, width, height)."""
    images = _list(document, "images", path)
    if not images or len(images) > MAX_IMAGES:
        raise _fail(path, f"{len(images)} images (1 to {MAX_IMAGES:,} expected)")
    found: dict[int, tuple[str, int, int, int]] = {}
    numbers: set[int] = set()
    for i, image in enumerate(images):
        iid = _int(image.get("id"), path, f"images[{i}].id")
        name = image.get("file_name")
        match = FILE_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise _fail(path, f"images[{i}].file_name {name!r} is not a Roboflow name a_car_NNNNNN_png.rf.HASH.jpg")
        number = int(match.group(1))
        width = _int(image.get("width"), path, f"images[{i}].width", 1, MAX_SIDE)
        height = _int(image.get("height"), path, f"images[{i}].height", 1, MAX_SIDE)
        if iid in found:
            raise _fail(path, f"image id {iid} appears twice")
        if number in numbers:
            raise _fail(path, f"two images are a_car_{number:06d} ({name})")
        numbers.add(number)
        found[iid] = (name, number, width, height)
    return found


def _boxes(document: dict, path: Path, images: dict, categories: dict[int, str]) -> dict[int, list[tuple[Box, str]]]:
    """Image id -> [(box, digit)], every box checked to lie inside its image."""
    boxes: dict[int, list[tuple[Box, str]]] = {iid: [] for iid in images}
    seen: set[int] = set()
    for i, annotation in enumerate(_list(document, "annotations", path)):
        aid = _int(annotation.get("id"), path, f"annotations[{i}].id")
        if aid in seen:
            raise _fail(path, f"annotation id {aid} appears twice")
        seen.add(aid)
        iid, cid = annotation.get("image_id"), annotation.get("category_id")
        if isinstance(iid, bool) or iid not in images:
            raise _fail(path, f"annotations[{i}].image_id {iid!r} names no image")
        if isinstance(cid, bool) or cid not in categories:
            raise _fail(path, f"annotations[{i}].category_id {cid!r} names no category")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
        ):
            raise _fail(path, f"annotations[{i}].bbox must be 4 numbers [x, y, width, height], found {bbox!r}")
        x, y, w, h = (round(v) for v in bbox)
        name, _, width, height = images[iid]
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise _fail(path, f"annotations[{i}].bbox {bbox} is not inside its image {name} ({width}x{height})")
        if len(boxes[iid]) >= MAX_BOXES_PER_IMAGE:
            raise _fail(path, f"image {name} has more than {MAX_BOXES_PER_IMAGE} boxes")
        boxes[iid].append(((x, y, w, h), categories[cid]))
    return boxes


def read_orand_annotations(folder: str | os.PathLike) -> list[OrandImage]:
    """Every image the json describes, by number, checked (DataError naming the json and the fault)."""
    folder = Path(folder)
    path = folder / JSON_PATH
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise _fail(path, f"{size:,} bytes, more than the {MAX_JSON_BYTES:,} digitlab reads")
        document = json.loads(path.read_bytes())
    except OSError as err:
        raise DatasetNotFoundError(
            f"cannot read ORAND-CAR-A's annotations {path}: {err.strerror}; copy them from {SOURCE}"
        ) from err
    except (ValueError, RecursionError) as err:
        raise _fail(path, f"not valid JSON ({err})") from err
    if not isinstance(document, dict):
        raise _fail(path, "the document is not a JSON object")
    categories = _categories(document, path)
    images = _images(document, path)
    boxes = _boxes(document, path, images, categories)
    records = []
    for iid, (name, number, width, height) in images.items():
        if not boxes[iid]:
            raise _fail(path, f"image {name} has no boxes")
        ordered = sorted(boxes[iid], key=lambda item: item[0][0])  # a string is its boxes sorted by x
        split = "train" if number < DEV_FROM else "dev"
        digits = "".join(digit for _, digit in ordered)
        records.append(OrandImage(name, number, split, width, height, digits, tuple(b for b, _ in ordered)))
    return sorted(records, key=lambda record: record.number)


def _split_records(folder: Path, split: str) -> list[OrandImage]:
    """The split's images, after checking that every one of them is on disk (before any is decoded)."""
    if split not in SPLITS:
        raise DataError(f"ORAND-CAR-A has the splits {', '.join(SPLITS)}, not {split!r}")
    records = [record for record in read_orand_annotations(folder) if record.split == split]
    missing = [r.file for r in records if not (folder / IMAGES_DIR / r.file).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(records)} {split} images of ORAND-CAR-A are not in {folder / IMAGES_DIR} "
            f"(first: {missing[0]}): copy images/train2017/ from {SOURCE} there",
            details="missing: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""),
        )
    return records


def require_orand_images(folder: Path) -> None:
    """DatasetNotFoundError unless every image the annotations list is on disk (they are not
    downloaded: a clone of the repository), naming the missing ones and where to get them."""
    for split in SPLITS:
        _split_records(folder, split)


def _load(folder: Path, record: OrandImage) -> np.ndarray:
    from ..preprocess import ImageError, load_image

    path = folder / IMAGES_DIR / record.file
    try:
        grey = load_image(path)
    except ImageError as err:
        raise DataError(f"{path}: {err}") from err
    if grey.shape != (record.height, record.width):
        raise DataError(
            f"{path} is {grey.shape[1]}x{grey.shape[0]} pixels, but the annotations say "
            f"{record.width}x{record.height}: the image or {JSON_PATH} is not the one published"
        )
    return grey


def orand_strings(split: str, data_dir: str | os.PathLike | None = None) -> list[OrandString]:
    """The cheque amounts of `split` ("train" or "dev") as (grey image, digits, boxes by x, file name)."""
    from .download import resolve_data_dir

    folder = resolve_data_dir(data_dir) / "orand-car-a"
    return [OrandString(_load(folder, r), r.digits, r.boxes, r.file) for r in _split_records(folder, split)]


def _crop(image: np.ndarray, box: Box, others: tuple[Box, ...], fill: float = 0.0) -> np.ndarray:
    """The box with a margin, what lies in the image's other boxes (outside this one) set to `fill`."""
    x, y, w, h = box
    margin = max(MIN_MARGIN, round(MARGIN_FRACTION * max(w, h)))
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(image.shape[1], x + w + margin), min(image.shape[0], y + h + margin)
    crop = image[y0:y1, x0:x1].copy()
    other = np.zeros(crop.shape, bool)
    for bx, by, bw, bh in others:
        other[max(0, by - y0) : max(0, by + bh - y0), max(0, bx - x0) : max(0, bx + bw - x0)] = True
    other[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = False
    crop[other] = fill
    return crop


def _image_crops(folder: Path, record: OrandImage) -> list[np.ndarray]:
    """Each box of one image as a (28, 28) uint8 MNIST-style digit."""
    from ..preprocess import ImageError, center_digit, ink_map, plain_ink

    grey = _load(folder, record)
    try:
        ink, _ = ink_map(grey)
    except ImageError:
        # A cheque's printed security pattern makes the ground look noisy, and ink_map's test (ink
        # 5 noise sigmas above the ground) fails 7 of the 1,080 images whose digits are plain to
        # see: their boxes get the plain stretch instead.
        ink = None
    crops = []
    for i, box in enumerate(record.boxes):
        others = record.boxes[:i] + record.boxes[i + 1 :]
        try:
            if ink is not None:
                crops.append(center_digit(_crop(ink, box, others)))
            else:
                crops.append(center_digit(plain_ink(_crop(grey, box, others, float(np.median(grey))))))
        except ImageError as err:
            raise DataError(
                f"{folder / IMAGES_DIR / record.file}: box {i + 1} {box} ({record.digits[i]}): {err}"
            ) from err
    return crops


def orand_crops(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digit crops of `split`: images (N, 1, 28, 28) uint8, labels (N,) int64, and the number
    (a_car_NNNNNN) of the image each crop was cut from, (N,) int64."""
    from .download import resolve_data_dir

    return _crops_in(resolve_data_dir(data_dir) / "orand-car-a", split)


def _crops_in(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels, numbers = [], [], []
    for record in _split_records(folder, split):
        crops = _image_crops(folder, record)
        images += crops
        labels += [int(d) for d in record.digits]
        numbers += [record.number] * len(crops)
    return (
        np.stack(images)[:, None] if images else np.empty((0, 1, 28, 28), np.uint8),
        np.array(labels, np.int64),
        np.array(numbers, np.int64),
    )


def read_orand_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The orand-car-a dataset: train = crops of train images only, test = the dev crops (reporting only)."""
    import torch  # imported here: start-up time (1 s), so that the dataset registry needs no torch

    train_images, train_labels, _ = _crops_in(Path(folder), "train")  # never a dev image: see _split_records
    test_images, test_labels, _ = _crops_in(Path(folder), "dev")
    return tuple(torch.from_numpy(a) for a in (train_images, train_labels, test_images, test_labels))
