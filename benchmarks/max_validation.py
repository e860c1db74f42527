"""How `digitnet-max` was chosen: candidates trained on MNIST train less a 10% hold-out, compared on
that hold-out only (never the test set), with and without test-time augmentation.

    DIGITLAB_DATA=../shared/data digitlab train digitnet-max --val-split 0.1 --out runs/max-val
    DIGITLAB_DATA=../shared/data digitlab train digitnet-max --val-split 0.1 --out runs/max-val \
        --set augment=2,12,0.15,0,0,0,0,0,0,2,0.3,0        # + elastic 2 px, random erasing 0.3
    DIGITLAB_DATA=../shared/data digitlab train digitnet-max --val-split 0.1 --out runs/max-val \
        --epochs 60                                          # a longer schedule
    DIGITLAB_DATA=../shared/data digitlab train digitnet-max --val-split 0.1 --out runs/max-val \
        --epochs 60 --set augment=2,12,0.15,0,0,0,0,0,0,1,0,0 # 60 epochs + elastic 1 px
    DIGITLAB_DATA=../shared/data python benchmarks/max_validation.py LABEL=RUN LABEL=RUN ...

For each run: its accuracy on the 6,000 held-out training images, and with test-time augmentation
(the probabilities of the image and of its four one-pixel shifts averaged), with the errors each
makes. The results go to benchmarks/results/max-validation.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import digitlab
from digitlab.data.dataset import split_validation
from digitlab.files import write_json

SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (rows, columns): the image, then four 1-pixel shifts


def shifted_probabilities(model, images: torch.Tensor) -> np.ndarray:
    """The model's probabilities averaged over SHIFTS (MNIST's 4-pixel empty border: rolling loses no ink)."""
    views = [model.predict_proba(torch.roll(images, shift, dims=(2, 3)).numpy()) for shift in SHIFTS]
    return np.mean(views, 0)


def measure(run: Path) -> dict:
    model = digitlab.load_model(run)
    config = model.config
    dataset = digitlab.load_dataset(config["dataset"]["name"], progress=False)
    _, _, images, labels = split_validation(
        dataset, config["train"]["val_split"], config["train"]["subset"], config["recipe"]["seed"]
    )
    labels = labels.numpy()
    plain = model.predict_proba(images.numpy()).argmax(1)
    tta = shifted_probabilities(model, images).argmax(1)
    return {
        "run": str(run),
        "held_out": len(labels),
        "accuracy": float((plain == labels).mean()),
        "errors": int((plain != labels).sum()),
        "accuracy_tta": float((tta == labels).mean()),
        "errors_tta": int((tta != labels).sum()),
        "augment": config["recipe"]["augment"],
        "epochs": config["recipe"]["epochs"],
        "training_seconds": sum(row["seconds"] for row in json.loads((run / "history.json").read_text())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/max-validation.json"))
    args = parser.parse_args()
    results = {}
    for spec in args.runs:
        label, _, run = spec.partition("=")
        results[label] = measure(Path(run))
        r = results[label]
        print(
            f"{label}: held-out accuracy {r['accuracy']:.2%} ({r['errors']} errors of {r['held_out']}), "
            f"with shifts averaged {r['accuracy_tta']:.2%} ({r['errors_tta']}), {r['training_seconds']:.0f} s"
        )
    write_json(args.results, results)


if __name__ == "__main__":
    main()
