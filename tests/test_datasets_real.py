"""The datasets `usps` and `optdigits`: their readers on good and damaged files that the tests
write, the published files in the shared data (failing, not skipping, under CI when absent),
their downloads (pinned SHA-256, temp-then-rename, one clear error offline), and that their digits
are MNIST-style exactly as `predict` prepares a picture of them."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import digitlab
from digitlab.cli import main
from digitlab.data import DATASETS, load_dataset, verify_dataset
from digitlab.data.optdigits import read_optdigits
from digitlab.data.usps import read_usps
from digitlab.errors import ChecksumError, DataError, DatasetNotFoundError
from digitlab.preprocess import ink_map, load_image, to_mnist_style

USPS_FILES = {"zip.train.gz": 7291, "zip.test.gz": 2007}
OPTDIGITS_FILES = {"optdigits-orig.tra": 1934, "optdigits-orig.cv": 946}
# As zip.info.txt publishes them.
USPS_TRAIN_HISTOGRAM = [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
USPS_TEST_HISTOGRAM = [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
# Counted in the files with awk (every 33rd line after the 20-line header), not by digitlab.
OPTDIGITS_TRAIN_HISTOGRAM = [189, 198, 195, 199, 186, 187, 195, 201, 180, 204]
OPTDIGITS_TEST_HISTOGRAM = [87, 97, 92, 85, 114, 108, 87, 96, 91, 89]


def shared_folder(shared_data_dir: Path, name: str, files) -> Path:
    folder = shared_data_dir / name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        message = f"{folder} lacks {', '.join(missing)}: set DIGITLAB_DATA to the shared data"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="module")
def usps(shared_data_dir):
    shared_folder(shared_data_dir, "usps", USPS_FILES)
    return load_dataset("usps", data_dir=shared_data_dir, download=False, progress=False)


@pytest.fixture(scope="module")
def optdigits(shared_data_dir):
    shared_folder(shared_data_dir, "optdigits", OPTDIGITS_FILES)
    return load_dataset("optdigits", data_dir=shared_data_dir, download=False, progress=False)


# --- the published files ------------------------------------------------------------------------


def test_usps_counts_and_labels_as_published(usps):
    assert usps.train_images.shape == (7291, 1, 28, 28) and usps.test_images.shape == (2007, 1, 28, 28)
    assert str(usps.train_images.dtype) == "torch.uint8" and str(usps.train_labels.dtype) == "torch.int64"
    assert usps.train_labels.bincount().tolist() == USPS_TRAIN_HISTOGRAM
    assert usps.test_labels.bincount().tolist() == USPS_TEST_HISTOGRAM
    assert usps.classes == tuple("0123456789")


def test_optdigits_counts_and_labels_as_published(optdigits):
    assert optdigits.train_images.shape == (1934, 1, 28, 28) and optdigits.test_images.shape == (946, 1, 28, 28)
    assert optdigits.train_labels.bincount().tolist() == OPTDIGITS_TRAIN_HISTOGRAM
    assert optdigits.test_labels.bincount().tolist() == OPTDIGITS_TEST_HISTOGRAM


@pytest.mark.parametrize("name", ["usps", "optdigits"])
def test_digits_are_mnist_style(name, request):
    """Ink bright on a dark ground, the digit fitted in the middle with its centre of mass at (14, 14)
    as MNIST's (whose digits lie within 0.3 px of it)."""
    data = request.getfixturevalue(name)
    for images in (data.train_images, data.test_images):
        ink = images[:, 0].double().numpy()
        mass = ink.sum((1, 2))
        index = np.arange(28)
        rows = (ink.sum(2) * index).sum(1) / mass
        cols = (ink.sum(1) * index).sum(1) / mass
        assert np.abs(rows - 14).max() < 0.5 and np.abs(cols - 14).max() < 0.5
        assert (images.amax((1, 2, 3)) == 255).all()  # full-strength ink in every digit
        border = np.concatenate(
            [ink[:, :2].ravel(), ink[:, -2:].ravel(), ink[:, :, :2].ravel(), ink[:, :, -2:].ravel()]
        )
        assert border.mean() < 2  # the ground is dark: MNIST's 20x20 box leaves 4 px all round
        assert 0.08 < data.mean[0] < 0.25  # ink covers a part, as in MNIST (mean 0.13)


def test_a_usps_digit_is_what_predict_makes_of_its_picture(usps, shared_data_dir):
    """real-digits/usps/png/ holds USPS test as dark-on-white PNGs: `predict` prepares each into the
    very array the dataset holds, so training and reading see a digit the same way."""
    pngs = shared_folder(shared_data_dir, "real-digits", ["usps/png/0000.png"]) / "usps" / "png"
    for i in range(0, 2007, 17):
        assert np.array_equal(to_mnist_style(pngs / f"{i:04d}.png"), usps.test_images[i, 0].numpy()), i


