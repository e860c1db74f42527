"""The dataset layer: IDX and CIFAR readers, downloads, the registry, and the real MNIST files.

Every file these tests read is written by the test itself, except the shared datasets reached
through the `shared_data_dir` fixture. Downloads go to a loopback HTTP server; nothing touches
the network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from digitlab.data import (
    DATASETS,
    Dataset,
    dataset_names,
    describe_datasets,
    load_dataset,
    resolve_data_dir,
    verify_dataset,
)
from digitlab.data.cifar import CIFAR10_CLASSES, RECORD_BYTES, TEST_MEMBER, TRAIN_MEMBERS, read_cifar10_binary
from digitlab.data.download import RemoteFile, fetch, fetch_missing, file_md5
from digitlab.data.idx import load_idx_pair, read_idx
from digitlab.errors import ChecksumError, DataError, DatasetNotFoundError, UnknownNameError

# ---------------------------------------------------------------------------------------------
# IDX


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written by hand from the format description, independently of the reader."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big_endian.tobytes()


def write(path: Path, data: bytes, gzipped: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_round_trip(tmp_path, gzipped):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write(tmp_path / "images.idx", idx_bytes(images), gzipped))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)


def test_idx_multibyte_types_come_back_in_native_order(tmp_path):
    values = np.array([[-2, 300], [1, -32768]], dtype=np.int16)
    got = read_idx(write(tmp_path / "shorts.idx", idx_bytes(values, code=0x0B)))
    assert got.dtype == np.dtype("int16")  # native, usable in arithmetic without surprises
    np.testing.assert_array_equal(got, values)


GOOD_HEADER = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01" + GOOD_HEADER[4:] + b"abc", "not an IDX file"),
        (b"\x00\x00\x07\x01" + GOOD_HEADER[4:] + b"abc", "type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x05" + b"\x00" * 20, "5 dimensions"),
        (b"\x00\x00", "too short"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">I", 3), "truncated IDX header"),
        (GOOD_HEADER + b"ab", "truncated"),
        (GOOD_HEADER + b"abcd", "longer than its header"),
    ],
    ids=["magic", "dtype-code", "no-dims", "five-dims", "short", "header-cut", "truncated", "trailing"],
)
@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_corrupt_files_raise_data_error(tmp_path, data, message, gzipped):
    path = write(tmp_path / "bad.idx", data, gzipped)
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_absurd_header_fails_fast_without_allocating(tmp_path, gzipped):
    # 10^6 x 10^3 x 10^3 = 10^12 items claimed, three bytes present.
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10**6, 10**3, 10**3) + b"abc"
    path = write(tmp_path / "huge.idx", data, gzipped)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0
    assert peak < 16 * 2**20  # bytes: nothing in proportion to the claim


def test_idx_corrupt_gzip_names_the_file(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    cut = write(tmp_path / "cut.gz", good[: len(good) // 2])
    garbage = write(tmp_path / "garbage.gz", good[:10] + bytes(range(256)) * 4)
    for path in (cut, garbage):
        with pytest.raises(DataError, match="gzip") as error:
            read_idx(path)
        assert str(path) in str(error.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "absent.gz")


def write_pair(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    return (
        write(tmp_path / "images.gz", idx_bytes(images), gzipped=True),
        write(tmp_path / "labels.gz", idx_bytes(labels), gzipped=True),
    )


def test_idx_pair_shapes_and_types(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    got_images, got_labels = load_idx_pair(*write_pair(tmp_path, images, labels))
    assert got_images.dtype == torch.uint8 and got_images.shape == (5, 1, 28, 28)
    assert got_labels.dtype == torch.int64 and got_labels.tolist() == [0, 9, 3, 3, 1]
    assert torch.equal(got_images[:, 0], torch.from_numpy(images))


def test_idx_pair_count_mismatch(tmp_path):
    paths = write_pair(tmp_path, np.zeros((5, 4, 4), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_idx_pair(*paths)


def test_idx_pair_label_out_of_range(tmp_path):
    paths = write_pair(tmp_path, np.zeros((3, 4, 4), np.uint8), np.array([1, 10, 2], np.uint8))
    with pytest.raises(DataError, match="label 10 at index 1"):
        load_idx_pair(*paths)


def test_idx_pair_rejects_swapped_files(tmp_path):
    images, labels = write_pair(tmp_path, np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="expected"):
        load_idx_pair(labels, images)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 binary


def cifar_records(labels: list[int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.concatenate([np.array(labels, np.uint8)[:, None], pixels], axis=1).tobytes()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def cifar_members() -> dict[str, bytes]:
    """Three records per batch; batch i has labels i, i+1, i+2 so the order is visible."""
    names = TRAIN_MEMBERS + (TEST_MEMBER,)
    return {name: cifar_records([i, i + 1, i + 2], seed=i) for i, name in enumerate(names)}


def test_cifar_round_trip_and_pixel_layout(tmp_path):
    members = cifar_members()
    # One known pixel: record 1 of the test batch, green plane, row 5, column 7. Offsets from
    # the format description: label byte, then 1024 bytes per plane, 32 per row.
    test_batch = bytearray(members[TEST_MEMBER])
    test_batch[RECORD_BYTES * 1 + 1 + 1024 * 1 + 32 * 5 + 7] = 201
    members[TEST_MEMBER] = bytes(test_batch)
    members = {"cifar-10-batches-bin/readme.html": b"not a batch", **members}
    archive = write_tar(tmp_path / "cifar-10-binary.tar.gz", members)

    train_images, train_labels, test_images, test_labels = read_cifar10_binary(archive)
    assert train_images.shape == (15, 3, 32, 32) and train_images.dtype == torch.uint8
    assert test_images.shape == (3, 3, 32, 32) and test_labels.dtype == torch.int64
    assert train_labels.tolist() == [0, 1, 2, 1, 2, 3, 2, 3, 4, 3, 4, 5, 4, 5, 6]
    assert test_labels.tolist() == [5, 6, 7]
    assert test_images[1, 1, 5, 7] == 201
    first = np.frombuffer(members[TRAIN_MEMBERS[0]][1:RECORD_BYTES], np.uint8)
    assert torch.equal(train_images[0, 2].flatten(), torch.from_numpy(first[2048:].copy()))  # blue plane


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "corrupt or truncated"),
        ("missing", "missing cifar-10-batches-bin/data_batch_3.bin"),
        ("record-size", "not a whole number"),
        ("label", "label 10"),
    ],
)
def test_cifar_damaged_archives(tmp_path, damage, message):
    members = cifar_members()
    if damage == "missing":
        del members[TRAIN_MEMBERS[2]]
    elif damage == "record-size":
        members[TEST_MEMBER] += b"\x00"
    elif damage == "label":
        members[TRAIN_MEMBERS[1]] = cifar_records([0, 10, 1], seed=9)
    archive = write_tar(tmp_path / "cifar-10-binary.tar.gz", members)
    if damage == "truncate":
        archive.write_bytes(archive.read_bytes()[:-4000])
    with pytest.raises(DataError, match=message) as error:
        read_cifar10_binary(archive)
    assert str(archive) in str(error.value)


def test_cifar_not_an_archive(tmp_path):
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_cifar10_binary(write(tmp_path / "cifar-10-binary.tar.gz", b"no archive here"))


# ---------------------------------------------------------------------------------------------
# Downloads, against a loopback HTTP server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL) of an HTTP server on 127.0.0.1 running in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=root))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def serve(root: Path, folder: str, name: str, data: bytes) -> None:
    (root / folder).mkdir(exist_ok=True)
    (root / folder / name).write_bytes(data)


PAYLOAD = b"digits " * 1000


def test_fetch_good_file_with_md5_and_sha256(tmp_path, server):
    root, base = server
    serve(root, "a", "file.bin", PAYLOAD)
    md5, sha256 = hashlib.md5(PAYLOAD).hexdigest(), hashlib.sha256(PAYLOAD).hexdigest()
    remote = RemoteFile("file.bin", [base + "a/"], md5=md5, sha256=sha256)
    cache = tmp_path / "cache" / "set"
    path = fetch(remote, cache, progress=False)
    assert path == cache / "file.bin" and path.read_bytes() == PAYLOAD
    assert file_md5(path) == remote.md5
    assert sorted(p.name for p in cache.iterdir()) == ["file.bin"]


def test_fetch_falls_back_to_the_next_mirror(tmp_path, server):
    root, base = server
    serve(root, "second", "file.bin", PAYLOAD)
    mirrors = [closed_port_url(), base + "first/", base + "second/"]  # refused, 404, good
    remote = RemoteFile("file.bin", mirrors, md5=hashlib.md5(PAYLOAD).hexdigest())
    path = fetch(remote, tmp_path / "cache", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["file.bin"]


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, server):
    root, base = server
    serve(root, "a", "file.bin", PAYLOAD)
    remote = RemoteFile("file.bin", [base + "a/"], md5="0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="wrong checksum"):
        fetch(remote, cache, progress=False)
    assert not cache.exists()  # no temporary file, no wrong file, not even the folder


def test_fetch_failure_keeps_an_existing_folder_and_its_files(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "other.gz").write_bytes(b"kept")
    with pytest.raises(DatasetNotFoundError):
        fetch(RemoteFile("file.bin", [closed_port_url()], md5="0" * 32), cache, progress=False)
    assert [p.name for p in cache.iterdir()] == ["other.gz"]


def test_fetch_everything_unreachable(tmp_path):
    urls = [closed_port_url(), closed_port_url()]
    remotes = [RemoteFile(name, urls, md5="0" * 32) for name in ("one.gz", "two.gz")]
    cache = tmp_path / "cache" / "mnist"
    with pytest.raises(DatasetNotFoundError) as error:
        fetch_missing(remotes, cache, progress=False)
    message = str(error.value)
    for expected in (str(cache), "one.gz", "two.gz", urls[0] + "one.gz", urls[1] + "one.gz"):
        assert expected in message
    assert "DIGITLAB_DATA" in message and "--data-dir" in message
    assert not cache.exists()


def test_a_dangling_link_in_the_way_of_the_data_folder_is_named(tmp_path):
    # The folder is a symbolic link whose (relative) target does not exist: mkdir says only "File exists".
    cache = tmp_path / "data" / "mnist"
    cache.parent.mkdir()
    cache.symlink_to(Path("..") / "shared" / "data" / "mnist")
    remote = RemoteFile("one.gz", [closed_port_url()], md5="0" * 32)
    with pytest.raises(DataError) as error:
        fetch_missing([remote], cache, progress=False)
    message = str(error.value)
    assert f"cannot create the data folder {cache}: {cache} is a symbolic link to ../shared/data/mnist" in message
    assert str(tmp_path / "shared" / "data" / "mnist") in message and "which does not exist" in message
    assert "DIGITLAB_DATA" in message and cache.is_symlink()  # the user's link is left as it is
    # ... and a dangling link further up is found the same way
    with pytest.raises(DataError) as error:
        fetch_missing([remote], cache / "deeper", progress=False)
    assert f"{cache} is a symbolic link to ../shared/data/mnist" in str(error.value)


def test_fetch_missing_skips_present_files(tmp_path):
    cache = tmp_path / "set"
    cache.mkdir()
    (cache / "here.bin").write_bytes(b"x")
    remote = RemoteFile("here.bin", [closed_port_url()], md5="0" * 32)
    assert fetch_missing([remote], cache, progress=False) == [cache / "here.bin"]


def test_remote_file_rejects_paths_and_missing_checksums():
    with pytest.raises(ValueError):
        RemoteFile("../escape.gz", ["http://example.invalid/"], md5="0" * 32)
    with pytest.raises(ValueError):
        RemoteFile("file.gz", ["http://example.invalid/"])


def tiny_mnist(root: Path) -> dict[str, bytes]:
    """Four small MNIST-format files served under mnist/; their gzip bytes by name."""
    rng = np.random.default_rng(1)
    contents = {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(20, dtype=np.uint8) % 10),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(np.arange(10, dtype=np.uint8)),
    }
    files = {name: gzip.compress(data) for name, data in contents.items()}
    for name, data in files.items():
        serve(root, "mnist", name, data)
    return files


def test_load_dataset_downloads_then_reads(tmp_path, server, monkeypatch):
    root, base = server
    files = tiny_mnist(root)
    spec = DATASETS["mnist"]
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    local = tuple(replace(f, mirrors=(base + "mnist/",), md5=md5s[f.filename]) for f in spec.files)
    monkeypatch.setitem(DATASETS, "mnist", replace(spec, files=local))

    data = load_dataset("mnist", data_dir=tmp_path / "data", progress=False)
    assert isinstance(data, Dataset)
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_labels.tolist() == list(range(10))
    assert [row["status"] for row in verify_dataset("mnist", tmp_path / "data")] == ["ok"] * 4
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(files)


def test_load_dataset_without_download_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "fashion-mnist") in message and "t10k-labels-idx1-ubyte.gz" in message
    assert not (tmp_path / "fashion-mnist").exists()


def test_verify_reports_missing_and_mismatch(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"not mnist")
    rows = verify_dataset("mnist", data_dir=tmp_path)
    assert [row["status"] for row in rows] == ["mismatch", "missing", "missing", "missing"]
    assert rows[0]["md5"] == hashlib.md5(b"not mnist").hexdigest() and rows[1]["md5"] is None


# ---------------------------------------------------------------------------------------------
# Data directory and registry


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DIGITLAB_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "digitlab"
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as error:
        load_dataset("nmist")
    for name in dataset_names():
        assert name in str(error.value)


def test_registry_names():
    assert dataset_names()[:4] == ["mnist", "fashion-mnist", "cifar10", "digits8x8"]
    assert {"hwd-1000", "orand-car-a"} <= set(dataset_names())


@pytest.mark.parametrize("name", dataset_names())
def test_registry_entries_are_consistent(name):
    spec = DATASETS[name]
    assert spec.name == name and spec.description and spec.source
    assert len(spec.classes) == 10 == len(set(spec.classes))
    assert len({f.filename for f in spec.files}) == len(spec.files)
    for remote in spec.files:
        assert len(remote.md5 or "") == 32 or len(remote.sha256 or "") == 64
        assert all(url.startswith(("http://", "https://")) for url in remote.urls)
        assert all(base.endswith("/") for base in remote.mirrors)


def test_describe_datasets(tmp_path):
    rows = {row["name"]: row for row in describe_datasets(tmp_path)}
    assert list(rows) == dataset_names()
    assert rows["mnist"]["folder"] == str(tmp_path / "mnist") and not rows["mnist"]["present"]
    assert rows["cifar10"]["image_shape"] == (3, 32, 32) and rows["cifar10"]["num_classes"] == 10
    assert rows["digits8x8"]["present"] and rows["digits8x8"]["files"] == []


def test_cifar10_classes():
    assert CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[-1] == "truck"


def test_digits8x8_offline_fixed_split(tmp_path):
    from sklearn.datasets import load_digits

    data = load_dataset("digits8x8", data_dir=tmp_path / "never-created", download=False)
    assert not (tmp_path / "never-created").exists()
    assert data.train_images.shape == (1437, 1, 8, 8) and data.test_images.shape == (360, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert int(data.train_images.max()) == 255 and int(data.train_images.min()) == 0
    # Stratified: each class has its 20% share in the test split, to within one image.
    everything = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(data.test_labels.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * everything) <= 1)
    # Deterministic: the same split every time.
    again = load_dataset("digits8x8")
    assert torch.equal(again.test_images, data.test_images)
    assert torch.equal(again.train_labels, data.train_labels)
    # Scaled 0..16 -> 0..255 (round(v * 255 / 16), worked out by hand) and split without loss:
    # train + test hold exactly scikit-learn's (image, label) pairs.
    by_hand = np.array([0, 16, 32, 48, 64, 80, 96, 112, 128, 143, 159, 175, 191, 207, 223, 239, 255], "u1")
    reference = load_digits()
    expected = sorted(
        by_hand[image.astype(int)].tobytes() + bytes([label])
        for image, label in zip(reference.images, reference.target)
    )
    got = sorted(
        image.numpy().tobytes() + bytes([int(label)])
        for images, labels in (data.split("train"), data.split("test"))
        for image, label in zip(images, labels)
    )
    assert got == expected
    assert verify_dataset("digits8x8")[0]["status"] == "ok"


# ---------------------------------------------------------------------------------------------
# The real MNIST and Fashion-MNIST files


@pytest.fixture(scope="module")
def mnist(shared_data_dir) -> Dataset:
    return load_dataset("mnist", data_dir=shared_data_dir, download=False)


def test_real_mnist_shapes_and_labels(mnist):
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_labels.dtype == torch.int64
    # Per-class counts as published with the dataset.
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(mnist.train_labels).tolist() == train_counts
    assert torch.bincount(mnist.test_labels).tolist() == test_counts
    assert mnist.classes == tuple("0123456789")


def test_real_mnist_normalisation_constants(mnist):
    # The constants every PyTorch MNIST example uses.
    assert mnist.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert mnist.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_real_mnist_checksums(shared_data_dir):
    rows = verify_dataset("mnist", data_dir=shared_data_dir)
    assert [row["status"] for row in rows] == ["ok"] * 4


def test_real_fashion_mnist(shared_data_dir):
    if not (shared_data_dir / "fashion-mnist").is_dir():
        pytest.skip("no fashion-mnist in the shared data")
    assert [row["status"] for row in verify_dataset("fashion-mnist", shared_data_dir)] == ["ok"] * 4
    data = load_dataset("fashion-mnist", data_dir=shared_data_dir, download=False)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.mean[0] == pytest.approx(0.2860, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# Damaged datasets through load_dataset: a clear error, and the data directory as it was.
# Each case starts from the real MNIST test files; downloads go to the loopback server.


def with_idx(data: bytes, change) -> bytes:
    """A gzipped IDX file with `change` applied to its uncompressed bytes, gzipped again."""
    raw = bytearray(gzip.decompress(data))
    change(raw)
    return gzip.compress(bytes(raw), compresslevel=1)


def flip_middle_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    return bytes(damaged)


def drop_last_label(raw: bytearray) -> None:
    raw[4:8] = struct.pack(">I", 9_999)
    del raw[-1]


def label_ten_at_1234(raw: bytearray) -> None:
    raw[8 + 1234] = 10


# file to damage, damage, the error it must give
DAMAGED_MNIST = {
    "corrupt-gz": ("train-labels-idx1-ubyte.gz", flip_middle_byte, "corrupt or truncated gzip data.*CRC"),
    "truncated-gz": ("t10k-images-idx3-ubyte.gz", lambda data: data[: len(data) // 2], "corrupt or truncated gzip"),
    "wrong-magic": (
        "train-images-idx3-ubyte.gz",
        lambda data: with_idx(data, lambda raw: raw.__setitem__(0, 1)),
        "not an IDX file .magic number 01000803",
    ),
    "count-mismatch": (
        "t10k-labels-idx1-ubyte.gz",
        lambda data: with_idx(data, drop_last_label),
        "holds 10000 images but .* holds 9999 labels",
    ),
    "label-out-of-range": (
        "train-labels-idx1-ubyte.gz",
        lambda data: with_idx(data, label_ten_at_1234),
        "label 10 at index 1234 is out of range 0..9",
    ),
}


@pytest.fixture(scope="module")
def real_mnist_test_files(shared_data_dir) -> dict[str, bytes]:
    """The four MNIST file names holding the real MNIST test set (train = test: small and real)."""
    images = (shared_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
    labels = (shared_data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    return {name: images if "images" in name else labels for name in (f.filename for f in DATASETS["mnist"].files)}


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes): what a test compares before and after."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def serve_as(monkeypatch, root: Path, base: str, name: str, files: dict[str, bytes]) -> None:
    """Serve `files` on loopback as dataset `name`, registered with their own MD5s: the downloads
    verify, so what is tested is the reading of the files and the clean-up after it."""
    spec = DATASETS[name]
    for filename, data in files.items():
        serve(root, name, filename, data)
    local = tuple(
        replace(f, mirrors=(base + name + "/",), md5=hashlib.md5(files[f.filename]).hexdigest()) for f in spec.files
    )
    monkeypatch.setitem(DATASETS, name, replace(spec, files=local))


def assert_refused(name: str, data_dir: Path, damaged_file: str, message: str, download: bool) -> None:
    before = contents(data_dir)
    with pytest.raises(DataError, match=message) as error:
        load_dataset(name, data_dir=data_dir, download=download, progress=False)
    assert str(data_dir / name / damaged_file) in str(error.value)  # names the file, not just the problem
    assert contents(data_dir) == before  # nothing cached, nothing removed
    if not download:
        return
    assert "removed again" in str(error.value)
    assert not (data_dir / name).exists()  # no file, no temporary file, not even the folder


def provide(tmp_path, monkeypatch, server, dataset: str, files: dict, download: bool):
    """An empty data directory, and `files` either served for download or already in it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if download:
        serve_as(monkeypatch, *server, dataset, files)
    else:
        (data_dir / dataset).mkdir()
        for name, data in files.items():
            (data_dir / dataset / name).write_bytes(data)
    return data_dir


