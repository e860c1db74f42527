"""Reading digit strings in pages: segmentation against synthetic pages with known truth, the
reader end to end with a small trained model, JSON, annotation, and the page generator."""

import difflib
import json

import cv2
import numpy as np
import pytest

import digitlab
from digitlab.data.synth import make_page, make_pages, render_digit
from digitlab.errors import WriteError
from digitlab.preprocess import load_image
from digitlab.read import (
    MAX_SIDE,
    SURE_COLOUR,
    UNSURE_COLOUR,
    Reading,
    annotate,
    read,
    save_annotation,
    segment_digits,
)
from digitlab.read.annotation import READABLE_SIDE, drawing_scale
from digitlab.read.marks import digit_marks

PAPER, INK = 235.0, 30.0  # grey levels of the pages composed here


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(mnist):
    """MNIST test digits as numpy: (images (10000, 28, 28) uint8, labels (10000,))."""
    return mnist.test_images[:, 0].numpy(), mnist.test_labels.numpy()


@pytest.fixture(scope="module")
def reader_model(mnist, tmp_path_factory):
    """digitnet trained for one epoch on 20,000 MNIST images (about 99% on the test set)."""
    run = digitlab.train(
        "digitnet",
        epochs=1,
        subset=20000,
        dataset=mnist,
        out=tmp_path_factory.mktemp("runs"),
        progress=False,
        evaluate_after=False,
    )
    return digitlab.load_model(run.path)


def nth_digit(digits, label: int, n: int = 0) -> np.ndarray:
    """The n-th MNIST test image of a digit."""
    images, labels = digits
    return images[np.flatnonzero(labels == label)[n]]


def compose(size: tuple[int, int], placements) -> np.ndarray:
    """A float grey page (dark ink on light paper) with each (alpha, x, y) placed at (x, y)."""
    height, width = size
    ink = np.zeros((height, width), np.float32)
    for alpha, x, y in placements:
        h, w = alpha.shape
        np.maximum(ink[y : y + h, x : x + w], alpha, out=ink[y : y + h, x : x + w])
    return ((PAPER - (PAPER - INK) * ink) / 255).astype(np.float32)


def write_row(digits, labels: str, height: int = 40, gap: float = 0.5, x: int = 30, y: int = 30, shear: float = 0.0):
    """Placements writing `labels` left to right, `gap` digit heights apart, bottoms aligned."""
    placements = []
    for k, label in enumerate(labels):
        alpha = render_digit(nth_digit(digits, int(label), k), height, shear)
        placements.append((alpha, x, y + height - alpha.shape[0]))
        x += alpha.shape[1] + round(gap * height)
    return placements, x