def test_the_polarity_of_every_digit_is_seen_right(shared_data_dir):
    """The preparation guesses which side is ink from the border: it must guess right for every
    USPS and Optdigits digit (a thick USPS '0' covers half its border)."""
    folder = shared_folder(shared_data_dir, "usps", USPS_FILES)
    grey = np.concatenate([np.loadtxt(gzip.open(folder / name))[:, 1:] for name in USPS_FILES])
    pictures = np.round((1 - grey) / 2 * 255).astype(np.uint8).reshape(-1, 16, 16)
    assert {ink_map(load_image(p))[1] for p in pictures} == {"dark-on-light"}


def test_the_bundled_model_reads_usps_test(usps):
    """Measured: 98.16% of USPS test (1,970 of 2,007) and 95.98% of Optdigits test with the bundled
    MNIST model; issue 14 wants more than MNIST in the bundled model, so the bar here is 90%."""
    model = digitlab.load_model()
    predicted = np.asarray(model.predict(usps.test_images))
    accuracy = (predicted == usps.test_labels.numpy()).mean()
    assert accuracy >= 0.90, accuracy


# --- downloads and the registry -----------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


@pytest.mark.parametrize(("name", "files"), [("usps", USPS_FILES), ("optdigits", OPTDIGITS_FILES)])
def test_offline_one_error_names_the_folder_and_every_file(tmp_path, monkeypatch, name, files):
    spec = DATASETS[name]
    monkeypatch.setitem(
        DATASETS, name, replace(spec, files=tuple(replace(f, mirrors=(closed_port_url(),)) for f in spec.files))
    )
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(name, data_dir=tmp_path, progress=False)
    message = str(error.value)
    assert str(tmp_path / name) in message and all(f in message for f in files)
    assert not (tmp_path / name).exists()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(("name", "files"), [("usps", USPS_FILES), ("optdigits", OPTDIGITS_FILES)])
