"""The hwd-1000 and orand-car-a datasets: the real files (shared data, failing under CI when absent),
and readers on good and damaged files the tests write themselves."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from digitlab.data import DATASETS, describe_datasets, load_dataset, orand_crops, orand_strings, verify_dataset
from digitlab.data.download import RemoteFile, fetch
from digitlab.data.hwd import read_hwd_csv
from digitlab.data.orand import DEV_FROM, read_orand_annotations
from digitlab.errors import ChecksumError, DataError, DatasetNotFoundError
from test_data import server  # noqa: F401 (a fixture: the loopback HTTP server)


def centre_of_mass(images: torch.Tensor) -> np.ndarray:
    """(N, 2) row, column of each (N, 1, 28, 28) image's ink."""
    ink = images[:, 0].double().numpy()
    grid = np.arange(28)
    total = ink.sum(axis=(1, 2))
    return np.stack([(ink.sum(2) * grid).sum(1) / total, (ink.sum(1) * grid).sum(1) / total], 1)


def assert_mnist_style(images: torch.Tensor) -> None:
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
    # ink bright on a dark ground: the border is (almost) empty, every digit has bright ink
    border = torch.cat([images[:, 0, :2].flatten(1), images[:, 0, -2:].flatten(1)], 1)
    assert border.float().mean() < 2
    assert (images.flatten(1).max(1).values >= 200).all()
    centres = centre_of_mass(images)
    assert np.abs(np.median(centres, 0) - 14).max() < 0.5
    assert np.percentile(np.abs(centres - 14).max(1), 99) < 2.5


# ---------------------------------------------------------------------------------------------
# hwd-1000, the real files


@pytest.fixture(scope="module")
def hwd(shared_data_dir):
    start = time.perf_counter()
    data = load_dataset("hwd-1000", data_dir=shared_data_dir, download=False, progress=False)
    return data, time.perf_counter() - start


def test_hwd_counts_labels_and_split(hwd, shared_data_dir):
    data, seconds = hwd
    assert seconds < 30, f"hwd-1000 took {seconds:.1f} s to load"
    assert len(data.train_images) == 900 and len(data.test_images) == 100
    assert data.train_labels.bincount().tolist() == [90] * 10
    assert data.test_labels.bincount().tolist() == [10] * 10
    rows = read_hwd_csv(shared_data_dir / "hwd-1000" / "dataset.csv")
    assert len(rows) == 1000
    # the test split is every 10th csv row: row 10 is img/0-010.png, a 0
    assert [label for _, label in rows[9::10]] == data.test_labels.tolist()
    assert rows[9] == ("img/0-010.png", 0)


def test_hwd_digits_are_mnist_style(hwd):
    data, _ = hwd
    assert_mnist_style(data.train_images)
    assert_mnist_style(data.test_images)


# ---------------------------------------------------------------------------------------------
# orand-car-a, the real files


@pytest.fixture(scope="module")
def orand(shared_data_dir):
    start = time.perf_counter()
    data = load_dataset("orand-car-a", data_dir=shared_data_dir, download=False, progress=False)
    return data, time.perf_counter() - start


def test_orand_annotations_counts_and_split(shared_data_dir):
    records = read_orand_annotations(shared_data_dir / "orand-car-a")
    assert len(records) == 1080
    assert sum(len(r.boxes) for r in records) == 4898
    train = [r for r in records if r.split == "train"]
    dev = [r for r in records if r.split == "dev"]
    # The data README says 133 dev images: that is real-digits/'s count, after it left out the images
    # with overlapping boxes; the export itself holds a_car_001100 to a_car_001233, all 134.
    assert (len(train), len(dev)) == (946, 134)
    assert max(r.number for r in train) == 1099 and min(r.number for r in dev) == DEV_FROM
    for record in records:
        assert len(record.digits) == len(record.boxes)
        assert [b[0] for b in record.boxes] == sorted(b[0] for b in record.boxes)


def test_orand_strings_agree_with_the_independent_labels(shared_data_dir):
    """real-digits/labels.csv labels the same images by string, made separately from the same boxes."""
    with open(shared_data_dir / "real-digits" / "labels.csv", newline="") as file:
        published = {
            Path(row["file"]).name: row["label"] for row in csv.DictReader(file) if row["subset"] == "orand-car-a-train"
        }
    strings = orand_strings("train", shared_data_dir) + orand_strings("dev", shared_data_dir)
    assert len(strings) == 1080
    ours = {s.file: s.digits for s in strings}
    assert len(published) == 1066 and set(published) <= set(ours)
    assert all(ours[name] == label for name, label in published.items())
    for s in strings[:50]:
        assert s.image.dtype == np.float32 and s.image.ndim == 2 and 0 <= s.image.min() < s.image.max() <= 1
    dev = orand_strings("dev", shared_data_dir)
    assert len(dev) == 134 and all(int(s.file[6:12]) >= DEV_FROM for s in dev)


