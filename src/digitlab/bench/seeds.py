"""`digitlab bench seeds`: every classic recipe trained in full, over seeds, against its source.

Each run appends a row (recipe, seed, test accuracy, training seconds, machine, date) to a
JSON results file; the table in BENCHMARKS.md and the package's measured.json (read by
`digitlab recipes`) are rebuilt from all rows, so slow recipes can be run in separate
invocations and every figure keeps the command, machine and date that produced it.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from ..api import ensemble, evaluate, train
from ..catalog import MEASURED
from ..data import DATASETS, resolve_data_dir
from ..errors import ConfigError
from ..files import free_name, read_json, write_json
from ..models.ensemble import MAX_MEMBERS
from ..recipes import RECIPES, get_recipe
from .common import machine, write_section

# How far below the published accuracy a faithful reproduction may land, in points: 0.5 by
# default, 2 for the recipes whose training is noisier (per-sample OpenCV backprop, CIFAR-10).
TOLERANCE = {"opencv-mlp": 2.0, "keras-cifar10-mlp": 2.0}
START, END = "<!-- bench seeds: begin -->", "<!-- bench seeds: end -->"


def data_available(dataset: str, data_dir) -> bool:
    spec = DATASETS[dataset]
    folder = resolve_data_dir(data_dir) / spec.name
    return all((folder / f.filename).is_file() for f in spec.files)


def bench_seeds(
    recipes: list[str] | None,
    seeds: int,
    max_seconds: float,
    results: Path,
    markdown: Path,
    out: Path,
    device: str = "auto",
    data_dir=None,
    threads: int | None = None,
    ensemble_of: bool = False,
    first_seed: int | None = None,
    shifts: int = 0,
) -> list[dict]:
    """Train each recipe over `seeds` seeds from `first_seed` (default: the recipe's own), a row each
    in `results`; with `ensemble_of`, also the ensemble of each recipe's seed runs in `results` whose
    run directories are still there, this invocation's and earlier ones' (a row "RECIPE ensemble");
    `seeds` 0 with `ensemble_of` trains nothing and only makes that ensemble (once seeds trained in
    invocations side by side have all finished). `shifts` 1: also each of those seed runs, and the
    ensemble, over the image and its four one-pixel shifts (`digitlab ensemble --shifts 1`), rows
    "RECIPE +shifts" and "RECIPE ensemble +shifts"; with `seeds` 0 only those are measured."""
    if seeds < 0 or (seeds == 0 and not (ensemble_of or shifts)):
        raise ConfigError(
            "--seeds must be at least 1 (or 0 with --ensemble or --shifts 1: only measure the runs there)"
        )
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(threads)
    names = recipes or list(RECIPES)
    for name in names:
        get_recipe(name)  # unknown names fail before anything runs
    rows = read_json(results) if results.exists() else []  # returned as they are when nothing runs
    command = (
        "digitlab bench seeds " + " ".join(sys.argv[3:])
        if sys.argv[1:3] == ["bench", "seeds"]
        else f"digitlab bench seeds --recipes {' '.join(names)} --seeds {seeds}"
    )
    for name in names:
        recipe = get_recipe(name)
        if not data_available(recipe.dataset, data_dir):
            print(
                f"{name}: skipped, {recipe.dataset} is not in {resolve_data_dir(data_dir)} "
                f"(`digitlab data download {recipe.dataset}`)",
                flush=True,
            )
            continue
        spent = 0.0
        for k in range(seeds):
            if k and spent > max_seconds:
                print(f"{name}: {k} seed(s) took {spent:.0f} s > --max-seconds {max_seconds:.0f}; stopping there")
                break
            seed = (recipe.seed if first_seed is None else first_seed) + k
            started = time.perf_counter()
            run = train(name, seed=seed, device=device, data_dir=data_dir, out=out, evaluate_after=False)
            wall = time.perf_counter() - started
            spent += wall
            accuracy = run.history[-1]["val_accuracy"]  # validation is the test set here
            row = {
                "recipe": name,
                "seed": seed,
                "accuracy": accuracy,
                "train_seconds": sum(r["seconds"] for r in run.history),
                "wall_seconds": wall,
                "epochs": len(run.history),
                "device": run.config["train"]["device"],
                "machine": machine(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "date": date.today().isoformat(),
                "command": command,
                "run": str(run.path),
            }
            print(f"{name} seed {seed}: {accuracy * 100:.2f}% in {row['train_seconds']:.0f} s", flush=True)
            rows = add_row(results, row, markdown)  # after every run: a crash later loses nothing
        if ensemble_of or shifts:
            rows = measure_runs(name, rows, results, markdown, out, data_dir, command, ensemble_of, shifts)
    return rows


def measure_runs(
    name: str, rows: list[dict], results: Path, markdown: Path, out: Path, data_dir, command: str, ensemble_of, shifts
) -> list[dict]:
    """The rows that read `name`'s seed runs in `rows` whose run directories are still there: each
    over shifted views (`shifts` 1), and their ensemble (`ensemble_of`; with `shifts`, also over
    shifted views), each added to `results` and `markdown` as it is measured."""
    members = {r["seed"]: r for r in rows_of(rows, name) if Path(r["run"]).is_dir()}
    if shifts:
        for seed in sorted(members):
            rows = add_row(results, ensemble_row([members[seed]], out, data_dir, command, shifts), markdown)
    if ensemble_of and len(members) >= 2:
        chosen = [members[seed] for seed in sorted(members)][:MAX_MEMBERS]
        rows = add_row(results, ensemble_row(chosen, out, data_dir, command), markdown)
        if shifts:
            rows = add_row(results, ensemble_row(chosen, out, data_dir, command, shifts), markdown)
    return rows


def add_row(results: Path, row: dict, markdown: Path) -> list[dict]:
    """`results` with `row` in place of any earlier row of its recipe and seed, written, and the table
    rebuilt. The file is read again here, not once at the start: another invocation running beside
    this one (a slow recipe in its own process) keeps the rows it wrote meanwhile."""
    rows = read_json(results) if results.exists() else []
    together = " ensemble" in row["recipe"]  # one ensemble row a recipe, whatever its members
    rows = [r for r in rows if r["recipe"] != row["recipe"] or (r["seed"] != row["seed"] and not together)] + [row]
    write_json(results, rows)
    publish(rows, markdown)
    return rows


def ensemble_row(runs: list[dict], out: Path, data_dir, command: str, shifts: int = 0) -> dict:
    """The ensemble of one recipe's seed runs (`digitlab ensemble`; with `shifts` 1 over the image and
    its four one-pixel shifts, which one run is enough for), measured on the test set: a row whose
    training time is its members' summed, and whose command is the one that made it."""
    name = runs[0]["recipe"]
    label = name + (" ensemble" if len(runs) > 1 else "") + (SHIFTED if shifts else "")
    seeds = "-".join(str(r["seed"]) for r in runs)
    stem = f"{label.replace(' +', '-').replace(' ', '-')}-{seeds}-{time.strftime('%Y%m%d-%H%M%S')}"
    Path(out).mkdir(parents=True, exist_ok=True)  # with --seeds 0 no training has made it
    folder = free_name(Path(out), stem)  # made again within the same second (`--seeds 0 --ensemble`)
    metrics = evaluate(ensemble([r["run"] for r in runs], folder, shifts), data_dir=data_dir, progress=False)
    print(f"{label} of seed(s) {', '.join(str(r['seed']) for r in runs)}: {metrics.accuracy * 100:.2f}%", flush=True)
    return {
        **runs[-1],
        "recipe": label,
        "seed": [r["seed"] for r in runs] if len(runs) > 1 else runs[0]["seed"],
        "accuracy": metrics.accuracy,
        "train_seconds": sum(r["train_seconds"] for r in runs),
        "wall_seconds": sum(r["wall_seconds"] for r in runs),
        "command": command,
        "run": str(folder),
    }