def test_download_checks_the_pinned_sha256(tmp_path, monkeypatch, shared_data_dir, name, files):
    """Served from a folder on loopback (no network here): the real files pass the registry's pinned
    SHA-256 and load; a file that differs by one byte is refused and nothing is left behind."""
    source = shared_folder(shared_data_dir, name, files)
    served = tmp_path / "served"
    served.mkdir()
    for f in files:
        shutil.copy(source / f, served / f)
    handler = functools.partial(QuietHandler, directory=served)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        spec = DATASETS[name]
        assert all(f.sha256 and not f.md5 for f in spec.files)
        monkeypatch.setitem(DATASETS, name, replace(spec, files=tuple(replace(f, mirrors=(base,)) for f in spec.files)))
        data = load_dataset(name, data_dir=tmp_path / "data", progress=False)
        assert len(data.test_labels) == list(files.values())[1]
        assert [row["status"] for row in verify_dataset(name, tmp_path / "data")] == ["ok", "ok"]
        first = next(iter(files))
        damaged = bytearray((served / first).read_bytes())
        damaged[1000] ^= 1
        (served / first).write_bytes(bytes(damaged))
        with pytest.raises(ChecksumError):
            load_dataset(name, data_dir=tmp_path / "other", progress=False)
        assert not (tmp_path / "other" / name).exists()  # no wrong file, no temporary file, no folder
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_data_list_and_verify_show_them(capsys, shared_data_dir):
    shared_folder(shared_data_dir, "usps", USPS_FILES)
    shared_folder(shared_data_dir, "optdigits", OPTDIGITS_FILES)
    assert main(["data", "list", "--data-dir", str(shared_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "usps" in out and "optdigits" in out
    for name in ("usps", "optdigits"):
        assert main(["data", "verify", name, "--data-dir", str(shared_data_dir)]) == 0
        assert capsys.readouterr().out.count(" ok ") == 2


# --- the readers on files the tests write --------------------------------------------------------


def usps_line(label, values) -> str:
    return " ".join(f"{v:.4f}" for v in [label, *np.ravel(values)]) + " "


def usps_digit(kind: int) -> np.ndarray:
    """A 16x16 ESL-format digit, -1 background: a bar ('1') or a box ('0')."""
    grey = np.full((16, 16), -1.0)
    if kind == 1:
        grey[2:14, 7:9] = 1.0
    else:
        grey[3:13, 4:12] = 1.0
        grey[5:11, 6:10] = -1.0
    return grey


def write_usps(path: Path, lines: list[str], compress: bool = True) -> Path:
    data = "\n".join(lines).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


GOOD_USPS = [usps_line(1, usps_digit(1)), usps_line(0, usps_digit(0)), usps_line(1, usps_digit(1))]


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_usps_reader_on_a_good_file(tmp_path, compress):
    images, labels = read_usps(write_usps(tmp_path / "zip.train.gz", GOOD_USPS, compress), 3)
    assert images.shape == (3, 1, 28, 28) and labels.tolist() == [1, 0, 1]
    # the bar is upright in the middle, 20 px tall as MNIST's digits are
    bar = images[0, 0].numpy()
    rows = np.flatnonzero(bar.max(1) > 127)
    assert 18 <= rows[-1] - rows[0] + 1 <= 21 and bar[:, 14].max() == 255 and bar[:, :8].max() == 0


DAMAGED_USPS = {
    "a line cut short": (GOOD_USPS[:1] + [GOOD_USPS[1][:-900]] + GOOD_USPS[2:], 3, "line 2: .* values, expected 257"),
    "a value out of range": (
        GOOD_USPS[:2] + [GOOD_USPS[2].replace("-1.0000", "-1.5000", 1)],
        3,
        "line 3: grey value 1 is -1.5, outside",
    ),
    "not a number": (GOOD_USPS[:1] + [GOOD_USPS[1].replace("-1.0000", "x-1.00", 1)] + GOOD_USPS[2:], 3, "line 2: grey"),
    "nan": ([GOOD_USPS[0].replace("-1.0000", "nan", 1)] + GOOD_USPS[1:], 3, "line 1: grey value 1 is 'nan'"),
    "label 10": (GOOD_USPS[:2] + [usps_line(10, usps_digit(1))], 3, "line 3: label 10 is not a digit"),
    "label 2.5": ([usps_line(2.5, usps_digit(1))] + GOOD_USPS[1:], 3, "line 1: label 2.5 is not a digit"),
    "a digit missing": (GOOD_USPS[:2], 3, "2 digits, expected 3"),
    "a blank digit": (GOOD_USPS[:2] + [usps_line(1, np.full(256, -1.0))], 3, "line 3: digit 3 cannot be prepared"),
}


@pytest.mark.parametrize("case", list(DAMAGED_USPS))
def test_usps_reader_refuses_a_damaged_file_naming_file_and_line(tmp_path, case):
    lines, count, message = DAMAGED_USPS[case]
    path = write_usps(tmp_path / "zip.test.gz", lines)
    with pytest.raises(DataError, match=message) as error:
        read_usps(path, count)
    assert str(path) in str(error.value)


def test_usps_reader_refuses_truncated_or_bloated_gzip(tmp_path):
    path = write_usps(tmp_path / "zip.test.gz", GOOD_USPS)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_usps(path, 3)
    # 100 MB of zeros gzip to 100 KB: refused once past what 3 lines may hold, not inflated whole
    path.write_bytes(gzip.compress(b"0" * 100_000_000, compresslevel=1))
    with pytest.raises(DataError, match="inflates to more than"):
        read_usps(path, 3)
    path.write_bytes(b"\xff\xfe" + GOOD_USPS[0].encode())
    with pytest.raises(DataError, match="line 1: a byte that is not text"):
        read_usps(path, 1)


def optdigits_text(blocks: list[tuple[np.ndarray, str]], ndigit: int | None = None, width: int = 32) -> str:
    header = ["BU handwritten digit database: E Alpaydin C Kaynak 1995", "Training file"]
    header += [
        f"entwidth = {width}",
        "entheight = 32",
        "depth = 1",
        "whitepix = 0",
        f"ndigit = {ndigit or len(blocks)}",
    ]
    body = []
    for bitmap, label in blocks:
        body += ["".join("1" if v else "0" for v in row) for row in bitmap] + [f" {label}"]
    return "\n".join(header + body)


def optdigits_digit(kind: int) -> np.ndarray:
    bitmap = np.zeros((32, 32), bool)
    if kind == 1:
        bitmap[4:28, 14:18] = True
    else:
        bitmap[4:28, 8:24] = True
        bitmap[8:24, 12:20] = False
    return bitmap


GOOD_OPTDIGITS = [(optdigits_digit(0), "0"), (optdigits_digit(1), "1")]


def test_optdigits_reader_on_a_good_file(tmp_path):
    path = tmp_path / "optdigits-orig.tra"
    path.write_text(optdigits_text(GOOD_OPTDIGITS))
    images, labels = read_optdigits(path, 2)
    assert images.shape == (2, 1, 28, 28) and labels.tolist() == [0, 1]
    assert images[0, 0, 14, 14] == 0 and images[0, 0, 14, 6:9].max() == 255  # a ring, hollow in the middle
    path.write_text(optdigits_text(GOOD_OPTDIGITS).replace("\n", "\r\n"))  # Windows line ends read the same
    assert np.array_equal(read_optdigits(path, 2)[0], images)


def damaged_row(text: str, line: int, new: str) -> str:
    lines = text.split("\n")
    lines[line - 1] = new
    return "\n".join(lines)


GOOD_TEXT = optdigits_text(GOOD_OPTDIGITS)
DAMAGED_OPTDIGITS = {
    "a row of 31": (damaged_row(GOOD_TEXT, 12, "0" * 31), "line 12: expected a bitmap row"),
    "a 2 in a row": (damaged_row(GOOD_TEXT, 20, "0" * 15 + "2" + "0" * 16), "line 20: expected a bitmap row"),
    "label 12": (damaged_row(GOOD_TEXT, 40, " 12"), "line 40: label '12' is not a digit"),
    "label missing": (damaged_row(GOOD_TEXT, 73, " "), "line 73: label '' is not a digit"),
    "truncated": ("\n".join(GOOD_TEXT.split("\n")[:-5]), "61 lines after the header"),
    "header count": (optdigits_text(GOOD_OPTDIGITS, ndigit=3), "header says ndigit = 3, expected 2"),
    "header width": (optdigits_text(GOOD_OPTDIGITS, width=16), "header says entwidth = 16, expected 32"),
    "no bitmap": ("hello\n" * 50, "no bitmap row"),
    "a blank digit": (optdigits_text([GOOD_OPTDIGITS[0], (np.zeros((32, 32)), "1")]), "line 41: digit 2 cannot"),
}


@pytest.mark.parametrize("case", list(DAMAGED_OPTDIGITS))
def test_optdigits_reader_refuses_a_damaged_file_naming_file_and_line(tmp_path, case):
    text, message = DAMAGED_OPTDIGITS[case]
    path = tmp_path / "optdigits-orig.cv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        read_optdigits(path, 2)
    assert str(path) in str(error.value)


def test_optdigits_reader_bounds_the_file_before_reading(tmp_path):
    path = tmp_path / "optdigits-orig.cv"
    path.write_text(GOOD_TEXT + "\n" + "0" * 32 * 10_000)
    with pytest.raises(DataError, match="more than .* bytes"):
        read_optdigits(path, 2)


def test_a_damaged_usps_file_in_the_data_directory_fails_the_load_with_exit_2(tmp_path, capsys, shared_data_dir):
    source = shared_folder(shared_data_dir, "usps", USPS_FILES)
    folder = tmp_path / "usps"
    folder.mkdir()
    shutil.copy(source / "zip.train.gz", folder / "zip.train.gz")
    lines = gzip.decompress((source / "zip.test.gz").read_bytes()).decode().split("\n")
    fields = lines[1000].split()
    lines[1000] = " ".join([fields[0], "-3", *fields[2:]])
    (folder / "zip.test.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(DataError, match=r"zip.test.gz, line 1001: grey value 1 is -3"):
        load_dataset("usps", data_dir=tmp_path, download=False, progress=False)
    assert hashlib.sha256((folder / "zip.test.gz").read_bytes()).hexdigest() != DATASETS["usps"].files[1].sha256
    assert main(["data", "verify", "usps", "--data-dir", str(tmp_path)]) == 2
    assert "mismatch" in capsys.readouterr().out


def test_prepared_digits_are_cached_on_disk_by_content_and_preparation(tmp_path, monkeypatch):
    """Preparing USPS's 9,298 digits takes 18 s on 2 cores; the cache makes a later load take about
    a second. An entry is named by the file's SHA-256 and the preparation's fingerprint, and one that
    is not count digits' bytes is prepared again and replaced."""
    from digitlab.data import prepare

    monkeypatch.setenv("DIGITLAB_PREPARED", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare, "_PREPARED", {})
    path = write_usps(tmp_path / "zip.train.gz", GOOD_USPS)
    images, _ = read_usps(path, 3)
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name.startswith("usps-" + hashlib.sha256(path.read_bytes()).hexdigest()[:32])
    assert entry.read_bytes() == images.numpy().tobytes()  # raw uint8 bytes: nothing a loader could unpickle
    monkeypatch.setattr(prepare, "_PREPARED", {})
    entry.write_bytes(np.zeros((2, 1, 28, 28), np.uint8).tobytes())  # not what 3 digits prepare to
    assert np.array_equal(read_usps(path, 3)[0], images)
    assert entry.read_bytes() == images.numpy().tobytes()
    monkeypatch.setattr(prepare, "_PREPARED", {})
    (tmp_path / "a file").write_text("")  # a cache folder that cannot be made: no cache, no error
    monkeypatch.setenv("DIGITLAB_PREPARED", str(tmp_path / "a file" / "cache"))
    other = write_usps(tmp_path / "zip.test.gz", GOOD_USPS[:2])
    assert read_usps(other, 2)[0].shape == (2, 1, 28, 28)