def test_orand_crops_counts_labels_and_style(orand):
    data, seconds = orand
    assert seconds < 60, f"orand-car-a took {seconds:.1f} s to load"
    assert len(data.train_images) + len(data.test_images) == 4898
    assert (len(data.train_images), len(data.test_images)) == (4354, 544)
    train_hist, test_hist = data.train_labels.bincount(minlength=10), data.test_labels.bincount(minlength=10)
    # every digit is there, and 0 (amounts end in zeros) is the most common, 1 next
    assert (train_hist >= 300).all() and (test_hist >= 20).all()
    assert train_hist.argmax() == 0 and test_hist.argmax() == 0
    assert_mnist_style(data.train_images)
    assert_mnist_style(data.test_images)


def test_no_dev_image_contributes_a_training_crop(orand, shared_data_dir):
    data, _ = orand
    train_images, train_labels, train_numbers = orand_crops("train", shared_data_dir)
    dev_images, dev_labels, dev_numbers = orand_crops("dev", shared_data_dir)
    assert train_numbers.max() < DEV_FROM <= dev_numbers.min()
    assert len(np.unique(dev_numbers)) == 134
    # the dataset's tensors are exactly these crops: train from train images, test from dev ones
    assert torch.equal(data.train_images, torch.from_numpy(train_images))
    assert torch.equal(data.train_labels, torch.from_numpy(train_labels))
    assert torch.equal(data.test_images, torch.from_numpy(dev_images))
    assert torch.equal(data.test_labels, torch.from_numpy(dev_labels))
    # no dev crop appears among the training crops
    train_keys = {bytes(image) for image in train_images.reshape(len(train_images), -1)}
    assert not any(bytes(image) in train_keys for image in dev_images.reshape(len(dev_images), -1))


def test_registry_lists_and_verifies_them(shared_data_dir):
    rows = {row["name"]: row for row in describe_datasets(shared_data_dir)}
    assert rows["hwd-1000"]["present"] and rows["orand-car-a"]["present"]
    assert rows["orand-car-a"]["files"] == ["annotations/instances_train2017.json"]
    assert "dev" in DATASETS["orand-car-a"].description and "reporting only" in DATASETS["orand-car-a"].description
    for name in ("hwd-1000", "orand-car-a"):
        assert [row["status"] for row in verify_dataset(name, shared_data_dir)] == ["ok"]


# ---------------------------------------------------------------------------------------------
# ORAND-style files the tests write


def draw(text: str, width: int = 40) -> tuple[np.ndarray, list[list[int]]]:
    """Dark digits on light paper, one per `width` pixels, and their boxes [x, y, w, h]."""
    image = np.full((48, width * len(text) + 8), 230, np.uint8)
    boxes = []
    for i, digit in enumerate(text):
        x = 6 + i * width
        cv2.putText(image, digit, (x, 38), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 20, 3)
        ys, xs = np.nonzero(image[:, x : x + width - 4] < 128)
        boxes.append([int(x + xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)])
    return image, boxes


def write_orand(folder: Path, strings: dict[int, str]) -> dict:
    """An orand-car-a folder: one image a_car_NNNNNN per entry, categories whose ids are not the digits."""
    (folder / "images" / "train2017").mkdir(parents=True)
    (folder / "annotations").mkdir()
    document = {
        "categories": [{"id": 10 + d, "name": str(d), "supercategory": "Numbers"} for d in range(10)],
        "images": [],
        "annotations": [],
    }
    for iid, (number, text) in enumerate(strings.items()):
        image, boxes = draw(text)
        name = f"a_car_{number:06d}_png.rf.{hashlib.md5(text.encode()).hexdigest()}.jpg"
        cv2.imwrite(str(folder / "images" / "train2017" / name), image)
        document["images"].append({"id": iid, "file_name": name, "width": image.shape[1], "height": image.shape[0]})
        for box, digit in reversed(list(zip(boxes, text))):  # stored right to left: the reader sorts by x
            aid = len(document["annotations"])
            document["annotations"].append({"id": aid, "image_id": iid, "category_id": 10 + int(digit), "bbox": box})
    save(folder, document)
    return document


def save(folder: Path, document: dict) -> None:
    (folder / "annotations" / "instances_train2017.json").write_text(json.dumps(document))


def test_written_orand_folder_reads_with_the_split_by_number(tmp_path):
    write_orand(tmp_path / "orand-car-a", {500: "111", 1099: "11", 1100: "777", 2000: "77"})
    strings = orand_strings("train", tmp_path)
    assert [(s.digits, len(s.boxes)) for s in strings] == [("111", 3), ("11", 2)]
    assert [s.digits for s in orand_strings("dev", tmp_path)] == ["777", "77"]
    data = load_dataset("orand-car-a", data_dir=tmp_path, download=False, progress=False)
    # The dev images are all 7s, the train images all 1s: none of the dev ones reached training.
    assert data.train_labels.tolist() == [1] * 5 and data.test_labels.tolist() == [7] * 5
    assert_mnist_style(data.train_images)


