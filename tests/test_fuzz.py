"""`digitlab bench fuzz` in short: generated damaged files through the IDX reader and the image path
end in digitlab's own errors only; and each input the full fuzz found, as a regression test."""

from __future__ import annotations

import gzip
import io
import json
import struct
import time

import cv2
import numpy as np
import pytest
from PIL import Image

import digitlab
from digitlab.bench import fuzz
from digitlab.bench.fuzz import bench_fuzz
from digitlab.data.idx import read_idx
from digitlab.errors import ConfigError, DataError
from digitlab.preprocess import ImageError, center_digit


@pytest.fixture(scope="module")
def model():
    return digitlab.load_model()


def test_short_fuzz_finds_only_digitlab_errors(tmp_path):
    """2,300 inputs, the same targets and entry points as the full run (BENCHMARKS.md); about 30 s."""
    reports = [
        bench_fuzz(
            examples,
            seed=1,
            targets=(target,),
            results=tmp_path / f"{target}.json",
            markdown=tmp_path / "BENCHMARKS.md",
            failures=tmp_path / "failures",
            progress=False,
        )
        for target, examples in (("idx", 2000), ("image", 300))
    ]
    for report in reports:
        (row,) = report["targets"]
        assert row["failures"] == [] and report["failures"] == 0, row["failures"]
        assert row["examples"] == report["examples"] and row["examples"] in (2000, 300)
        for counts in row["outcomes"].values():
            assert sum(counts.values()) == row["examples"] and "FAILURE" not in counts
            assert 0 < counts.get("accepted", 0) < row["examples"]  # some read, some refused
        assert row["max_seconds_per_input"] < 30 and row["peak_rss_mib"] < 4096
    assert json.loads((tmp_path / "image.json").read_text())["targets"][0]["target"] == "image"
    assert "<!-- bench fuzz: begin -->" in (tmp_path / "BENCHMARKS.md").read_text()
    assert not (tmp_path / "failures").exists()


def test_an_input_over_the_time_limit_is_reported_as_a_hang_with_its_input(tmp_path):
    """With a 1 ms limit some image takes longer: faulthandler ends the worker, and the parent
    reports a hang, where it was, and the input it was running."""
    report = bench_fuzz(
        50,
        seed=1,
        targets=("image",),
        time_limit=0.001,
        results=None,
        markdown=None,
        failures=tmp_path / "failures",
        progress=False,
    )
    (row,) = report["targets"]
    (hang,) = row["failures"]
    assert hang["entry"] == "(process)" and hang["error"] == "hang"
    # the innermost frame; a full-suite run on the loaded 2 cores once found a dump with a "Timeout"
    # and no frame in it (the watchdog fired where no Python code ran): faulthandler's words stand in
    assert hang["where"].startswith(("File ", "<no Python frame>", "(no frame in"))
    (saved,) = hang["inputs"]
    assert saved.startswith(str(tmp_path / "failures")) and row["examples"] < 50
    assert report["failures"] == 1


def test_where_a_hang_was_is_read_from_faulthandlers_dump():
    dump = 'Timeout (0:00:00.001)!\nThread 0x7f01 (most recent call first):\n  File "a.py", line 3 in f\n  File "b.py"'
    assert fuzz._innermost_frame(dump) == 'File "a.py", line 3 in f'
    assert (
        fuzz._innermost_frame("Timeout (0:00:00.001)!\nThread 0x7f01 (most recent call first):\n  <no Python frame>\n")
        == "<no Python frame>"
    )
    assert fuzz._innermost_frame("Timeout (0:00:00.001)!\n") == "(no frame in faulthandler's dump)"


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="unknown fuzz target"):
        bench_fuzz(10, targets=("pdf",), results=None, markdown=None)
    with pytest.raises(ConfigError, match="at least 3"):
        bench_fuzz(1, results=None, markdown=None)


# --- what the full fuzz found ----------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_empty_idx_array_with_impossible_dimensions_is_a_data_error(tmp_path, gzipped):
    """16 bytes announcing (0, 2^32 - 1, 2^32 - 1) uint8 claim no data, and numpy's reshape raised
    ValueError ("array is too big")."""
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1)
    path = tmp_path / "empty.idx"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.raises(DataError, match="impossible IDX shape"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0, 28, 28))
    assert read_idx(path).shape == (0, 28, 28)  # an empty array of sensible shape still reads


def seven(side: int = 80) -> np.ndarray:
    image = np.full((side, side), 255, np.uint8)
    cv2.line(image, (side // 4, side // 5), (3 * side // 4, side // 5), 0, side // 12)
    cv2.line(image, (3 * side // 4, side // 5), (2 * side // 5, 6 * side // 7), 0, side // 12)
    return image


def test_a_cielab_tiff_reads(model):
    """Pillow cannot convert LAB to grey: load_image raised ValueError on a CIELAB TIFF. Its L band is the grey."""
    buffer = io.BytesIO()
    Image.fromarray(seven()).convert("LAB").save(buffer, "TIFF")
    assert digitlab.predict(buffer.getvalue(), model)[0].digit == "7"


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_a_damaged_exif_block_costs_only_the_orientation(model, fmt):
    """A WebP whose EXIF block was the 4 bytes 'II*\\0' (a TIFF header cut short): Pillow's EXIF
    parser raised struct.error through predict and read. The pixels are whole: read them as stored."""
    buffer = io.BytesIO()
    Image.fromarray(seven()).convert("RGB").save(buffer, fmt, exif=b"Exif\x00\x00II*\x00")
    assert digitlab.predict(buffer.getvalue(), model)[0].digit == "7"
    assert digitlab.read(buffer.getvalue(), model).text == "7"


def test_strokes_thousands_of_times_thinner_than_the_digit_are_shaped_in_bounded_time():
    """A 17 KB JPEG whose header claimed 20915x873 pixels decoded to hairlines 1/3500 of the digit's
    length: center_digit dilated a 1890x8162 working image with an 823-pixel disc for 157 s. Here a
    2-pixel line across 8000 pixels, which took minutes the same way."""
    ink = np.zeros((300, 8000), np.float32)
    cv2.line(ink, (50, 150), (7950, 140), 1.0, 2)
    cv2.line(ink, (7950, 140), (7900, 280), 1.0, 2)
    started = time.perf_counter()
    digit = center_digit(ink)
    assert time.perf_counter() - started < 3
    assert digit.max() == 255 and (digit > 128).sum() > 20  # the strokes are kept, thickened to MNIST's


def test_reading_a_strip_thinner_than_its_reduction_gives_no_lines(model):
    """A 4x34464 image is reduced to MAX_SIDE across: 0 pixels high, which cv2.resize refused (cv2.error)."""
    strip = np.full((4, 34464), 255, np.uint8)
    strip[1:3, 100:200] = 0
    reading = digitlab.read(strip, model)
    assert reading.lines == [] and (reading.width, reading.height) == (34464, 4)


def test_reading_noise_is_refused_quickly(model):
    """Specks of noise read as thousands of candidate digits at ~6 ms each (a 300x304 image: 14 s)."""
    image = np.full((300, 300), 30, np.uint8)
    for y, x in np.random.default_rng(0).integers(2, 296, (2000, 2)):
        image[y : y + 3, x : x + 3] = 220
    cv2.line(image, (105, 145), (145, 190), 220, 9)
    started = time.perf_counter()
    with pytest.raises(ImageError, match="candidate digits, more than the 500"):
        digitlab.read(image, model)
    assert time.perf_counter() - started < 3