# The rows of runs read over the image and its four one-pixel shifts: "RECIPE +shifts", "RECIPE ensemble +shifts".
SHIFTED = " +shifts"


def summarise(rows: list[dict]) -> dict[str, dict]:
    by_recipe: dict[str, list[dict]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r)
    summary = {}
    for name, runs in by_recipe.items():
        acc = [r["accuracy"] for r in runs]
        summary[name] = {
            "mean": statistics.fmean(acc),
            "sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "n": len(acc),
            "min": min(acc),
            "max": max(acc),
            "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
            "device": runs[-1]["device"],
            "machine": runs[-1]["machine"],
            "date": max(r["date"] for r in runs),
            "threads": sorted({r["threads"] for r in runs}),
            "commands": sorted({r["command"] for r in runs}),
        }
    return summary


def rows_of(rows: list[dict], recipe: str) -> list[dict]:
    return [r for r in rows if r["recipe"] == recipe]


def table_row(label: str, published: str, s: dict, verdict: str) -> str:
    """One line of the seeds table: a recipe's (or an ensemble's) summary."""
    ours = (
        f"{s['mean'] * 100:.2f}% ± {s['sd'] * 100:.2f} ({s['n']})" if s["n"] > 1 else f"{s['mean'] * 100:.2f}% (1 run)"
    )
    threads = "" if "(" in s["device"] else f" ({'/'.join(map(str, s['threads']))})"  # not for OpenCV
    return (
        f"| {label} | {published} | {ours} | {s['min'] * 100:.2f} – {s['max'] * 100:.2f}% | "
        f"{s['train_seconds']:.0f} s | {s['device']}{threads}, {s['machine']} | {verdict} |"
    )


