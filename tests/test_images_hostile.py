"""Hostile image files (issue 18): formats digitlab does not read, containers whose embedded images
or tiles are far larger than their headers say, paths that are not files, names that would split
an error line, and commands that must write nothing when one of their inputs fails.

Every input is built here, in tmp_path or in memory; the ones that would allocate (on the code
before the fix) are bounded: they run in a child process with its peak RSS measured and its
address space capped, so that a regression fails the test instead of taking the machine's memory.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from digitlab.cli import main
from digitlab.preprocess import (
    MAX_PIXELS,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    declared_size,
    load_image,
    to_mnist_style,
)
from imagetools import OTHER_FORMAT_MODES, dds_file, huge_png, icns_file, ico_file, png_bytes, png_of_size, tiled_tiff


def digit(size: int = 64) -> np.ndarray:
    """A white ground with a dark bar: enough ink for every entry point to accept."""
    image = np.full((size, size), 255, np.uint8)
    image[size // 4 : -size // 4, size // 2 - 3 : size // 2 + 3] = 0
    return image


def dds_with_bad_flags() -> bytes:
    """The issue's 9 KB DDS: pixel-format flags (bytes 80:84) set to 0."""
    return dds_file(0)


def one_error_line(err: str) -> str:
    """The CLI's stderr, which must be exactly one `digitlab: error:` line."""
    assert err.startswith("digitlab: error:") and err.count("\n") == 1 and err.endswith("\n"), repr(err)
    return err


# --- declared_size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_declared_size_reads_the_header_of_every_accepted_format(tmp_path, fmt):
    data = png_bytes(Image.fromarray(digit()).resize((70, 50)), fmt)
    (tmp_path / "d").write_bytes(data)
    for source in (data, io.BytesIO(data), tmp_path / "d", str(tmp_path / "d"), Image.open(io.BytesIO(data))):
        assert declared_size(source) == (70, 50)
    assert declared_size(np.zeros((50, 70, 3), np.uint8)) == (70, 50)


def test_declared_size_refuses_as_load_image_does_without_decoding():
    bomb = huge_png(20000, 20000)
    with pytest.raises(ImageTooLargeError, match="400,000,000 pixels"):
        declared_size(bomb)
    with pytest.raises(ImageTooLargeError, match="limit of 1,000"):
        declared_size(png_bytes(digit()), max_pixels=1000)
    with pytest.raises(ImageTooLargeError, match="limit"):
        declared_size(png_bytes(digit()), max_bytes=100)
    with pytest.raises(NotAnImageError, match="not an image"):
        declared_size(b"1,2,3\n")
    with pytest.raises(NotAnImageError, match="DDS"):
        declared_size(dds_with_bad_flags())
    # The header only: a PNG cut after its header still has a declared size (load_image refuses it).
    cut = png_bytes(digit())[:60]
    assert declared_size(cut) == (64, 64)
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(cut)
    assert MAX_PIXELS == 40_000_000


# --- formats digitlab does not read ---------------------------------------------------------------


def test_a_dds_with_bad_pixel_format_flags_is_refused_not_a_crash(tmp_path, capsys):
    """Issue 18.4: Pillow raised NotImplementedError (exit 1 with a traceback, 500 for a whole batch)."""
    data = dds_with_bad_flags()
    assert 9000 < len(data) < 10_000
    for source in (data, io.BytesIO(data)):
        with pytest.raises(NotAnImageError, match="not an image digitlab reads .*its format is DDS"):
            to_mnist_style(source)
    (tmp_path / "bad.dds").write_bytes(data)
    assert main(["predict", str(tmp_path / "bad.dds")]) == 2
    assert "DDS" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("fmt", sorted(OTHER_FORMAT_MODES))
def test_other_formats_are_refused_unopened_and_named(fmt):
    data = png_bytes(Image.fromarray(digit()).convert(OTHER_FORMAT_MODES[fmt][0]), fmt)
    with pytest.raises(NotAnImageError, match=r"\(PNG, JPEG, BMP, GIF, TIFF or WebP\)") as error:
        load_image(data)
    # Named where a signature says what it is (TGA, DIB, SPIDER and IM have none Pillow checks).
    assert fmt in str(error.value) or "its first bytes are" in str(error.value)


