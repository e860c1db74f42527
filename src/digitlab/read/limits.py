"""The bounds on one reading's work: how many marks and candidate digits an image may hold, and
its time limit and cancellation, checked between the stages and in every loop whose length the
image decides."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..preprocess import ImageError

# Candidate digits (cut parts included) one image may have: each costs 0.26 ms at the median, 2.1 ms
# at the 99th percentile (candidate_ink and center_digit at 8x: 772 candidates on 60 generated pages,
# one core of a shared 2-core AMD EPYC; 4-6 ms before 2026-12-06), and noise read as specks made
# thousands (`digitlab bench fuzz` found a 300x304 image with 2,261: 14 s, then). The most in
# `bench read`'s real images and generated pages is 30.
MAX_PIECES = 500
# Marks (connected components above the speck size) one image may have, counted before any is
# merged, grouped or cut: merging compares each with its neighbours, and 62,500 dots (a 307 KB PNG)
# took 41-48 s there before MAX_PIECES refused them. The most in `bench read`'s 340 real images and
# generated pages is 39; 2,000 merge, group and split in under 0.5 s (2-core AMD EPYC).
MAX_MARKS = 2000


class ReadingStopped(ImageError):
    """A reading stopped before its end: it took longer than its time limit (the image is too
    hard or too large to read in that time: crop it), or its caller cancelled it."""


class WorkLimits:
    """The bounds on one reading's work, checked between stages and in every loop whose length
    the image decides: a time limit (seconds from the start of `read`, decoding included) and a
    `cancelled` callable another thread may turn true (the service does, when the client hangs up)."""

    def __init__(self, time_limit: float | None = None, cancelled: Callable[[], bool] | None = None):
        self.time_limit = time_limit
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.cancelled = cancelled

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise ReadingStopped("the reading was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ReadingStopped(
                f"reading the image took more than {self.time_limit:g} s, the limit: crop it to "
                "the writing, or make it smaller"
            )


UNBOUNDED = WorkLimits()  # for the stages called on their own (segment_digits, the tests)
