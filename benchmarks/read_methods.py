"""How `read --method auto` combines the two readers: PREFER_SEGMENT (read/combine.py) chosen on
validation images, never on the ORAND-CAR-A dev split or real-digits/.

    DIGITLAB_DATA=../shared/data python benchmarks/read_methods.py [--line-model RUN] [--pages 100]

Validation images:
- the ORAND-CAR-A training strings the line model's run held out (its seed and val_split: they
  took no part in its training; the digit model saw their crops, which flatters the segmentation
  reader on them, so a margin chosen here leans, if anything, towards it);
- synthetic pages and photo scenes of MNIST test digits, seed 1 (`bench read` measures seed 0).

For every line both readings are made once; then each margin decides every line as read/combine.py's
`choose` does, and strings exact and digit accuracy are counted. Prints the table; the margin is set by hand in
read/combine.py from it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import digitlab
from digitlab.bench.read import _match_lines
from digitlab.data.orand import orand_strings
from digitlab.data.synth import make_pages, make_scenes
from digitlab.evaluate import string_metrics
from digitlab.read.combine import choose
from digitlab.read.results import union
from digitlab.recipes import held_out_seed

MARGINS = (-np.inf, -2.0, 0.0, 2.0, 5.0, 10.0, np.inf)  # -inf: the sequence reading whenever they differ


def held_out_strings(line_run) -> list:
    """The ORAND-CAR-A training strings the line model's run held out (data.lines.load_line_data)."""
    config = line_run.config
    strings = orand_strings("train")
    val_split, seed = config["train"]["val_split"], held_out_seed(config["recipe"])
    order = torch.randperm(len(strings), generator=torch.Generator().manual_seed(seed)).tolist()
    return [strings[i] for i in sorted(order[: int(round(val_split * len(strings)))])]


def _both(image, digit_model, line_model) -> list[tuple]:
    """Both readings of every line of an image, as `read` makes them: (segmented Line, sequence
    Line or None, the recognizer's reading or None, the line's box in the image)."""
    from digitlab.preprocess import load_image
    from digitlab.read.classify import read_segments
    from digitlab.read.ink import ink_image, on_paper
    from digitlab.read.limits import UNBOUNDED
    from digitlab.read.results import UNSURE_BELOW
    from digitlab.read.segment import segment_ink
    from digitlab.read.sequence import line_crops, read_crops, sequence_lines

    grey, (x0, y0) = on_paper(load_image(image))
    ink = ink_image(grey)
    if ink is None:
        return []
    lines = segment_ink(ink)
    segmented = read_segments(ink, lines, digit_model, UNSURE_BELOW, 1.0, UNBOUNDED)
    crops = line_crops(grey, lines)
    readings = read_crops(crops, line_model, UNBOUNDED)
    sequence = sequence_lines(crops, readings, line_model.classes, UNSURE_BELOW, 1.0)
    return [
        (seg, seq, reading, (seg.box[0] + x0, seg.box[1] + y0, *seg.box[2:]))
        for seg, seq, reading in zip(segmented, sequence, readings, strict=True)
    ]


def decide(line: tuple, classes, margin: float) -> str:
    """A line's digits as `auto` reads it with this margin (punctuation left out, as the labels)."""
    seg, seq, reading, _ = line
    return choose(seg, seq, reading, classes, margin).text.translate(str.maketrans("", "", ".,-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--line-model", help="the line recognizer's run directory (default: the bundled one)")
    parser.add_argument("--pages", type=int, default=100, help="synthetic pages and scenes, each (seed 1)")
    args = parser.parse_args()
    digit_model = digitlab.load_model()
    line_model = digitlab.load_line_model(args.line_model)
    mnist = digitlab.load_dataset("mnist", progress=False)
    test_digits = (mnist.test_images[:, 0].numpy(), mnist.test_labels.numpy())
    sets = {
        "ORAND-CAR-A held-out training strings": [(s.image, [s.digits], None) for s in held_out_strings(line_model)],
        "synthetic pages (seed 1)": [
            (p, t.lines, [union(b) for b in t.boxes]) for p, t in make_pages(args.pages, 1, *test_digits)
        ],
        "photo scenes (seed 1)": [
            (p, t.lines, [union(b) for b in t.boxes]) for p, t in make_scenes(args.pages, 1, *test_digits)
        ],
    }
    table = {}
    classes = line_model.classes
    for name, items in sets.items():
        readings = [(truths, boxes, _both(image, digit_model, line_model)) for image, truths, boxes in items]
        row = {}
        for margin in MARGINS:
            pairs = []
            for truths, boxes, lines in readings:
                if boxes is None:
                    pairs.append((truths[0], "".join(decide(line, classes, margin) for line in lines)))
                else:  # line by line, as bench read scores pages: each true line against the read line over it
                    texts = [(decide(line, classes, margin), line[3]) for line in lines]
                    pairs += list(zip(truths, _match_lines(boxes, texts)))
            figures = string_metrics(pairs)
            row[str(margin)] = {"strings_exact": figures["strings_exact"], "digit_accuracy": figures["digit_accuracy"]}
        table[name] = row
        print(name, json.dumps(row), flush=True)
    print(markdown(table))


def markdown(table: dict[str, dict]) -> str:
    """The table as BENCHMARKS.md shows it: a row per margin, strings exact / digit accuracy per set."""
    names = list(table)
    rows = [
        "| margin (nats) | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for margin in MARGINS:
        label = {-np.inf: "-inf (sequence wherever they differ)", np.inf: "inf (segment only)"}.get(
            margin, f"{margin:g}"
        )
        cells = [table[n][str(margin)] for n in names]
        rows.append(
            f"| {label} | " + " | ".join(f"{c['strings_exact']:.2%} / {c['digit_accuracy']:.2%}" for c in cells) + " |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
