"""How the two readers combine (`read(..., method="auto")`), line by line.

The segmentation reader (classify.py) cuts a line into digits and classifies each; the sequence
reader (sequence.py) reads the line whole. Where they read the same digits, the segmentation's line
is kept (its boxes are each digit's own ink, and it reads punctuation). Where they differ, the line
recognizer scores both strings: the log-probability of all its paths that read as each (CTC's
forward pass, models/ctc.py). The sequence reading wins when it is more probable than the
segmentation's by more than PREFER_SEGMENT nats; else the segmentation's stays.

Where they agree, a digit the segmentation was unsure of ('?', its top candidate below the
threshold) takes the sequence reader's reading of it when that one is sure: two models reading the
same digit there is more than either alone; and a mark it could not take for a digit or punctuation
('?' with no candidates) goes, since the recognizer read no digit there either.
"""

from __future__ import annotations

from ..models.ctc import log_probability
from .results import UNSURE, Digit, Line
from .sequence import SequenceReading

# Chosen on the 95 ORAND-CAR-A training strings the line model's run held out, and on synthetic pages
# and photo scenes of MNIST test digits, seed 1 (benchmarks/read_methods.py, 2026-12-06); never on the
# dev split or real-digits/. Strings exact: 0 nats 83.16% / 97.47% / 88.21%, 2: 84.21 / 98.48 / 88.21,
# 5: 86.32 / 97.98 / 87.74, 10: 85.26 / 95.45 / 86.32; the segmentation alone 66.32 / 93.94 / 84.91.
PREFER_SEGMENT = 5.0  # nats


def segment_labels(line: Line, classes) -> list[int]:
    """The digits the segmentation read in a line as class indices: punctuation left out, an unsure
    '?' as its most probable digit (what it would have read without the threshold)."""
    index = {name: k for k, name in enumerate(classes)}
    return [index[_best(digit)] for digit in line.digits if _best(digit) in index]


def _best(digit: Digit) -> str:
    """A digit's text, its top candidate where it read as unsure."""
    return digit.candidates[0][0] if digit.text == UNSURE and digit.candidates else digit.text


def choose(
    segmented: Line,
    sequence: Line | None,
    reading: SequenceReading | None,
    classes,
    margin: float = PREFER_SEGMENT,
) -> Line:
    """The line `auto` keeps: the segmentation's, or the sequence reader's where the recognizer finds
    its string more probable by more than `margin` nats (PREFER_SEGMENT)."""
    if sequence is None or reading is None:
        return segmented
    seg = segment_labels(segmented, classes)
    seq = [c.label for c in reading.chars]
    if seg == seq:
        return agreed(segmented, sequence)
    return sequence if reading.log_probability > log_probability(reading.probs, seg) + margin else segmented


def agreed(segmented: Line, sequence: Line) -> Line:
    """The segmentation's line, where the sequence reader read the same digits, with each digit it
    was unsure of read as the sequence reader read it sure (boxes and candidates stay its own), and
    without the marks it read as '?' that were no digit to either."""
    read = iter(sequence.digits)
    digits = []
    for digit in segmented.digits:
        if digit.text == UNSURE and not digit.candidates:
            continue  # a mark the segmentation could not take for a digit, and the recognizer saw none there
        other = next(read, None) if _best(digit).isdigit() else None  # the digits segment_labels counts
        if digit.text == UNSURE and other is not None and other.text != UNSURE:
            digit = Digit(other.text, digit.box, max(digit.confidence, other.confidence), digit.candidates)
        digits.append(digit)
    return Line(digits, segmented.box)