def test_string_labels_come_from_category_names_not_ids(tmp_path):
    document = write_orand(tmp_path / "orand-car-a", {300: "2468"})
    assert orand_strings("train", tmp_path)[0].digits == "2468"
    for category in document["categories"]:  # rename: id 10+d now means 9-d
        category["name"] = str(9 - (category["id"] - 10))
    save(tmp_path / "orand-car-a", document)
    assert orand_strings("train", tmp_path)[0].digits == "7531"


def _damage(document: dict, case: str) -> tuple[dict | str, str]:
    """The damaged document for `case`, and the words its error must hold."""
    image, box = document["images"][0], document["annotations"][0]
    if case == "not json":
        return '{"images": [', "not valid JSON"
    if case == "category not a digit":
        document["categories"][3]["name"] = "dollar"
        return document, "not a digit"
    if case == "category missing":
        del document["categories"][5]
        return document, "not each of 0-9"
    if case == "box outside image":
        box["bbox"] = [image["width"] - 5, 0, 10, 10]
        return document, "not inside its image"
    if case == "box of strings":
        box["bbox"] = ["1", "2", "3", "4"]
        return document, "bbox must be 4 numbers"
    if case == "box NaN":
        box["bbox"] = [1, 2, float("nan"), 4]
        return document, "bbox must be 4 numbers"
    if case == "unknown image":
        box["image_id"] = 99
        return document, "names no image"
    if case == "unknown category":
        box["category_id"] = 3  # the ids are 10..19
        return document, "names no category"
    if case == "duplicate annotation id":
        document["annotations"][1]["id"] = box["id"]
        return document, "appears twice"
    if case == "width a string":
        image["width"] = "120"
        return document, "width must be an integer"
    if case == "huge image":
        image["height"] = 10**9
        return document, "height must be an integer"
    if case == "not a roboflow name":
        image["file_name"] = "../../etc/passwd"
        return document, "not a Roboflow name"
    if case == "no boxes":
        document["annotations"] = [a for a in document["annotations"] if a["image_id"] != image["id"]]
        return document, "has no boxes"
    raise AssertionError(case)


DAMAGE = [
    "not json",
    "category not a digit",
    "category missing",
    "box outside image",
    "box of strings",
    "box NaN",
    "unknown image",
    "unknown category",
    "duplicate annotation id",
    "width a string",
    "huge image",
    "not a roboflow name",
    "no boxes",
]


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_annotations_are_refused(tmp_path, case):
    folder = tmp_path / "orand-car-a"
    document = write_orand(folder, {400: "12", 1200: "34"})
    damaged, words = _damage(document, case)
    path = folder / "annotations" / "instances_train2017.json"
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    for attempt in (
        lambda: load_dataset("orand-car-a", data_dir=tmp_path, download=False, progress=False),
        lambda: orand_strings("train", tmp_path),
    ):
        with pytest.raises(DataError) as error:
            attempt()
        assert str(path) in str(error.value) and words in str(error.value)


def test_an_image_unlike_its_annotation_or_missing_is_refused(tmp_path):
    folder = tmp_path / "orand-car-a"
    document = write_orand(folder, {400: "12"})
    image = folder / "images" / "train2017" / document["images"][0]["file_name"]
    cv2.imwrite(str(image), np.full((30, 30), 200, np.uint8))
    with pytest.raises(DataError, match="but the annotations say"):
        orand_strings("train", tmp_path)
    image.unlink()
    with pytest.raises(
        DatasetNotFoundError, match="1 of the 1 train images of ORAND-CAR-A are not in .*copy images/train2017/"
    ):
        load_dataset("orand-car-a", data_dir=tmp_path, download=False, progress=False)
    with pytest.raises(DataError, match="splits train, dev"):
        orand_strings("test", tmp_path)


def test_oversized_annotations_are_refused_unread(tmp_path, monkeypatch):
    import digitlab.data.orand as orand_module

    write_orand(tmp_path / "orand-car-a", {400: "12"})
    monkeypatch.setattr(orand_module, "MAX_JSON_BYTES", 100)
    with pytest.raises(DataError, match="more than the 100 digitlab reads"):
        orand_strings("train", tmp_path)


# ---------------------------------------------------------------------------------------------
# HwD-style files the tests write


def write_hwd(folder: Path, rows: list[tuple[str, str]], header: str = "image,label") -> None:
    (folder / "img").mkdir(parents=True)
    for image, label in rows:
        drawing = np.full((28, 28), 255, np.uint8)
        cv2.putText(drawing, label if label.isdigit() else "1", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 0, 2)
        if image.startswith("img/"):
            cv2.imwrite(str(folder / image), drawing)
    text = header + "\n" + "\n".join(f"{image},{label}" for image, label in rows)
    (folder / "dataset.csv").write_text(text)