@pytest.mark.parametrize("wrap", [ico_file, icns_file])
def test_ico_and_icns_are_refused_before_their_embedded_png_is_decoded(wrap):
    """Issue 18.8: the directory says 256x256; Pillow decoded the embedded PNG, whatever its size."""
    with pytest.raises(NotAnImageError, match="ICO|ICNS"):
        load_image(wrap(png_of_size(13376, 13376, "RGBA", rows=4)))  # 179 MP declared, cut short
    with pytest.raises(NotAnImageError, match="ICO|ICNS"):
        declared_size(wrap(png_of_size(32, 32, "L")))


# --- TIFF tiles ------------------------------------------------------------------------------------


def test_a_tiff_tile_larger_than_its_image_is_refused_before_decoding():
    """Issue 18.8: 100x100 declaring one 32768x32768 tile took `digitlab predict` to 1,509 MB."""
    with pytest.raises(ImageTooLargeError, match="tiles of 32768x32768 = 1,073,741,824 pixels"):
        load_image(tiled_tiff(100, 100, 32768, 32768))
    for compression in (1, 8):  # under the pixel limit, but far larger than the image
        with pytest.raises(ImageTooLargeError, match="tiles of 1024x1024 pixels for a 100x100 image"):
            declared_size(tiled_tiff(100, 100, 1024, 1024, compression=compression))
    with pytest.raises(ImageError, match="damaged: its tiles"):
        load_image(tiled_tiff(100, 100, 0, 112))


@pytest.mark.parametrize("tile", [112, 256])  # rounded up to 16 pixels; tiffcp's 256x256 for any image
def test_tiles_as_writers_make_them_are_read(tile):
    pixels = np.zeros((tile, tile), np.uint8)
    pixels[:100, :100] = 255 - digit(100)  # dark ground, a bright bar
    grey = load_image(tiled_tiff(100, 100, tile, tile, pixels.tobytes()))
    assert grey.shape == (100, 100) and np.array_equal(np.round(grey * 255).astype(np.uint8), pixels[:100, :100])


# --- what Pillow raises on pixels ------------------------------------------------------------------


def test_a_closed_pil_image_gives_an_image_error():
    """Pillow raises what it likes from load(): here an image whose file was closed."""
    image = Image.open(io.BytesIO(png_bytes(digit())))
    image.close()
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(image)


# --- paths that are not image files ----------------------------------------------------------------


def in_a_thread(call, seconds: float = 10):
    """call()'s exception (or None), or a failed test if it blocks: a FIFO with no writer would."""
    outcome = []

    def run():
        try:
            call()
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 -- returned to the test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    return outcome[0]


def test_paths_that_are_not_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    for path, message in [
        ("/proc/self/mem", "could not be read: Input/output error"),
        (tmp_path / "fifo.png", "is not a regular file"),
        ("/dev/zero", "is not a regular file"),
        (tmp_path, r"no such file \(it is a directory\)"),
    ]:
        for call in (load_image, declared_size):
            error = in_a_thread(lambda call=call, path=path: call(path))
            assert isinstance(error, ImageError) and str(path) in str(error), (path, error)
            assert re.search(message, str(error)), error


def test_a_folders_entries_that_are_not_regular_files_are_left_out_unopened(tmp_path, capsys):
    """A folder given to predict: a FIFO named like an image (opening it to read would wait for a
    writer), a link to /dev/zero and a subfolder named x.png are left out; the digit is read."""
    folder = tmp_path / "in\nbox"  # a newline in its name: the count stays on one line
    folder.mkdir()
    Image.fromarray(digit()).save(folder / "a.png")
    os.mkfifo(folder / "fifo.png")
    os.symlink("/dev/zero", folder / "zero.png")
    (folder / "x.png").mkdir()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(main(["predict", "--json", str(folder)])), daemon=True)
    thread.start()
    thread.join(60)
    assert outcome == [0], "blocked or failed"
    captured = capsys.readouterr()
    assert [row["image"] for row in json.loads(captured.out)] == [str(folder / "a.png")]
    assert captured.err == f"{tmp_path}/in\\nbox: 1 image (3 other entries left out)\n"


def test_predict_proc_self_mem_exits_2(capsys):
    assert main(["predict", "/proc/self/mem"]) == 2
    assert "/proc/self/mem" in one_error_line(capsys.readouterr().err)


# --- the CLI: one line, and nothing written by a command that fails ----------------------------------