def grey(page: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(page, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255


def counts(lines) -> list[int]:
    return [len(line) for line in lines]


def overlap(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# --- segmentation -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_segments_match_a_generated_pages_lines_digits_and_boxes(digits, seed):
    page, truth = make_page(np.random.default_rng(seed), digits, touching=False, ruled=False)
    lines = segment_digits(grey(page))
    assert counts(lines) == [len(s) for s in truth.lines]
    for found, boxes in zip(lines, truth.boxes, strict=True):
        assert "mark" not in {s.kind for s in found}  # 'touching' (a wide digit) is the reader's to judge
        assert all(overlap(s.box, box) > 0.5 for s, box in zip(found, boxes, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_ruled_lines_and_margins_are_removed(digits, seed):
    page, truth = make_page(np.random.default_rng(100 + seed), digits, touching=False, ruled=True, n_lines=2)
    assert counts(segment_digits(grey(page))) == [len(s) for s in truth.lines]


def test_two_lines_read_top_to_bottom(digits):
    first, _ = write_row(digits, "0123", y=30)
    second, _ = write_row(digits, "56789", y=110)
    lines = segment_digits(compose((180, 400), first + second))
    assert counts(lines) == [4, 5]
    assert lines[0][0].box[1] < lines[1][0].box[1]


def test_wide_gaps_stay_in_one_line(digits):
    left, x = write_row(digits, "12", gap=0.3)
    right, _ = write_row(digits, "345", gap=1.0, x=x + 100)  # 2.5 digit heights after the 2
    assert counts(segment_digits(compose((110, x + 400), left + right))) == [5]


def test_a_column_of_digits_gives_one_line_per_digit_top_to_bottom(digits):
    page, truth = make_page(
        np.random.default_rng(7), digits, n_lines=6, n_digits=1, line_gap=0.4, drift=0.0, touching=False, ruled=False
    )
    lines = segment_digits(grey(page))
    assert counts(lines) == [1] * 6
    assert [line[0].box[1] for line in lines] == sorted(line[0].box[1] for line in lines)


def test_diagonal_writing_is_one_line_along_the_slant(digits):
    height, placements = 40, []
    for k, label in enumerate("237845"):  # each digit 1.2 digit heights right and 0.6 lower
        alpha = render_digit(nth_digit(digits, int(label)), height, 0.0)
        placements.append((alpha, 30 + round(k * 1.2 * height), 20 + round(k * 0.6 * height)))
    lines = segment_digits(compose((230, 370), placements))
    assert counts(lines) == [6]
    assert [s.box[0] for s in lines[0]] == sorted(s.box[0] for s in lines[0])


def test_a_line_drifting_upwards_stays_one_line(digits):
    page, truth = make_page(
        np.random.default_rng(3), digits, n_lines=2, n_digits=8, drift=-0.1, touching=False, ruled=False, line_gap=1.2
    )
    assert counts(segment_digits(grey(page))) == [8, 8]


@pytest.mark.parametrize("seed", range(3))
def test_uneven_lighting(digits, seed):
    page, truth = make_page(np.random.default_rng(200 + seed), digits, lighting=0.6, touching=False, ruled=False)
    assert counts(segment_digits(grey(page))) == [len(s) for s in truth.lines]


def five_with_a_detached_bar(gap: int) -> np.ndarray:
    """A 5 drawn with a pen, 60 px high, its top bar `gap` pixels above the rest."""
    page = np.full((120, 120), 235, np.uint8)
    cv2.line(page, (45, 30), (80, 30), 30, 6)  # the bar
    stem_top = 30 + 3 + gap + 3  # below the bar's lower edge (the line is 6 px thick)
    cv2.line(page, (45, stem_top), (43, 58), 30, 6)
    cv2.ellipse(page, (58, 72), (18, 16), 0, -150, 150, 30, 6)  # the bowl, open on the left
    return page.astype(np.float32) / 255


@pytest.mark.parametrize("gap", [2, 3])
def test_a_five_with_a_detached_bar_is_one_digit(gap):
    image = five_with_a_detached_bar(gap)
    count, _ = cv2.connectedComponents((image < 0.5).astype(np.uint8))
    assert count - 1 == 2  # drawn as two pieces
    (line,) = segment_digits(image)
    (five,) = line
    x, y, w, h = five.box
    assert y <= 28 and y + h >= 86 and five.kind == "digit"


def test_a_dash_is_a_mark(digits):
    left, x = write_row(digits, "12")
    dash = np.ones((5, 60), np.float32)
    right, _ = write_row(digits, "34", x=x + 90)
    lines = segment_digits(compose((110, x + 260), left + [(dash, x + 10, 48)] + right))
    # (a digit a little wider than high may be 'touching': `read` then tries cuts)
    assert [s.kind == "mark" for s in lines[0]] == [False, False, True, False, False]


def test_a_blank_page_has_no_lines():
    rng = np.random.default_rng(0)
    paper = np.clip(0.9 + rng.normal(0, 0.01, (200, 300)), 0, 1).astype(np.float32)
    assert segment_digits(paper) == []


# --- reading with a model -----------------------------------------------------------------


def test_touching_pairs_are_split_and_read(digits, reader_model):
    touching = right = 0
    for pair in ["38", "57", "20", "64", "91", "45", "83", "06", "72", "59", "17", "42"]:
        placements, _ = write_row(digits, pair, gap=-0.1)
        image = compose((110, 200), placements)
        ink = (PAPER / 255 - image) / ((PAPER - INK) / 255)
        count, _ = cv2.connectedComponents((ink > 0.3).astype(np.uint8))
        if count - 1 != 1:
            continue  # these two happen not to touch: not what this test is about
        touching += 1
        right += read(image, reader_model).text == pair
    assert touching >= 6
    assert right >= touching - 2


@pytest.mark.parametrize(
    "mark, at_y, text",
    [
        (np.ones((5, 30), np.float32), 48, "12-34"),  # a short dash mid-line
        (np.ones((5, 80), np.float32), 48, "12?34"),  # a bar twice as long as a digit is high: no punctuation
        (cv2.circle(np.zeros((11, 11), np.float32), (5, 5), 4, 1.0, -1), 58, "12.34"),  # a dot on the baseline
        (cv2.ellipse(np.zeros((13, 7), np.float32), (3, 6), (2, 5), 10, 0, 360, 1.0, -1), 62, "12,34"),  # a comma
        (cv2.circle(np.zeros((11, 11), np.float32), (5, 5), 4, 1.0, -1), 30, "12?34"),  # a dot up high: unsure
    ],
)
def test_marks_read_as_punctuation_or_unsure(digits, reader_model, mark, at_y, text):
    left, x = write_row(digits, "12")
    right, _ = write_row(digits, "34", x=x + 100)
    reading = read(compose((110, x + 270), left + [(mark, x + 10, at_y)] + right), reader_model)
    assert reading.text == text
    assert reading.lines[0].digits[2].confidence == 0.0  # a mark is not shown to the model


def test_the_detached_five_reads_as_five(reader_model):
    assert read(five_with_a_detached_bar(3), reader_model).text == "5"


def test_generated_pages_are_read_end_to_end(digits, reader_model):
    pages = make_pages(20, seed=1, images=digits[0], labels=digits[1])
    lines = right_lines = total = right = sure = sure_right = 0
    for page, truth in pages:
        reading = read(page, reader_model, unsure_below=0.0)
        assert len(reading.lines) == len(truth.lines)
        for line, want in zip(reading.lines, truth.lines, strict=True):
            lines += 1
            right_lines += line.text == want
            total += len(want)  # digits read right, in order: a missed or extra digit costs one
            right += sum(block.size for block in difflib.SequenceMatcher(None, want, line.text).get_matching_blocks())
            if len(line.text) == len(want):
                for digit, label in zip(line.digits, want, strict=True):
                    sure += digit.confidence >= 0.6  # what the default unsure_below=0.6 keeps
                    sure_right += digit.confidence >= 0.6 and digit.text == label
    # Measured with this fixture's model: 98.2% of digits, 36 of 41 lines (digitnet trained for
    # 2 epochs on all of MNIST: 98.6% and 94% on 200 pages).
    assert right / total >= 0.96
    assert right_lines / lines >= 0.8
    assert sure / total >= 0.85 and sure_right / sure >= 0.99  # what it is sure of is right


def test_unsure_digits_read_as_question_marks_with_their_candidates(digits, reader_model):
    placements, _ = write_row(digits, "47")
    image = compose((110, 160), placements)
    sure = read(image, reader_model)
    unsure = read(image, reader_model, unsure_below=1.0)
    assert unsure.text == "??"
    for a, b in zip(sure.lines[0].digits, unsure.lines[0].digits, strict=True):
        assert a.candidates == b.candidates and a.box == b.box
        assert b.candidates[0][0] == a.text


def test_reading_json_structure(digits, reader_model):
    page, truth = make_page(np.random.default_rng(5), digits, n_lines=2, touching=False)
    reading = read(page, reader_model)
    data = json.loads(json.dumps(reading.to_json()))
    assert data["width"] == page.shape[1] and data["height"] == page.shape[0]
    assert data["text"] == reading.text == "\n".join(line["text"] for line in data["lines"])
    for line in data["lines"]:
        assert line["text"] == "".join(d["text"] for d in line["digits"])
        x, y, w, h = line["box"]
        for d in line["digits"]:
            dx, dy, dw, dh = d["box"]
            assert x <= dx and y <= dy and dx + dw <= x + w and dy + dh <= y + h
            assert len(d["candidates"]) == 3
            probabilities = [p for _, p in d["candidates"]]
            assert probabilities == sorted(probabilities, reverse=True)
            assert d["confidence"] == pytest.approx(probabilities[0], abs=1e-4)


def test_boxes_are_in_the_original_pixels_of_a_large_image(digits, reader_model):
    placements, x = write_row(digits, "30517", height=300, gap=0.4, x=200, y=400)
    image = compose((1100, x + 200), placements)  # wider than 2000 px: read at a smaller scale
    assert image.shape[1] > 2000
    reading = read(image, reader_model, unsure_below=0.0)
    assert reading.text == "30517"
    for digit, (alpha, px, py) in zip(reading.lines[0].digits, placements, strict=True):
        assert overlap(digit.box, (px, py, alpha.shape[1], alpha.shape[0])) > 0.8


def test_a_blank_image_reads_as_nothing(reader_model):
    reading = read(np.full((100, 100), 0.9, np.float32), reader_model)
    assert reading.lines == [] and reading.text == ""


# --- annotation -------------------------------------------------------------------------


def test_annotate_draws_boxes_on_an_rgb_copy(digits, reader_model):
    page, _ = make_page(np.random.default_rng(11), digits, n_lines=1, touching=False)
    bottom = max(0, READABLE_SIDE - page.shape[0])  # paper below it: drawn at its own size
    page = cv2.copyMakeBorder(page, 0, bottom, 0, 0, cv2.BORDER_CONSTANT, value=page[0, 0].tolist())
    reading = read(page, reader_model)
    drawn = annotate(page, reading)
    assert drawn.shape == page.shape and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, page)
    for digit in reading.lines[0].digits:
        x, y, w, h = digit.box
        colour = UNSURE_COLOUR if digit.text == "?" else SURE_COLOUR
        assert (drawn[y, x : x + w] == colour).all()  # the box's top edge


def test_save_annotation_writes_a_png_atomically(tmp_path, digits, reader_model):
    page, _ = make_page(np.random.default_rng(12), digits, n_lines=2)
    reading = read(page, reader_model)
    path = save_annotation(tmp_path / "seen.png", page, reading)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), annotate(page, reading))
    assert [p.name for p in tmp_path.iterdir()] == ["seen.png"]


@pytest.fixture(scope="module")
def usps_digit(shared_data_dir):
    """A real 16x16 USPS test digit (a 6), dark ink on white, and its reading by the bundled model."""
    path = shared_data_dir / "real-digits" / "usps" / "png" / "0001.png"
    return path, read(str(path), digitlab.load_model())


def test_a_16x16_scan_is_annotated_enlarged_with_its_box_scaled(usps_digit):
    path, reading = usps_digit
    assert (reading.width, reading.height) == (16, 16) and reading.text == "6"
    drawn = annotate(str(path), reading)
    k = round(drawing_scale(16, 16))
    assert k == 16  # 256 pixels across: each pixel of the scan a 16x16 square
    top = drawn.shape[0] - 16 * k  # a white margin above the image, for the label
    assert drawn.shape[1] == 256 and top > 0 and (drawn[: top // 2] == 255).all()
    x, y, w, h = (round(v * k) for v in reading.lines[0].digits[0].box)
    assert (drawn[top + y + h - 1, x : x + w] == SURE_COLOUR).all()  # the box's bottom edge, scaled
    scan = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    image = drawn[top:]
    inside = image[y + 4 : y + h - 4, x + 4 : x + w - 4]  # the digit itself: the scan, pixel for pixel
    assert np.array_equal(inside, np.kron(scan, np.ones((k, k, 1), np.uint8))[y + 4 : y + h - 4, x + 4 : x + w - 4])
    above = drawn[: top + y - 1]  # the margin, and the scan's rows above the box
    assert (np.abs(above.astype(int) - SURE_COLOUR).sum(axis=2) < 60).sum() > 100  # the '6' drawn there


def test_confidences_are_drawn_when_asked(usps_digit):
    path, reading = usps_digit
    plain, with_confidence = annotate(str(path), reading), annotate(str(path), reading, confidence=True)
    assert with_confidence.shape[0] > plain.shape[0]  # a margin below as well, for the '100%'
    top, k = plain.shape[0] - 256, 16
    _, y, _, h = reading.lines[0].digits[0].box
    end = top + (y + h) * k  # the box's bottom edge: the same above it, the '100%' under it
    assert np.array_equal(with_confidence[:end], plain[:end])

    def green(rows):
        return (np.abs(rows.astype(int) - SURE_COLOUR).sum(axis=2) < 60).sum()

    assert green(with_confidence[end:]) > green(plain[end:]) + 50


def test_a_large_image_keeps_its_size(digits, reader_model):
    assert drawing_scale(300, 256) == 1 and drawing_scale(3000, 2000) == 1
    assert drawing_scale(4000, 3000, max_side=1600) == 0.4
    assert drawing_scale(123, 40) == 7 and drawing_scale(16, 3000) == 1  # a long strip: no more than 2000 px


@pytest.mark.parametrize("suffix, magic", [(".jpg", b"\xff\xd8\xff"), (".webp", b"RIFF"), (".tif", b"II*\x00")])
def test_save_annotation_writes_the_format_its_extension_names(tmp_path, usps_digit, suffix, magic):
    path, reading = usps_digit
    saved = save_annotation(tmp_path / f"seen{suffix}", str(path), reading)
    assert saved.read_bytes().startswith(magic)
    assert cv2.imread(str(saved)).shape == annotate(str(path), reading).shape


@pytest.mark.parametrize("name, message", [("seen.gif", "ends with '.gif'"), ("missing/seen.png", "does not exist")])
def test_save_annotation_refuses_what_it_cannot_write_and_writes_nothing(tmp_path, usps_digit, name, message):
    path, reading = usps_digit
    with pytest.raises(WriteError, match=message):
        save_annotation(tmp_path / name, str(path), reading)
    assert list(tmp_path.iterdir()) == []


# --- several digits in one image (read.marks) ---------------------------------------------------


def test_photos_of_digit_strings_count_their_digits(shared_data_dir):
    """The shared photos: 8 strings written along one line, one single digit, one column."""
    photos = shared_data_dir / "real-digits" / "photos"
    labels = {
        row.split(",")[0]: row.split(",")[1]
        for row in (shared_data_dir / "real-digits" / "labels.csv").read_text().splitlines()[1:]
    }
    for photo in sorted(photos.iterdir()):
        count = digit_marks(load_image(str(photo)), MAX_SIDE)
        label = labels[f"photos/{photo.name}"]
        column = photo.name == "vinay0410_numbers2.jpg"  # one digit a line: not side by side
        assert count == (0 if len(label) == 1 or column else len(label)), (photo.name, label, count)


def test_single_digits_count_no_marks_side_by_side(digits):
    images, _ = digits
    counts = [digit_marks(image.astype(np.float32) / 255, MAX_SIDE) for image in images[:2000]]
    assert counts == [0] * 2000
    big = cv2.resize(255 - images[0], (600, 600), interpolation=cv2.INTER_CUBIC)  # dark on white, drawn large
    assert digit_marks(big.astype(np.float32) / 255, MAX_SIDE) == 0
    assert digit_marks(np.ones((50, 50), np.float32), MAX_SIDE) == 0  # blank


def test_annotate_refuses_a_reading_of_another_image(digits):
    page, _ = make_page(np.random.default_rng(13), digits, n_lines=1)
    with pytest.raises(digitlab.DigitlabError, match="reading is of"):
        annotate(page, Reading([], page.shape[1] + 1, page.shape[0]))


# --- the page generator -------------------------------------------------------------------


def test_make_pages_is_deterministic_and_varied(digits):
    first = make_pages(5, seed=3, images=digits[0], labels=digits[1])
    again = make_pages(5, seed=3, images=digits[0], labels=digits[1])
    other = make_pages(5, seed=4, images=digits[0], labels=digits[1])
    for (a, ta), (b, tb) in zip(first, again, strict=True):
        assert np.array_equal(a, b) and ta == tb
    assert [t.lines for _, t in first] != [t.lines for _, t in other]
    for page, truth in first:
        assert page.dtype == np.uint8 and page.ndim == 3 and page.shape[2] == 3
        assert 1 <= len(truth.lines) <= 3 and all(2 <= len(s) <= 8 for s in truth.lines)
        for line, boxes in zip(truth.lines, truth.boxes, strict=True):
            assert len(boxes) == len(line)
            assert all(0 <= x and x + w <= page.shape[1] and 0 <= y and y + h <= page.shape[0] for x, y, w, h in boxes)