# The published MNIST records without extra data, beside which digitnet-max and its ensemble stand.
RECORDS = """The published MNIST records without extra data (test accuracy), for `digitnet-max` and its ensemble:
a single model 99.83% (Byerly et al. 2021, branching/merging CNN with homogeneous vector capsules, 1.5M
parameters); Efficient-CapsNet 99.74% mean (Mazzia et al. 2021, 160k parameters); Chris Deotte's 15 Kaggle
CNNs 99.641% mean single, 99.745% mean ensemble; An et al. 2020 99.87% with a vote of three simple CNNs
(batch norm, no pooling, rotation and translation)."""


def publish(rows: list[dict], markdown: Path) -> None:
    """Rewrite the package's measured.json and the seeds section of BENCHMARKS.md."""
    summary = summarise(rows)
    write_json(Path(__file__).parents[1] / MEASURED, summary)  # the package's copy, which catalog.py reads
    lines = [
        START,
        "| recipe | published | ours: mean ± sd (n seeds) | min – max | training time per run | device (threads) "
        "| verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, recipe in RECIPES.items():
        pub = f"{recipe.published_accuracy * 100:.2f}%" if recipe.published_accuracy else "—"
        s = summary.get(name)
        if s is None:
            lines.append(f"| `{name}` | {pub} | not run | | | | |")
            continue
        if recipe.published_accuracy:
            gap = (s["mean"] - recipe.published_accuracy) * 100
            tol = TOLERANCE.get(name, 0.5)
            verdict = f"{gap:+.2f} pts: " + ("ok" if gap >= -tol else f"BELOW by more than {tol}")
        else:
            verdict = "our recipe"
        lines.append(table_row(f"`{name}`", pub, s, verdict))
        views = "over the image and its four one-pixel shifts (`--shifts 1`)"
        if (shifted := summary.get(name + SHIFTED)) is not None:
            lines.append(table_row(f"`{name}` {views}", "—", shifted, "the seed runs above, each; time: training"))
        for label in (f"{name} ensemble", f"{name} ensemble{SHIFTED}"):
            if (together := summary.get(label)) is not None:
                members = len(rows_of(rows, label)[-1]["seed"])
                lines.append(
                    table_row(
                        f"`{name}` ensemble of {members}" + (f" {views}" if label.endswith(SHIFTED) else ""),
                        "—",
                        together,
                        "`digitlab ensemble` of the seed runs above; time: its members' together",
                    )
                )
    lines.append("")
    lines.append(RECORDS)
    lines.append("")
    lines.append(
        "Commands and dates: "
        + "; ".join(
            f"`{name}`: {', '.join('`' + c + '`' for c in s['commands'])} ({s['date']})" for name, s in summary.items()
        )
    )
    lines.append(END)
    write_section(
        markdown, START, END, "\n".join(lines), "## Reproduction of the classic recipes (`digitlab bench seeds`)\n\n"
    )