def test_a_name_with_a_newline_stays_on_one_line(tmp_path, capsys):
    path = tmp_path / "bad\nname\x1b[2J.png"
    path.write_bytes(b"this is not an image\n")
    assert main(["predict", str(path)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "bad\\nname\\x1b[2J.png" in err
    # The last guard, in main: a message built elsewhere with the name as it is (evaluate's).
    assert main(["evaluate", str(tmp_path / "no\nrun")]) == 2
    assert "no\\nrun" in one_error_line(capsys.readouterr().err)


def test_predict_writes_nothing_when_one_input_fails(tmp_path, capsys):
    Image.fromarray(digit()).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(dds_with_bad_flags())
    seen = tmp_path / "seen"
    good, bad = str(tmp_path / "a.png"), str(tmp_path / "bad.png")
    assert main(["predict", "--json", "--show-input", str(seen), good, bad]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err)
    assert captured.out == "" and not seen.exists()
    assert main(["predict", "--json", "--show-input", str(seen), good]) == 0
    assert [row["model_input"] for row in json.loads(capsys.readouterr().out)] == [str(seen / "a-28x28.png")]
    assert sorted(p.name for p in seen.iterdir()) == ["a-28x28.png"]


def test_read_annotate_writes_nothing_when_one_input_fails(tmp_path, capsys):
    Image.fromarray(digit(200)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(png_bytes(digit())[:60])  # truncated
    out = tmp_path / "out.png"
    assert main(["read", "--annotate", str(out), str(tmp_path / "a.png"), str(tmp_path / "b.png")]) == 2
    one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_two_inputs_with_one_output_name_are_refused_before_writing(tmp_path, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        Image.fromarray(digit()).save(tmp_path / folder / "a.png")
    seen = tmp_path / "seen"
    assert main(["predict", "--show-input", str(seen), str(tmp_path / "x/a.png"), str(tmp_path / "y/a.png")]) == 2
    assert "a-28x28.png" in one_error_line(capsys.readouterr().err) and not seen.exists()


def test_no_decoder_message_is_printed_above_the_error(tmp_path):
    """A TIFF whose tag lies past its end (Pillow warns "Truncated File Read") and whose tile data is
    damaged (libtiff prints "ZIPDecode: Decoding error ..."): stderr is digitlab's one line only."""
    data = bytearray(tiled_tiff(100, 100, 112, 112, np.arange(4096, dtype=np.uint8).tobytes()))
    entry = 10 + 12 * 5  # the sixth tag, SamplesPerPixel (1, the default): now Software, 100 bytes at 1 MB
    assert struct.unpack("<H", data[entry : entry + 2]) == (277,)
    data[entry : entry + 12] = struct.pack("<HHII", 305, 2, 100, 1_000_000)
    data[-10] ^= 0xFF
    (tmp_path / "bad.tif").write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "predict", str(tmp_path / "bad.tif")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "damaged or truncated" in one_error_line(result.stderr)


# --- memory: the bombs in a child process, its peak RSS measured and its address space capped --------

CHILD = """
import json, resource, sys
from digitlab.preprocess import load_image

def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

cap = (kib("VmSize:") + 768 * 1024) * 1024  # a regression fails with MemoryError, not the machine
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = {}
for path in sys.argv[1:]:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = kib("VmRSS:")
    try:
        load_image(path)
        outcome = "accepted"
    except BaseException as err:
        outcome = type(err).__name__ + ": " + str(err)
    results[path] = {"outcome": outcome, "growth_mib": (kib("VmHWM:") - before) / 1024}
print(json.dumps(results))
"""


def test_the_bombs_of_issue_18_cost_no_memory(tmp_path):
    """Before: the 32768x32768 tile took 1,509 MB, an ICO's 179 MP PNG 1,166 MB. Here an ICO and an
    ICNS holding a 4000x4000 RGBA PNG (64 MB decoded, 1 KB on disk) and the issue's TIFF."""
    cases = {
        "tile.tif": (tiled_tiff(100, 100, 32768, 32768), "ImageTooLargeError"),
        "tile-4096.tif": (tiled_tiff(100, 100, 4096, 4096), "ImageTooLargeError"),
        "big.ico": (ico_file(png_of_size(4000, 4000, "RGBA")), "NotAnImageError"),
        "big.icns": (icns_file(png_of_size(4000, 4000, "RGBA")), "NotAnImageError"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *(str(tmp_path / name) for name in cases)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    for name, (_, expected) in cases.items():
        row = measured[str(tmp_path / name)]
        assert row["outcome"].startswith(expected + ":") and row["growth_mib"] < 16, (name, row)