@pytest.mark.parametrize("download", [True, False], ids=["downloaded", "already-there"])
@pytest.mark.parametrize("case", list(DAMAGED_MNIST))
def test_damaged_mnist_files_are_refused_and_nothing_is_cached(
    tmp_path, server, monkeypatch, real_mnist_test_files, case, download
):
    filename, damage, message = DAMAGED_MNIST[case]
    files = {**real_mnist_test_files, filename: damage(real_mnist_test_files[filename])}
    data_dir = provide(tmp_path, monkeypatch, server, "mnist", files, download)
    assert_refused("mnist", data_dir, filename, message, download)


@pytest.mark.parametrize("download", [True, False], ids=["downloaded", "already-there"])
def test_truncated_cifar10_archive_is_refused_and_nothing_is_cached(tmp_path, server, monkeypatch, download):
    archive = write_tar(tmp_path / "whole.tar.gz", cifar_members()).read_bytes()
    files = {"cifar-10-binary.tar.gz": archive[: len(archive) * 2 // 3]}
    data_dir = provide(tmp_path, monkeypatch, server, "cifar10", files, download)
    assert_refused("cifar10", data_dir, "cifar-10-binary.tar.gz", "corrupt or truncated archive", download)


def test_a_checksum_mismatch_on_download_caches_nothing(tmp_path, server, shared_data_dir, monkeypatch):
    """The real MNIST files and their published MD5s; the mirror serves the last one cut short.
    The three files that verified are removed again with it: the cache is as it was."""
    root, base = server
    real = {f.filename: (shared_data_dir / "mnist" / f.filename).read_bytes() for f in DATASETS["mnist"].files}
    last = DATASETS["mnist"].files[-1].filename
    for name, data in real.items():
        serve(root, "mnist", name, data[: len(data) // 2] if name == last else data)
    spec = DATASETS["mnist"]
    monkeypatch.setitem(
        DATASETS, "mnist", replace(spec, files=tuple(replace(f, mirrors=(base + "mnist/",)) for f in spec.files))
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(ChecksumError, match=f"could not download {last}") as error:
        load_dataset("mnist", data_dir=data_dir, progress=False)
    assert "wrong checksum" in str(error.value) and spec.files[-1].md5 in str(error.value)
    assert "removed again" in str(error.value)
    assert list(data_dir.iterdir()) == []
