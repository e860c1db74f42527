"""How `read --method auto` combines the two readers: PREFER_SEGMENT (read/combine.py) chosen on
validation images, never on the ORAND-CAR-A dev split or real-digits/.

    DIGITLAB_DATA=../shared/data python benchmarks/read_methods.py [--line-model RUN] [--pages 100]

Validation images:
- the ORAND-CAR-A training strings the line model's run held out (its seed and val_split: they
  took no part in its training; the digit model saw their crops, which flatters the segmentation
  reader on them, so a margin chosen here leans, if anything, towards it);
- synthetic pages and photo scenes of MNIST test digits, seed 1 (`bench read` measures seed 0).

For every line both readings are made once; then each margin decides every line where they differ,
and strings exact and digit accuracy are counted. Prints the table; the margin is set by hand in
read/combine.py from it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import digitlab
from digitlab.bench.read import _match_lines, _union
from digitlab.data.orand import orand_strings
from digitlab.data.synth import make_pages, make_scenes
from digitlab.evaluate import string_metrics
from digitlab.models.ctc import log_probability
from digitlab.read.combine import segment_labels

MARGINS = (-np.inf, -2.0, 0.0, 2.0, 5.0, 10.0, np.inf)  # -inf: the sequence reading whenever they differ


def held_out_strings(line_run) -> list:
    """The ORAND-CAR-A training strings the line model's run held out (data.lines.load_line_data)."""
    config = line_run.config
    strings = orand_strings("train")
    val_split, seed = config["train"]["val_split"], config["recipe"]["seed"]
    order = torch.randperm(len(strings), generator=torch.Generator().manual_seed(seed)).tolist()
    return [strings[i] for i in sorted(order[: int(round(val_split * len(strings)))])]


def _both(image, digit_model, line_model) -> dict:
    """Both readings of every line of an image, with the recognizer's log-probability of each."""
    from digitlab.preprocess import load_image
    from digitlab.read.classify import read_segments
    from digitlab.read.ink import ink_image, on_paper
    from digitlab.read.limits import UNBOUNDED
    from digitlab.read.segment import segment_ink
    from digitlab.read.sequence import line_crops, read_crops

    grey, (x0, y0) = on_paper(load_image(image))
    ink = ink_image(grey)
    if ink is None:
        return {"lines": []}
    lines = segment_ink(ink)
    segmented = read_segments(ink, lines, digit_model, 0.6, 1.0, UNBOUNDED)
    readings = read_crops(line_crops(grey, lines), line_model, UNBOUNDED)
    entries = []
    for seg_line, reading in zip(segmented, readings, strict=True):
        box = (seg_line.box[0] + x0, seg_line.box[1] + y0, *seg_line.box[2:])  # in the photo
        seg_text = seg_line.text.translate(str.maketrans("", "", ".,-"))
        if reading is None:
            entries.append({"segment": seg_text, "sequence": "", "gap": -np.inf, "box": box})
            continue
        labels = segment_labels(seg_line, line_model.classes)
        seq_text = "".join(line_model.classes[c.label] for c in reading.chars)
        gap = reading.log_probability - log_probability(reading.probs, labels)
        same = labels == [c.label for c in reading.chars]
        entries.append(
            {"segment": seg_text, "sequence": seq_text, "gap": float(gap), "same": same, "box": seg_line.box}
        )
    return {"lines": entries}


def decide(entries: list[dict], margin: float) -> str:
    """The image's text under a margin: each line the sequence reading where it is likelier by more."""
    return "".join(e["segment"] if e.get("same") or e["gap"] <= margin else e["sequence"] for e in entries)


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
            (p, t.lines, [_union(b) for b in t.boxes]) for p, t in make_pages(args.pages, 1, *test_digits)
        ],
        "photo scenes (seed 1)": [
            (p, t.lines, [_union(b) for b in t.boxes]) for p, t in make_scenes(args.pages, 1, *test_digits)
        ],
    }
    table = {}
    for name, items in sets.items():
        readings = [(truths, boxes, _both(image, digit_model, line_model)) for image, truths, boxes in items]
        row = {}
        for margin in MARGINS:
            pairs = []
            for truths, boxes, found in readings:
                if boxes is None:
                    pairs.append((truths[0], decide(found["lines"], margin)))
                else:  # line by line, as bench read scores pages: each true line against the read line over it
                    texts = [(decide([e], margin), e["box"]) for e in found["lines"]]
                    pairs += list(zip(truths, _match_lines(boxes, texts)))
            figures = string_metrics(pairs)
            row[str(margin)] = {"strings_exact": figures["strings_exact"], "digit_accuracy": figures["digit_accuracy"]}
        table[name] = row
        print(name, json.dumps(row, indent=1), flush=True)


if __name__ == "__main__":
    main()
