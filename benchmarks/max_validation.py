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
(the probabilities of the image and of its four one-pixel shifts averaged at temperature 1, as
`digitlab ensemble --shifts 1` averages them), with the errors each makes. The results are added
to benchmarks/results/max-validation.json.

Ensembles on the same held-out images (issue 17, third session): runs of other training seeds that
hold out seed 0's images (`--seed 1 --set split_seed=0`), then LABEL=RUN+RUN+RUN: the members'
softmax probabilities averaged at temperature 1, as for members trained on all of MNIST train
(which have no held-out images to calibrate on; the hold-out runs' own temperatures were fitted on
these very images, so they are not used here).

    DIGITLAB_DATA=../shared/data digitlab train digitnet-max --val-split 0.1 --seed 1 --set split_seed=0
    DIGITLAB_DATA=../shared/data python benchmarks/max_validation.py "S=RUN0+RUN1+RUN2" ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import digitlab
from digitlab.data.dataset import split_validation
from digitlab.files import read_json, write_json
from digitlab.models.ensemble import SHIFTS, shifted
from digitlab.recipes import held_out_seed


def shifted_probabilities(model, images: torch.Tensor, temperature: float | None = None) -> np.ndarray:
    """The model's probabilities averaged over the image and its four one-pixel shifts, background-
    filled, as `digitlab ensemble --shifts 1` computes them (models/ensemble.py's SHIFTS and shifted).
    temperature: instead of the run's calibration temperature (None). (Before 2026-12-07's third
    session the shifts were torch.roll's, which wraps the few digits that touch the edge around.)"""
    views = [images] + [shifted(images, rows, columns) for rows, columns in SHIFTS[1]]
    return np.mean([probabilities(model, view.numpy(), temperature) for view in views], 0)


def probabilities(model, images: np.ndarray, temperature: float | None = None) -> np.ndarray:
    if temperature is None:
        return model.predict_proba(images)
    return torch.softmax(torch.from_numpy(model.logits(images)) / temperature, 1).numpy()


def held_out(config: dict):
    """The run's held-out training images and labels, as training split them."""
    dataset = digitlab.load_dataset(config["dataset"]["name"], progress=False)
    _, _, images, labels = split_validation(
        dataset, config["train"]["val_split"], config["train"]["subset"], held_out_seed(config["recipe"])
    )
    return images, labels


def measure(run: Path) -> dict:
    model = digitlab.load_model(run)
    config = model.config
    images, labels = held_out(config)
    labels = labels.numpy()
    plain = model.predict_proba(images.numpy()).argmax(1)
    # at temperature 1, as the members trained on all of MNIST train (no held-out images to calibrate
    # on) average their views; these runs' own temperatures were fitted on these very images
    tta = shifted_probabilities(model, images, 1.0).argmax(1)
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


def measure_ensemble(runs: list[Path]) -> dict:
    """The members' probabilities at temperature 1, averaged, on the held-out images they share."""
    models = [digitlab.load_model(run) for run in runs]
    splits = {
        (m.config["train"]["val_split"], m.config["train"]["subset"], held_out_seed(m.config["recipe"])) for m in models
    }
    if len(splits) != 1 or not next(iter(splits))[0]:
        raise SystemExit(f"the members do not hold out the same images: (val_split, subset, seed) {sorted(splits)}")
    images, labels = held_out(models[0].config)
    labels = labels.numpy()
    logits = [torch.from_numpy(m.logits(images.numpy())) for m in models]  # once: the mean and each member's errors
    plain = np.mean([torch.softmax(member, 1).numpy() for member in logits], 0).argmax(1)
    tta = np.mean([shifted_probabilities(m, images, 1.0) for m in models], 0).argmax(1)
    return {
        "runs": [str(run) for run in runs],
        "held_out": len(labels),
        "accuracy": float((plain == labels).mean()),
        "errors": int((plain != labels).sum()),
        "accuracy_tta": float((tta == labels).mean()),
        "errors_tta": int((tta != labels).sum()),
        "seeds": [m.config["recipe"]["seed"] for m in models],
        "members_errors": [int((member.argmax(1).numpy() != labels).sum()) for member in logits],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a run, or RUN+RUN+... for an ensemble")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/max-validation.json"))
    args = parser.parse_args()
    results = read_json(args.results) if args.results.exists() else {}
    for spec in args.runs:
        label, _, run = spec.partition("=")
        if "+" in run:
            results[label] = r = measure_ensemble([Path(member) for member in run.split("+")])
            print(
                f"{label}: held-out accuracy {r['accuracy']:.2%} ({r['errors']} errors of {r['held_out']}), "
                f"with shifts averaged {r['accuracy_tta']:.2%} ({r['errors_tta']}), "
                f"members {r['members_errors']} errors"
            )
            continue
        results[label] = measure(Path(run))
        r = results[label]
        print(
            f"{label}: held-out accuracy {r['accuracy']:.2%} ({r['errors']} errors of {r['held_out']}), "
            f"with shifts averaged {r['accuracy_tta']:.2%} ({r['errors_tta']}), {r['training_seconds']:.0f} s"
        )
    write_json(args.results, results)


if __name__ == "__main__":
    main()
