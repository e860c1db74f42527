"""What a reading gives: each digit with its box and confidence, in lines, and the whole image's
Reading with its JSON form (`digitlab read --json`, the service's /api/read)."""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels

UNSURE = "?"
PUNCTUATION = (".", ",", "-")  # what a mark may read as, besides UNSURE
UNSURE_BELOW = 0.6  # default: a digit whose top probability is lower reads as UNSURE


@dataclass(frozen=True)
class Digit:
    """One digit read: '0'-'9'; '.', ',' or '-' for punctuation (a mark too small or flat to be a
    digit, told by its size and place in the line; its confidence is 0); or '?' for any other
    mark and for a digit the model is unsure of."""

    text: str
    box: Box  # in the original image's pixels
    confidence: float  # the model's top probability (0 for a mark that was not classified)
    candidates: list[tuple[str, float]] = field(default_factory=list)  # top 3 (digit, probability)


@dataclass(frozen=True)
class Line:
    """One line of writing, its digits left to right (or along the line when it is slanted)."""

    digits: list[Digit]
    box: Box

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.digits)


@dataclass(frozen=True)
class Reading:
    """Everything read in one image: its lines top to bottom and the image's size."""

    lines: list[Line]
    width: int
    height: int

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_json(self) -> dict:
        """A JSON-serialisable dict: text, image size, and every line and digit with box and confidence."""
        return {
            "text": self.text,
            "width": self.width,
            "height": self.height,
            "lines": [
                {
                    "text": line.text,
                    "box": list(line.box),
                    "digits": [
                        {
                            "text": d.text,
                            "box": list(d.box),
                            "confidence": round(d.confidence, 4),
                            "candidates": [[c, round(p, 4)] for c, p in d.candidates],
                        }
                        for d in line.digits
                    ],
                }
                for line in self.lines
            ],
        }


def scaled_box(box: Box, scale: float) -> Box:
    """A box in an image `scale` times the size (at least a pixel each way)."""
    x, y, w, h = box
    return (round(x * scale), round(y * scale), max(1, round(w * scale)), max(1, round(h * scale)))


def union(boxes: list[Box]) -> Box:
    """The smallest box holding all of `boxes`."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def shifted(lines: list[Line], dx: int, dy: int) -> list[Line]:
    """The lines with every box moved by (dx, dy) pixels: read in a part of an image, placed in it."""
    if not (dx or dy):
        return lines
    move = lambda box: (box[0] + dx, box[1] + dy, box[2], box[3])  # noqa: E731
    return [
        Line([Digit(d.text, move(d.box), d.confidence, d.candidates) for d in line.digits], move(line.box))
        for line in lines
    ]
