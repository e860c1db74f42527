"""`digitlab bench finetune`: how much fine-tuning on N of a new writer's digits helps on that
writer's other digits, and how much of MNIST it costs.

    from digitlab.bench.finetune import bench_finetune
    report = bench_finetune(sizes=(10, 50, 200), seeds=1)

USPS plays the new writer (zip codes scanned at 16x16 by the US Postal Service, never seen by a
model trained on MNIST alone). The base is a run trained on MNIST only: `base` (a run directory,
refused if its config.json says it saw other data or started from other weights), else one the
suite trains itself with BASE_RECIPE. Not the bundled model, which has seen USPS.

For each seed and each N in `sizes`, N USPS training digits per class are drawn (seeded, the same
number of each digit; for one seed the smaller samples lie inside the larger), and two runs train
on them with the same recipe, the base's own network and FINETUNE's changes to it:
- fine-tuned: from the base's weights (`digitlab.train(init=base)`);
- from scratch: from random weights, for comparison.
Each is tested on USPS test (2,007 digits); the fine-tuned one on MNIST test too, which says how
much of MNIST it forgot. The base is tested on both before. Every figure is a metrics.json that
`digitlab.evaluate` wrote into a run's folder, and the results JSON names the file.

The runs get the sample as a Dataset (train: the sample; test: USPS test), and so validate on
USPS test each epoch as the tutorials do: history.json's val_accuracy is USPS test. Nothing is
chosen by it: every run keeps its last epoch, and FINETUNE was fixed before the suite first ran.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from ..api import evaluate, load_dataset, train
from ..checkpoint import resolve_model
from ..data import Dataset, channel_stats
from ..errors import ConfigError
from ..files import read_json, write_json
from ..recipes import Recipe
from .common import machine, write_section

START, END = "<!-- bench finetune: begin -->", "<!-- bench finetune: end -->"
HEADING = "## Fine-tuning on a new writer's digits (`digitlab bench finetune`)"
SIZES = (10, 50, 200)  # USPS training digits per class
# The base the suite trains when given none: `fast`, a 16-32-64 digitnet that reaches 99.1% on MNIST
# in one epoch (~45 s on one thread of 2 shared cores, measured 2026-12-02), so that the whole suite
# stays within 10 minutes there. fast-995 (99.5%) took 161 ms a batch there, 6 minutes for its base
# alone; digitnet 5x that.
BASE_RECIPE = "fast"
# Fine-tuning: the base recipe (its network, one-cycle AdamW with a 20% warm-up) with a quarter of
# its peak learning rate (fast: 4e-3), so that the first steps do not undo what MNIST taught; batches
# of 32, so that 100 digits still make 3 steps an epoch; 10 epochs. Fixed before the suite measured
# anything, not tuned on USPS test; the runs from scratch take the same recipe.
FINETUNE = {"epochs": 10, "lr": 1e-3, "batch_size": 32}
MNIST_TEST_DIR = "mnist-test"  # where a fine-tuned run's MNIST evaluation is written


def bench_finetune(
    base: str | Path | None = None,
    *,
    sizes: tuple[int, ...] = SIZES,
    seeds: int = 1,
    out: Path = Path("runs/bench-finetune"),
    base_limit: int | None = None,
    epochs: int = FINETUNE["epochs"],
    lr: float = FINETUNE["lr"],
    batch_size: int = FINETUNE["batch_size"],
    device: str | None = None,
    threads: int | None = None,
    data_dir=None,
    results: Path | None = Path("benchmarks/results/finetune.json"),
    markdown: Path | None = Path("BENCHMARKS.md"),
    progress: bool = True,
) -> dict:
    """Train (or take: `base`, a run directory or a shipped model's name) the MNIST-only base,
    fine-tune it and train from scratch on N USPS digits per class for each N in `sizes` and each
    of `seeds`; write `results` (JSON) and the BENCHMARKS.md section (None: don't). base_limit:
    train the suite's base on this many MNIST images (for tests; its figures then say little).
    Runs go under `out`."""
    if not sizes or any(n < 1 for n in sizes) or seeds < 1:
        raise ConfigError(f"--sizes must be whole numbers of at least 1 and --seeds at least 1, got {sizes}, {seeds}")
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(threads)
    base_folder = None if base is None else resolve_model(base)  # a shipped model's name: its folder
    if base_folder is not None:
        check_base(base_folder)
    usps = load_dataset("usps", data_dir=data_dir, progress=progress)
    check_sizes(usps, sizes)
    mnist = load_dataset("mnist", data_dir=data_dir, progress=progress)
    out = Path(out)
    started = time.perf_counter()
    base_row = base_run(base_folder, out, mnist, usps, base_limit, device, progress)
    recipe = Recipe.from_json(read_json(Path(base_row["run"]) / "config.json")["recipe"])
    recipe = recipe.override(epochs=epochs, lr=lr, batch_size=batch_size)
    rows = []
    for k in range(seeds):
        for n in sorted(sizes):
            sample = usps_sample(usps, n, seed=k)
            folder = out / f"seed-{k}" / f"{n}-per-class"
            row = {"per_class": n, "images": len(sample.train_labels), "seed": k}
            for kind, init in (("tuned", base_row["run"]), ("scratch", None)):
                row[kind] = sample_run(recipe.override(seed=recipe.seed + k), sample, init, folder / kind, device)
            row["tuned"]["mnist_accuracy"], row["tuned"]["mnist_metrics"] = tested(
                row["tuned"]["run"], mnist, Path(row["tuned"]["run"]) / MNIST_TEST_DIR
            )
            rows.append(row)
            if progress:
                print(
                    f"seed {k}, {n} per class: USPS test {base_row['usps_accuracy']:.4f} (base) -> "
                    f"{row['tuned']['usps_accuracy']:.4f} fine-tuned, {row['scratch']['usps_accuracy']:.4f} from "
                    f"scratch; MNIST test {base_row['mnist_accuracy']:.4f} -> {row['tuned']['mnist_accuracy']:.4f}",
                    flush=True,
                )
    report = {
        "command": command_line(base, sizes, seeds),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - started,
        "base": base_row,
        "finetune": {"recipe": recipe.name, "epochs": epochs, "lr": lr, "batch_size": batch_size},
        "runs": rows,
    }
    if results is not None:
        write_json(Path(results), report)
    if markdown is not None:
        publish(report, Path(markdown))
    return report


def check_sizes(usps: Dataset, sizes) -> None:
    """ConfigError unless every class of USPS train has max(sizes) digits."""
    fewest = int(torch.bincount(usps.train_labels, minlength=usps.num_classes).min())
    if max(sizes) > fewest:
        raise ConfigError(f"--sizes {max(sizes)}: USPS train has only {fewest} digits of its rarest class")


def usps_sample(usps: Dataset, per_class: int, seed: int) -> Dataset:
    """`per_class` USPS training digits of each class, drawn with `seed` (each class in its own seeded
    order, so a smaller sample lies inside a larger one), with USPS test as the test split."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(usps.num_classes):
        members = torch.nonzero(usps.train_labels == c).squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.cat(picked)
    images = usps.train_images[index]
    mean, std = channel_stats(images)
    return replace(
        usps,
        name=f"usps-train-{per_class}-per-class",
        train_images=images,
        train_labels=usps.train_labels[index],
        mean=mean,
        std=std,
    )


def base_run(base, out: Path, mnist: Dataset, usps: Dataset, limit: int | None, device, progress: bool) -> dict:
    """The base run (`base`, checked to be MNIST-only, else one trained here with BASE_RECIPE) and
    its accuracies on MNIST test and USPS test, evaluated into out/base-*-test/."""
    if base is None:
        started = time.perf_counter()
        run = train(
            BASE_RECIPE,
            dataset=mnist,
            subset=limit,
            out=out / "base",
            device=device,
            evaluate_after=False,
            progress=progress,
        )
        path, trained = run.path, {"wall_seconds": time.perf_counter() - started}
        trained["train_seconds"] = sum(r["seconds"] for r in run.history)
    else:
        path, trained = Path(base), {}  # checked by check_base
    row = {"run": str(Path(path).resolve()), "recipe": read_json(Path(path) / "config.json")["recipe"]["name"]}
    row.update(trained_by_suite=base is None, limit=limit, **trained)
    row["mnist_accuracy"], row["mnist_metrics"] = tested(path, mnist, out / "base-mnist-test")
    row["usps_accuracy"], row["usps_metrics"] = tested(path, usps, out / "base-usps-test")
    return row


def check_base(path: Path) -> None:
    """ConfigError unless `path` is a run directory whose config.json says it trained on MNIST alone,
    from random weights: a base that has seen USPS would make the comparison meaningless."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"--base {path}: not a run directory (no config.json)")
    config = read_json(config_path)
    dataset = config.get("dataset", {}).get("name")
    data = config.get("train", {}).get("data") or []
    init = config.get("train", {}).get("init")
    if dataset != "mnist" or data not in ([], ["mnist"]) or init is not None:
        raise ConfigError(
            f"--base {path}: trained on {dataset!r}" + (f" from {init}" if init else "") + ": the base must be "
            "a run trained on MNIST alone from random weights (the bundled model has seen USPS)"
        )


def sample_run(recipe: Recipe, sample: Dataset, init, out: Path, device) -> dict:
    """One run on the sample (from `init`'s weights, or from scratch); its USPS test accuracy is the
    metrics.json that `train` has `evaluate` write at the end."""
    started = time.perf_counter()
    run = train(recipe, dataset=sample, init=init, val_split=0.0, out=out, device=device, progress=False)
    wall = time.perf_counter() - started
    metrics = read_json(run.path / "metrics.json")
    return {
        "run": str(run.path),
        "usps_accuracy": metrics["accuracy"],
        "usps_metrics": str(run.path / "metrics.json"),
        "train_seconds": sum(r["seconds"] for r in run.history),
        "wall_seconds": wall,
    }


def tested(run, dataset: Dataset, folder: Path) -> tuple[float, str]:
    """The run's accuracy on `dataset`'s test split, and the metrics.json `evaluate` wrote in `folder`."""
    metrics = evaluate(run, dataset=dataset, out=folder, progress=False)
    return metrics.accuracy, str(folder / "metrics.json")


def command_line(base, sizes, seeds: int) -> str:
    if sys.argv[1:3] == ["bench", "finetune"]:
        return "digitlab bench finetune " + " ".join(sys.argv[3:])
    words = ["digitlab bench finetune", "--sizes", *map(str, sizes), "--seeds", str(seeds)]
    return " ".join(words + (["--base", str(base)] if base else []))


def figure(values: list[float]) -> str:
    """'97.21%' for one value, '97.21% ± 0.40 (3)' for several."""
    mean = statistics.fmean(values) * 100
    if len(values) == 1:
        return f"{mean:.2f}%"
    return f"{mean:.2f}% ± {statistics.stdev(values) * 100:.2f} ({len(values)})"


def summarise(report: dict) -> list[dict]:
    """Per N: the figures over seeds, the USPS accuracies as fractions."""
    rows = []
    for n in sorted({r["per_class"] for r in report["runs"]}):
        runs = [r for r in report["runs"] if r["per_class"] == n]
        rows.append(
            {
                "per_class": n,
                "images": runs[0]["images"],
                "tuned": [r["tuned"]["usps_accuracy"] for r in runs],
                "scratch": [r["scratch"]["usps_accuracy"] for r in runs],
                "mnist": [r["tuned"]["mnist_accuracy"] for r in runs],
                "tuned_seconds": statistics.fmean(r["tuned"]["train_seconds"] for r in runs),
                "scratch_seconds": statistics.fmean(r["scratch"]["train_seconds"] for r in runs),
            }
        )
    return rows


def table(report: dict) -> list[str]:
    """The Markdown table of the report: one row per N."""
    base = report["base"]
    lines = [
        f"| USPS digits per class (in all) | base on USPS test | fine-tuned | from scratch | "
        f"MNIST test after fine-tuning (base {base['mnist_accuracy'] * 100:.2f}%) | training s: fine-tune / scratch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summarise(report):
        lines.append(
            f"| {s['per_class']} ({s['images']:,}) | {base['usps_accuracy'] * 100:.2f}% | {figure(s['tuned'])} | "
            f"{figure(s['scratch'])} | {figure(s['mnist'])} | {s['tuned_seconds']:.1f} / {s['scratch_seconds']:.1f} |"
        )
    return lines


def publish(report: dict, markdown: Path) -> None:
    base, tune = report["base"], report["finetune"]
    seeds = len({r["seed"] for r in report["runs"]})
    if base["trained_by_suite"]:
        limit = f" on {base['limit']:,} MNIST images (--limit)" if base["limit"] else " on MNIST train"
        made = f"`{base['recipe']}` trained by the suite{limit} in {base['train_seconds']:.0f} s"
    else:
        made = f"`{base['recipe']}` run {base['run']} (--base)"
    lines = [START, *table(report), ""]
    lines.append(
        f"`{report['command']}` on {report['date']}: {report['machine']}, torch {report['torch']}, "
        f"{report['threads']} threads, {report['wall_seconds'] / 60:.1f} min in all. Base: {made}. Each run "
        f"trains `{tune['recipe']}`'s network with its recipe, {tune['epochs']} epochs, peak lr {tune['lr']:g}, "
        f"batch {tune['batch_size']}, on N USPS training digits per class drawn with the seed "
        f"({seeds} seed{'s' if seeds != 1 else ''}: mean ± sd over seeds where more than one); fine-tuned starts "
        "from the base's weights, from scratch from random ones. Accuracies on the 2,007 USPS test digits and the "
        "10,000 MNIST test digits; training seconds per run, evaluation apart."
    )
    lines.append(END)
    write_section(
        markdown,
        START,
        END,
        "\n".join(lines),
        HEADING + "\n\nUSPS plays a new writer that a model trained on MNIST alone has never seen: how far do N "
        "of its digits per class, fine-tuned on, raise the accuracy on its other digits, against training "
        "on them alone, and how much of MNIST is lost (bench/finetune.py).\n\n",
    )