def test_written_hwd_folder_reads_with_every_tenth_row_as_test(tmp_path):
    rows = [(f"img/{d}-{i:03d}.png", str(d)) for d in range(2) for i in range(1, 11)]
    write_hwd(tmp_path / "hwd-1000", rows)
    data = load_dataset("hwd-1000", data_dir=tmp_path, download=False, progress=False)
    assert len(data.train_images) == 18 and data.test_labels.tolist() == [0, 1]
    assert_mnist_style(data.train_images)


@pytest.mark.parametrize(
    ("rows", "header", "words"),
    [
        ([("img/0-001.png", "x")], "image,label", "label 'x' is not a digit"),
        ([("img/0-001.png", "10")], "image,label", "label '10' is not a digit"),
        ([("../secret.png", "1")], "image,label", "is not a file img/NAME.png"),
        ([("img/a.png", "1"), ("img/a.png", "1")], "image,label", "listed twice"),
        ([("img/0-001.png", "1")], "file,digit", "header 'image,label'"),
        ([], "image,label", "no rows"),
    ],
)
def test_damaged_hwd_csv_is_refused(tmp_path, rows, header, words):
    write_hwd(tmp_path / "hwd-1000", rows, header)
    with pytest.raises(DataError, match="dataset.csv") as error:
        load_dataset("hwd-1000", data_dir=tmp_path, download=False, progress=False)
    assert words in str(error.value)


def test_hwd_missing_or_corrupt_images_are_named(tmp_path):
    folder = tmp_path / "hwd-1000"
    write_hwd(folder, [("img/0-001.png", "0"), ("img/0-002.png", "0")])
    (folder / "img" / "0-002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="0-002.png"):
        load_dataset("hwd-1000", data_dir=tmp_path, download=False, progress=False)
    (folder / "img" / "0-002.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks 1 of the 2 images .*img/0-002.png.*hwd-1000-dataset"):
        load_dataset("hwd-1000", data_dir=tmp_path, download=False, progress=False)


# ---------------------------------------------------------------------------------------------
# Downloads: a file under a subfolder (ORAND's annotations/), temp-then-rename, nothing left on failure


def test_a_file_under_a_subfolder_downloads_into_it(tmp_path, server):  # noqa: F811
    root, base = server
    payload = json.dumps({"images": []}).encode()
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train2017.json").write_bytes(payload)
    remote = RemoteFile("annotations/instances_train2017.json", [base], sha256=hashlib.sha256(payload).hexdigest())
    path = fetch(remote, tmp_path / "orand-car-a", progress=False)
    assert path == tmp_path / "orand-car-a" / "annotations" / "instances_train2017.json"
    assert path.read_bytes() == payload and [p.name for p in path.parent.iterdir()] == [path.name]
    wrong = replace(remote, sha256="0" * 64)
    with pytest.raises(ChecksumError):
        fetch(wrong, tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", ["../x.json", "a//b", "/abs.json", "a/../b", "a\\b"])
def test_remote_file_paths_stay_inside_the_folder(name):
    with pytest.raises(ValueError, match="plain file name"):
        RemoteFile(name, ["http://127.0.0.1/"], sha256="0" * 64)


def test_download_names_the_images_no_mirror_serves(tmp_path, server, monkeypatch):  # noqa: F811
    """`data download` fetches dataset.csv / the annotations, then says which images are missing and
    where they come from, rather than 'all files present'."""
    from digitlab.data import download_dataset

    root, base = server
    source = tmp_path / "source"
    write_orand(source / "orand-car-a", {400: "12", 1200: "3"})
    write_hwd(source / "hwd-1000", [("img/0-001.png", "0")])
    cases = {"orand-car-a": "annotations/instances_train2017.json", "hwd-1000": "dataset.csv"}
    for name, path in cases.items():
        payload = (source / name / path).read_bytes()
        (root / name / path).parent.mkdir(parents=True, exist_ok=True)
        (root / name / path).write_bytes(payload)
        remote = RemoteFile(path, [f"{base}{name}/"], sha256=hashlib.sha256(payload).hexdigest())
        monkeypatch.setitem(DATASETS, name, replace(DATASETS[name], files=(remote,)))
        with pytest.raises(DatasetNotFoundError, match="images"):
            download_dataset(name, tmp_path / "data", progress=False)
        assert (tmp_path / "data" / name / path).read_bytes() == payload  # the verified file stays
    assert download_dataset("orand-car-a", source, progress=False) == source / "orand-car-a"
    assert download_dataset("hwd-1000", source, progress=False) == source / "hwd-1000"
