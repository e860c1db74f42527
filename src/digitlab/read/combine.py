"""How the two readers combine (`read(..., method="auto")`), line by line.

The segmentation reader (classify.py) cuts a line into digits and classifies each; the sequence
reader (sequence.py) reads the line whole. Where they read the same digits, the segmentation's line
is kept (its boxes are each digit's own ink, and it reads punctuation). Where they differ, the line
recognizer scores both strings: the log-probability of all its paths that read as each (CTC's
forward pass, models/ctc.py). The sequence reading wins when it is more probable than the
segmentation's by more than PREFER_SEGMENT nats; else the segmentation's stays.
"""

from __future__ import annotations

from ..models.ctc import log_probability
from .results import UNSURE, Line
from .sequence import SequenceReading

# Chosen on the held-out ORAND-CAR-A training lines of the line model's run and on synthetic pages
# of MNIST test digits (benchmarks/read_methods.py); never on the dev split or real-digits/.
PREFER_SEGMENT = 0.0  # nats


def segment_labels(line: Line, classes) -> list[int]:
    """The digits the segmentation read in a line as class indices: punctuation left out, an unsure
    '?' as its most probable digit (what it would have read without the threshold)."""
    index = {name: k for k, name in enumerate(classes)}
    labels = []
    for digit in line.digits:
        text = digit.candidates[0][0] if digit.text == UNSURE and digit.candidates else digit.text
        if text in index:
            labels.append(index[text])
    return labels


def choose(segmented: Line, sequence: Line | None, reading: SequenceReading | None, classes) -> Line:
    """The line `auto` keeps: the segmentation's, or the sequence reader's where the recognizer finds
    its string more probable by more than PREFER_SEGMENT."""
    if sequence is None or reading is None:
        return segmented
    seg = segment_labels(segmented, classes)
    seq = [c.label for c in reading.chars]
    if seg == seq:
        return segmented
    return sequence if reading.log_probability > log_probability(reading.probs, seg) + PREFER_SEGMENT else segmented
