"""Reading a line recognizer's frames (CTC): greedy and beam decoding, the alignment of a string to
the frames (where each of its characters was seen), and its probability.

Frames are (T, K) probabilities, the blank the last class (K - 1). A string is a list of class
indices. Pure numpy: the reader, the evaluation and the tests all use these.

    text, chars = greedy_decode(probs)          # [0, 7, 7] -> chars: (class, prob, first, last frame)
    best, log_p = beam_decode(probs, width=8)   # the most probable string, summed over its paths
    chars = align(probs, best)                  # each character's frames on the most probable path
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Char:
    """One character read from the frames: its class, its confidence (the highest probability the
    frames it spans give it) and the first and last of those frames."""

    label: int
    confidence: float
    first: int
    last: int


def greedy_decode(probs: np.ndarray) -> list[Char]:
    """The best path: each frame's most probable class, repeats merged, blanks dropped."""
    blank = probs.shape[1] - 1
    best = probs.argmax(1)
    chars: list[Char] = []
    t = 0
    while t < len(best):
        label = int(best[t])
        end = t
        while end + 1 < len(best) and best[end + 1] == label:
            end += 1
        if label != blank:
            chars.append(Char(label, float(probs[t : end + 1, label].max()), t, end))
        t = end + 1
    return chars


def beam_decode(probs: np.ndarray, width: int = 8) -> tuple[list[int], float]:
    """CTC prefix beam search: the string whose paths, summed, are most probable among the `width`
    best prefixes kept at each frame, and the natural log of that sum."""
    blank = probs.shape[1] - 1
    log = np.log(np.clip(probs, 1e-30, 1.0))
    # prefix -> (log P(ending in blank), log P(ending in its last character))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    # At most `width` classes a frame, and only those above 1e-4: most frames are surely blank, and
    # a class that unlikely cannot lift a prefix into the beam.
    ranked_classes = np.argsort(-probs, axis=1)[:, : min(width, probs.shape[1])]
    for t in range(len(probs)):
        candidates = [c for i, c in enumerate(ranked_classes[t]) if i == 0 or probs[t, c] >= 1e-4]
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_char) in beams.items():
            total = np.logaddexp(p_blank, p_char)
            for c in candidates:
                c = int(c)
                p = log[t, c]
                if c == blank:
                    _add(grown, prefix, total + p, -math.inf)
                elif prefix and prefix[-1] == c:
                    _add(grown, prefix + (c,), -math.inf, p_blank + p)  # a repeat needs a blank between
                    _add(grown, prefix, -math.inf, p_char + p)  # or it is the same character going on
                else:
                    _add(grown, prefix + (c,), -math.inf, total + p)
        ranked = sorted(grown.items(), key=lambda item: -np.logaddexp(*item[1]))[:width]
        beams = {prefix: (entry[0], entry[1]) for prefix, entry in ranked}
    prefix, (p_blank, p_char) = max(beams.items(), key=lambda item: np.logaddexp(*item[1]))
    return list(prefix), float(np.logaddexp(p_blank, p_char))


def _add(grown: dict, prefix: tuple[int, ...], in_blank: float, in_char: float) -> None:
    """Add to a prefix's two log-probabilities (ending in blank, ending in its last character)."""
    entry = grown.setdefault(prefix, [-math.inf, -math.inf])
    entry[0] = np.logaddexp(entry[0], in_blank)
    entry[1] = np.logaddexp(entry[1], in_char)


def log_probability(probs: np.ndarray, labels: list[int]) -> float:
    """log P(labels | frames): every path that reads as `labels`, summed (the CTC forward pass);
    -inf when the frames are too few for it."""
    blank = probs.shape[1] - 1
    log = np.log(np.clip(probs, 1e-30, 1.0))
    states = [blank]
    for label in labels:
        states += [label, blank]
    n = len(states)
    alpha = np.full(n, -math.inf)
    alpha[0] = log[0, blank]
    if n > 1:
        alpha[1] = log[0, states[1]]
    for t in range(1, len(probs)):
        shifted1 = np.concatenate([[-math.inf], alpha[:-1]])
        shifted2 = np.concatenate([[-math.inf, -math.inf], alpha[:-2]])
        skip = np.array([s != blank and k >= 2 and states[k - 2] != s for k, s in enumerate(states)])
        merged = np.logaddexp(alpha, shifted1)
        merged = np.where(skip, np.logaddexp(merged, shifted2), merged)
        alpha = merged + log[t, states]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if n > 1 else alpha[-1])


def align(probs: np.ndarray, labels: list[int]) -> list[Char]:
    """Where each character of `labels` was seen: the most probable single path that reads as
    them (Viterbi over CTC's states), each character's frames on it and its highest probability
    there. Empty for an empty string; characters get one frame each at least."""
    if not labels:
        return []
    blank = probs.shape[1] - 1
    log = np.log(np.clip(probs, 1e-30, 1.0))
    states = [blank]
    for label in labels:
        states += [label, blank]
    n, frames = len(states), len(probs)
    score = np.full(n, -math.inf)
    score[0], score[1] = log[0, blank], log[0, states[1]]
    back = np.zeros((frames, n), np.int64)
    allowed_skip = np.array([s != blank and k >= 2 and states[k - 2] != s for k, s in enumerate(states)])
    for t in range(1, frames):
        options = np.stack(
            [
                score,
                np.concatenate([[-math.inf], score[:-1]]),
                np.where(allowed_skip, np.concatenate([[-math.inf, -math.inf], score[:-2]]), -math.inf),
            ]
        )
        choice = options.argmax(0)
        back[t] = np.arange(n) - choice
        score = options[choice, np.arange(n)] + log[t, states]
    state = n - 1 if score[n - 1] >= score[n - 2] else n - 2
    path = [state]
    for t in range(frames - 1, 0, -1):
        state = int(back[t, state])
        path.append(state)
    path.reverse()
    chars = []
    for k in range(len(labels)):
        frames_k = [t for t, s in enumerate(path) if s == 2 * k + 1]
        if not frames_k:  # too few frames for the string: the nearest frame stands for it
            frames_k = [min(frames - 1, round((k + 0.5) * frames / len(labels)))]
        label = labels[k]
        chars.append(Char(label, float(probs[frames_k, label].max()), frames_k[0], frames_k[-1]))
    return chars
