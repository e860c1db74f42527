"""The training loop: flat and visible, top to bottom.

    fit(recipe, RunOptions(...))      what `digitlab.train` calls; joins the process group, then:
      agree_on_plan                   recipe, data split, checkpoint: rank 0 decides, all learn it
      load_data, split_validation     the dataset, its training and validation images
      run_config, open_run_dir        config.json, in a new run directory or the one resumed
      fit_in_engine                   a recipe another engine trains in one call (OpenCV), or:
      start_training                  model, optimiser, generators (restored when resuming)
      for each epoch: train_epoch, evaluate_sharded, RunRecords.save_epoch (checkpoint, history)
      finish_run                      the weights it keeps (--keep), its calibration temperature

The whole dataset lives on the device as uint8 (it is faster to gather and convert uint8
than to keep a float copy, and 4x smaller); a batch is a set of indices into it; shuffling
and augmentation draw from one seeded generator, so a seed gives the same history on the
same machine, and `resume` restores that generator, the global RNG (dropout), the
optimiser and the history from the last complete checkpoint.

Under torchrun (distributed.py) every process runs this same loop on its slice of each
global batch; only rank 0 touches the run directory.

Never losing work: every file is written whole or not at all (files.atomic_write), a run
directory appears with its config.json already in it, and a checkpoint is a folder renamed
into place before checkpoint/latest.json names it. A process killed at any instant leaves
the last complete checkpoint, and `--resume` continues from it (or from the start, if no
epoch had finished), clearing the hidden leftovers of the interrupted writes first.

What a person sees (progress=True, all on stderr like the bars): a header before the first bar
(recipe, dataset and its sizes, device and threads, bf16 or why not, run directory, and for a
resumed run the epoch it continues from), a line per epoch, and on Ctrl-C the run directory and
the exact `--resume` command that continues it.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import shlex
import shutil
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoint import (
    BEST,
    CONFIG,
    HISTORY,
    HISTORY_CSV,
    METRICS,
    STATE,
    TENSORBOARD,
    WEIGHTS,
    check_run_parts,
    damaged,
    has_checkpoint,
    history_csv,
    load_checkpoint,
    load_weights,
    optimizer_from_files,
    optimizer_to_files,
    remove_partial_writes,
    resolve_model,
    save_checkpoint,
    save_weights,
    write_history,
)
from .data import Dataset, dataset_names, load_dataset, split_sources, split_validation
from .data.folders import is_path_source, load_sources, normalise_sources
from .data.lines import BLANK, MAX_DIGITS, LineData, load_line_data, punctuation_pool, real_lines, training_batch
from .data.orand import orand_strings
from .distributed import Cluster, DistributedError
from .errors import CheckpointError, ConfigError, DigitlabError, WriteError
from .evaluate import fit_temperature, line_loss_accuracy, predict_logits
from .files import free_name, make_temp_dir, read_json, write_json
from .model_files import MAX_TENSORS, weight_shapes
from .models import create_model, model_task, tensor_count
from .preprocess import LINE_HEIGHT, LINE_SAMPLE_WIDTH, LINE_STRIDE
from .recipes import Augment, Recipe, get_recipe, unknown_choice
from .version import __version__


@dataclass(frozen=True)
class RunOptions:
    """How to train a recipe, apart from the recipe itself: what `digitlab.train` takes besides
    the recipe fields it overrides, gathered once there and read by every stage below."""

    dataset: Dataset | None = None  # already loaded (tests, benchmarks); None loads the recipe's by name
    data_dir: str | Path | None = None
    out: str | Path = "runs"  # the folder that gets <recipe>-<timestamp>/
    resume: str | Path | None = None  # a run directory to continue from its last complete checkpoint
    device: str | None = None  # 'auto' (None), 'cpu' or 'cuda'
    val_split: float = 0.0
    subset: int | None = None
    settings: Sequence[str] = ()  # FIELD=VALUE strings (the CLI's --set)
    progress: bool = True
    cluster: Cluster = field(default_factory=Cluster)  # this process's place in a torchrun job; one process
    overrides: dict = field(default_factory=dict)  # recipe fields (epochs, batch_size, lr, seed); None: unset
    keep: str | None = None  # KEEP: 'last' (None, for a new run) or 'best'; a resumed run keeps what it kept
    tensorboard: bool = False  # scalars per epoch into RUN/tensorboard/ (a resumed run that had them goes on)
    data: Sequence[str] = ()  # --data: dataset names, class folders, file,label CSVs, replacing the recipe's dataset
    init: str | Path | None = None  # --init: a run directory, or 'bundled', whose weights the run starts from


# --keep: which epoch's weights a run keeps. 'last' is what every published reproduction measured.
KEEP = ("last", "best")


@dataclass(frozen=True)
class RunPlan:
    """What this run trains, as rank 0 decided it (agree_on_plan): the same on every process."""

    recipe: Recipe
    val_split: float
    subset: int | None
    resumes: bool  # from a checkpoint of the run directory, which rank 0 has read
    keep: str = "last"  # KEEP
    tensorboard: bool = False
    data: tuple[str, ...] = ()  # the --data sources, folders and CSVs as absolute paths (data/folders.py)
    init: str | None = None  # the run directory (absolute) whose weights it starts from: fine-tuning


@dataclass
class Run:
    """A trained (or training) run: its folder, recipe, model and per-epoch history."""

    path: Path
    recipe: Recipe
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    dataset: Dataset | None = None  # what it trained and is tested on (the test split of --data: its held-out part)
    rank: int = 0  # under torchrun, the process that returned it; only rank 0's run directory is written

    def __repr__(self) -> str:  # one line: not the model's layers, the history and the config
        last = self.history[-1] if self.history else {}
        figures = "".join(
            f", {key}={last[key]:.4f}" for key in ("accuracy", "val_accuracy") if isinstance(last.get(key), float)
        )
        rank = f", rank={self.rank}" if self.rank else ""
        return f"Run({str(self.path)!r}, recipe={self.recipe.name!r}, epochs={last.get('epoch', 0)}{figures}{rank})"


def fit(recipe: Recipe | str | None, options: RunOptions | None = None) -> Run:
    """Train a recipe and write its run directory; see `digitlab.train` for the options.

    With several processes (options.cluster, from Cluster.from_environment) the process group
    is joined here and left on return; only rank 0 reports progress.
    """
    options = options or RunOptions()
    cluster = options.cluster
    dev = cluster.device(pick_device(options.device))
    cluster.start(dev)
    try:
        return _fit(recipe, replace(options, progress=options.progress and cluster.main), dev)
    finally:
        cluster.stop()


def _fit(recipe: Recipe | str | None, options: RunOptions, dev: torch.device) -> Run:
    """The setup, then the loop (train_loop: for each epoch train, evaluate, checkpoint), then
    finish_run: the weights the run keeps and its calibration."""
    cluster, progress = options.cluster, options.progress
    plan, checkpoint = agree_on_plan(recipe, options, dev)
    recipe = plan.recipe
    if model_task(recipe.model) == "lines":
        return fit_lines(plan, checkpoint, options, dev)
    dataset = load_data(recipe, options, plan.data)
    train_x, train_y, val_x, val_y = split_validation(dataset, plan.val_split, plan.subset, recipe.held_out_seed)
    sampling = source_sampling(recipe, plan, dataset)
    if not len(dataset.test_labels):  # --data with no dataset named: the held-out part is the test split
        dataset = replace(dataset, test_images=val_x, test_labels=val_y)
    if val_x is None:  # the tutorials validate on the test set; --val-split is the honest way
        val_x, val_y = dataset.test_images, dataset.test_labels
    args = model_arguments(recipe, dataset)
    if plan.init is not None:
        check_init(plan.init, recipe, args)
    config = run_config(recipe, args, dataset, plan, cluster, dev)
    config["train"]["mix"] = dict(zip(plan.data, sampling[1], strict=True)) if sampling else None
    run_path = open_run_dir(plan, config, checkpoint, args, options, dev)
    resumed = options.resume is not None
    if progress:
        say(header_text(plan, dataset, (len(train_y), len(val_y)), config, run_path, checkpoint, resumed))
    records = RunRecords(run_path, plan, checkpoint, cluster, resumed)
    with recording(records, run_path, recipe, options):
        splits = (train_x, train_y, val_x, val_y)
        if recipe.engine != "torch":
            model, history = fit_in_engine(recipe, run_path, args, splits, records, progress)
        else:
            model, history = train_loop(plan, args, splits, checkpoint, records, options, dev, sampling)
        if cluster.main:
            finish_run(run_path, config, model, records, history, (val_x, val_y) if plan.val_split else None)
    model = model.eval()
    return Run(run_path, recipe, model, history, config, dataset if plan.data else None, cluster.rank)


def train_loop(
    plan: RunPlan,
    args: dict,
    splits: tuple[torch.Tensor, ...],
    checkpoint: dict | None,
    records: RunRecords,
    options: RunOptions,
    dev: torch.device,
    sampling: tuple[torch.Tensor, list[float]] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """The epochs still to train, each: train_epoch, evaluate_sharded, records.save_epoch. Returns the
    model (the last epoch's weights) and the whole history. `splits`: training images and labels,
    then validation images and labels; `sampling`: source_sampling's, for a recipe that mixes."""
    recipe, cluster, progress = plan.recipe, options.cluster, options.progress
    checkpoint = share_checkpoint(cluster, checkpoint, dev) if plan.resumes else None
    start_epoch = checkpoint["state"]["epoch"] if checkpoint else 0
    history = checkpoint["state"]["history"] if checkpoint else []
    train_x, train_y, val_x, val_y = (t.to(dev) for t in splits)
    trainer = start_training(recipe, args, checkpoint, len(train_y), recipe.bf16 and bf16_supported(dev), cluster, dev)
    if sampling is not None:
        trainer.sources, trainer.shares = sampling[0].to(dev), sampling[1]
    if checkpoint is None and plan.init is not None:  # fine-tuning: checked against the network by check_init
        trainer.model.load_state_dict(load_weights(Path(plan.init) / WEIGHTS))
    for epoch in range(start_epoch, recipe.epochs):
        started = time.perf_counter()
        loss_sum, correct, seen = train_epoch(trainer, recipe, epoch, train_x, train_y, cluster, progress)
        train_seconds = time.perf_counter() - started
        loss_total, correct_total, seen = cluster.sum([loss_sum.item(), correct.item(), seen], dev)
        val_loss, val_accuracy = evaluate_sharded(trainer.model, val_x, val_y, recipe.label_smoothing, cluster, dev)
        row = {
            "epoch": epoch + 1,
            "loss": loss_total / seen,
            "accuracy": correct_total / seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": train_seconds,
            "lr": learning_rate(recipe, (epoch + 1) * trainer.steps_per_epoch - 1, trainer.steps_per_epoch),
        }
        history.append(row)
        if progress:
            say(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} "
                f"val_loss {val_loss:.4f} val_acc {val_accuracy:.4f} ({train_seconds:.1f} s)"
            )
        if cluster.main:
            records.save_epoch(trainer, history)
    return trainer.model, history


def say(text: str) -> None:
    """Progress text for a person: on stderr, like the bars (stdout keeps what a command answers)."""
    tqdm.write(text, file=sys.stderr)


@contextmanager
def recording(records: RunRecords, run_path: Path, recipe: Recipe, options: RunOptions) -> Iterator[None]:
    """A run's training: on Ctrl-C the run directory and the command that resumes it are printed
    (then the interrupt goes on); whatever happens, the records are closed."""
    try:
        yield
    except KeyboardInterrupt:
        if options.progress:
            say(interrupted_text(run_path, records.saved, recipe.epochs, options))
        raise
    finally:
        records.close()


# --- line recipes: the line recognizer, trained on lines of digits (CTC) ------------------------


def fit_lines(plan: RunPlan, checkpoint: dict | None, options: RunOptions, dev: torch.device) -> Run:
    """_fit for a recipe whose model reads lines (models.TASKS): the same run directory, records,
    checkpoints and resume, with batches of lines written on the fly (data/lines.py), CTC loss,
    and lines read exactly as the accuracy. One process; not calibrated (a line model's
    confidences are per character, read/sequence.py)."""
    recipe, cluster, progress = plan.recipe, options.cluster, options.progress
    if cluster.active:
        raise ConfigError(f"{recipe.name} reads lines: it trains in one process, not under torchrun")
    if list(plan.data) != normalise_sources(list(recipe.mix), dataset_names()):
        raise ConfigError(
            f"--data: {recipe.name} writes its lines with the digits of its mix; --data is for digit recipes"
        )
    data = load_lines(recipe, plan, options)
    args = {"in_shape": [1, LINE_HEIGHT, 0], "num_classes": BLANK + 1, **recipe.model_args}
    if plan.init is not None:
        check_init(plan.init, recipe, args)
    config = run_config(recipe, args, data.digits, plan, cluster, dev)
    config["dataset"] = {
        "name": data.lines.name,
        "classes": [str(d) for d in range(BLANK)] + ["blank"],
        "mean": [0.0],
        "std": [1.0],
        "image_shape": [1, LINE_HEIGHT, LINE_SAMPLE_WIDTH],  # any width: this one checks a model file
    }
    config["train"]["mix"] = dict(zip(plan.data, mix_shares(recipe), strict=True))
    config["train"]["lines"] = {
        "real": recipe.dataset,
        "real_share": recipe.real_lines,
        "real_training_lines": len(data.lines.real),
        "validation": data.lines.validation_kind,
        "validation_lines": len(data.lines.validation),
        "test_lines": len(data.lines.test),
    }
    config["train"]["test"] = f"{recipe.dataset} test lines"
    run_path = open_run_dir(plan, config, checkpoint, args, options, dev)
    if progress:
        say(
            f"recipe: {recipe.name} ({recipe.epochs} epochs, batches of {recipe.batch_size} lines, "
            f"{recipe.real_lines:.0%} of them real)\ndata: {data.lines.name}: {len(data.lines.pool.labels):,} "
            f"digits to write lines with, {len(data.lines.real):,} real lines; validation: "
            f"{data.lines.validation_kind}; {len(data.lines.test):,} test lines\nrun directory: {run_path}"
            + (f"\n{resume_text(checkpoint, recipe.epochs)}" if options.resume is not None else "")
        )
    records = RunRecords(run_path, plan, checkpoint, cluster, options.resume is not None)
    with recording(records, run_path, recipe, options):
        model, history = line_loop(plan, args, data.lines, checkpoint, records, options, dev)
        if records.best_weights is not None:
            model.load_state_dict(records.best_weights)
        config["kept"] = records.kept(history)
        config["calibration"] = {
            "temperature": 1.0,
            "fitted_on": None,
            "note": "a line model: its confidences are per character (the frames' probabilities), not calibrated",
        }
        write_json(run_path / CONFIG, config)
    return Run(run_path, recipe, model.eval(), history, config, None, cluster.rank)


@dataclass(frozen=True)
class LoadedLines:
    digits: Dataset  # the mix's digit sources, joined (for run_config)
    lines: LineData


def load_lines(recipe: Recipe, plan: RunPlan, options: RunOptions) -> LoadedLines:
    """A line recipe's data: its mix's digits joined, the real dataset's lines (train and test)."""
    digits = load_sources(
        list(recipe.mix),
        dataset_names(),
        lambda name: load_dataset(name, data_dir=options.data_dir, progress=options.progress),
    )
    if recipe.dataset != "orand-car-a":
        raise ConfigError(f"a line recipe's real lines come from orand-car-a, not {recipe.dataset!r}")
    train_strings = orand_strings("train", options.data_dir)
    test_strings = orand_strings("dev", options.data_dir)  # reporting only: never trained on or chosen by
    lines = load_line_data(
        digits,
        real_lines(train_strings),
        real_lines(test_strings),
        plan.val_split,
        recipe.held_out_seed,
        recipe.dataset,
        plan.subset,
    )
    return LoadedLines(digits, lines)


def line_loop(
    plan: RunPlan,
    args: dict,
    data: LineData,
    checkpoint: dict | None,
    records: RunRecords,
    options: RunOptions,
    dev: torch.device,
) -> tuple[nn.Module, list[dict]]:
    """train_loop for lines: each epoch train_lines_epoch, then the validation lines read."""
    recipe, progress = plan.recipe, options.progress
    start_epoch = checkpoint["state"]["epoch"] if checkpoint else 0
    history = checkpoint["state"]["history"] if checkpoint else []
    synthetic = recipe.batch_size - round(recipe.batch_size * recipe.real_lines)
    steps = max(1, len(data.pool.labels) * 2 // (synthetic * (MAX_DIGITS + 1)))  # the pool's digits once
    trainer = start_training(
        recipe, args, checkpoint, steps * recipe.batch_size, recipe.bf16 and bf16_supported(dev), options.cluster, dev
    )
    trainer.steps_per_epoch = steps
    trainer.criterion = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    trainer.sources = data.sources
    trainer.shares = mix_shares(recipe)
    if checkpoint is None and plan.init is not None:
        trainer.model.load_state_dict(load_weights(Path(plan.init) / WEIGHTS))
    for epoch in range(start_epoch, recipe.epochs):
        started = time.perf_counter()
        loss_sum, correct, seen = train_lines_epoch(trainer, recipe, epoch, data, progress)
        train_seconds = time.perf_counter() - started
        val_loss, val_accuracy = line_loss_accuracy(trainer.model, data.validation)
        row = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            "accuracy": correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": train_seconds,
            "lr": learning_rate(recipe, (epoch + 1) * steps - 1, steps),
        }
        history.append(row)
        if progress:
            say(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {row['loss']:.4f} lines exact {row['accuracy']:.4f} "
                f"val_loss {val_loss:.4f} val lines exact {val_accuracy:.4f} ({train_seconds:.1f} s)"
            )
        records.save_epoch(trainer, history)
    return trainer.model, history


def epoch_bar(steps: int, epoch: int, epochs: int, progress: bool) -> tqdm:
    """The progress bar of one epoch's steps (gone when the epoch ends: its line is printed)."""
    return tqdm(
        range(steps),
        desc=f"epoch {epoch + 1}/{epochs}",
        unit="batch",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )


def train_lines_epoch(t: Trainer, recipe: Recipe, epoch: int, data: LineData, progress: bool) -> tuple[float, int, int]:
    """One epoch of lines: every pool digit once in the mix's shares (source_order), written into
    lines of 1-MAX_DIGITS digits, a share of each batch real lines; CTC loss, gradients clipped at
    norm 5 (an LSTM's can spike). Returns the summed loss, the lines read exactly (greedy, on the
    batch as trained) and the lines seen."""
    t.model.train()
    glyphs = punctuation_pool()
    order = source_order(t.sources, t.shares, t.generator)
    real_count = round(recipe.batch_size * recipe.real_lines) if data.real else 0
    synthetic = recipe.batch_size - real_count
    cursor, loss_sum, correct, seen = 0, 0.0, 0, 0
    bar = epoch_bar(t.steps_per_epoch, epoch, recipe.epochs, progress)
    for i in bar:
        step = epoch * t.steps_per_epoch + i
        for group in t.optimizer.param_groups:
            group["lr"] = learning_rate(recipe, step, t.steps_per_epoch)
        lengths = torch.randint(1, MAX_DIGITS + 1, (synthetic,), generator=t.generator)
        if cursor + int(lengths.sum()) > len(order):  # the epoch's order is spent: a new one
            order, cursor = torch.cat([order[cursor:], source_order(t.sources, t.shares, t.generator)]), 0
        picks = order[cursor : cursor + int(lengths.sum())]
        cursor += len(picks)
        real_picks = torch.randint(0, max(1, len(data.real)), (real_count,), generator=t.generator).tolist()
        batch = training_batch(data.pool, picks, lengths, data.real, real_picks, t.generator, glyphs)
        x = batch.images.to(t.device).contiguous(memory_format=t.layout)
        with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=t.amp):
            logits = t.forward(x)
        log_probs = logits.float().log_softmax(2)
        frames = batch.widths // LINE_STRIDE
        loss = t.criterion(log_probs.transpose(0, 1), batch.targets.to(t.device), frames, batch.target_lengths)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(t.model.parameters(), 5.0)
        t.optimizer.step()
        loss_sum += float(loss.detach()) * len(batch.texts)
        best = log_probs.detach().argmax(2).cpu()
        correct += sum(greedy_text(best[k, : frames[k]]) == text for k, text in enumerate(batch.texts))
        seen += len(batch.texts)
        if progress and (i % 20 == 0 or i == t.steps_per_epoch - 1):
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", exact=f"{correct / seen:.3f}")
    bar.close()
    return loss_sum, correct, seen


def greedy_text(best: torch.Tensor) -> str:
    """The digits a best path (each frame's class) reads: repeats merged, blanks dropped."""
    labels = best.tolist()
    return "".join(str(c) for k, c in enumerate(labels) if c != BLANK and (k == 0 or labels[k - 1] != c))


# --- what each epoch leaves in the run directory, and what the run keeps ------------------------


class RunRecords:
    """Rank 0's writes beside the loop: after each epoch the TensorBoard scalars (--tensorboard), the
    checkpoint, the weights the run keeps (--keep: the last epoch's, or the best validation epoch's
    so far) and the history (json + csv); `saved` counts the epochs checkpointed, for Ctrl-C's note."""

    def __init__(self, run_path: Path, plan: RunPlan, checkpoint: dict | None, cluster: Cluster, resumed: bool):
        self.run_path, self.keep, self.cluster = run_path, plan.keep, cluster
        self.saved = checkpoint["state"]["epoch"] if checkpoint else 0
        best = checkpoint.get("best") if checkpoint and plan.keep == "best" else None
        self.best_epoch = best["epoch"] if best else 0
        self.best_accuracy = best["val_accuracy"] if best else -math.inf
        self.best_weights: dict[str, torch.Tensor] | None = best["model"] if best else None
        # A resumed run's events past its checkpoint were logged by epochs it trains again: purged.
        purge = self.saved + 1 if resumed else None
        self.board = TensorBoardLog(run_path / TENSORBOARD, purge) if plan.tensorboard and cluster.main else None

    def save_epoch(self, trainer: Trainer, history: list[dict]) -> None:
        """The epoch that ended (history's last row): scalars first, then its checkpoint (so that
        TensorBoard never lacks a checkpointed epoch), then model.safetensors and the history."""
        row, model = history[-1], trainer.model
        if self.keep == "best" and row["val_accuracy"] > self.best_accuracy:  # ties: the earlier epoch
            self.best_epoch, self.best_accuracy = row["epoch"], row["val_accuracy"]
            self.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.board is not None:
            self.board.add(row)
        state = {"history": history, "processes": self.cluster.world}
        if self.keep == "best":
            state["best"] = {"epoch": self.best_epoch, "val_accuracy": self.best_accuracy}
        save_checkpoint(
            self.run_path,
            row["epoch"],
            model.state_dict(),
            trainer.optimizer.state_dict(),
            rng_state(trainer.generator),
            state,
            best=self.best_weights if self.keep == "best" else None,
        )
        self.saved = row["epoch"]
        save_weights(self.run_path / WEIGHTS, self.best_weights if self.keep == "best" else model.state_dict())
        write_history(self.run_path, history)

    def kept(self, history: list[dict]) -> dict:
        """config.json's "kept": which epoch's weights model.safetensors holds, and its val_accuracy."""
        epoch = self.best_epoch if self.keep == "best" else history[-1]["epoch"]
        why = "the best validation accuracy" if self.keep == "best" else "the last epoch"
        return {
            "keep": self.keep,
            "epoch": epoch,
            "of_epochs": len(history),
            "val_accuracy": history[epoch - 1]["val_accuracy"],
            "why": why,
        }

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def finish_run(
    run_path: Path,
    config: dict,
    model: nn.Module,
    records: RunRecords,
    history: list[dict],
    validation: tuple[torch.Tensor, torch.Tensor] | None,
) -> None:
    """Rank 0, once the epochs are trained: `model` gets the weights the run keeps, and config.json
    records which epoch they are ("kept") and the temperature that calibrates them ("calibration")."""
    if records.best_weights is not None:
        model.load_state_dict(records.best_weights)
    config["kept"] = records.kept(history)
    config["calibration"] = calibration(model, validation)
    write_json(run_path / CONFIG, config)


def calibration(model: nn.Module, validation: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """config.json's "calibration", as benchmarks/bundle_model.py gives the bundled model one: the
    temperature (evaluate.fit_temperature) that makes softmax(logits / T) honest on the validation
    split, so that a confidence means the same for every model. It divides the logits for the
    probabilities only, so no prediction and no accuracy changes. Without a validation split there
    is none: the run validated on the test set, and a temperature fitted there would be measured on
    the images it was fitted to."""
    if validation is None:
        return {
            "temperature": 1.0,
            "fitted_on": None,
            "note": "not calibrated: trained without --val-split, so no held-out images to fit a "
            "temperature on; probabilities are the plain softmax of the logits",
        }
    images, labels = validation
    logits = predict_logits(model, images).double()
    temperature = fit_temperature(logits, labels.cpu())
    return {
        "temperature": temperature,
        "fitted_on": f"the validation split: {len(labels):,} held-out training images",
        "val_cross_entropy": F.cross_entropy(logits, labels.cpu()).item(),
        "val_cross_entropy_calibrated": F.cross_entropy(logits / temperature, labels.cpu()).item(),
    }


class TensorBoardLog:
    """--tensorboard: each epoch's row as scalars (loss/train, loss/val, accuracy/..., lr, seconds)
    in RUN/tensorboard/, at step = the epoch, flushed before the epoch's checkpoint is written. A
    resumed run opens a new event file with purge_step = the first epoch it trains, so TensorBoard
    hides what an interrupted attempt logged past its checkpoint (as it documents for restarts)."""

    TAGS = {
        "loss": "loss/train",
        "val_loss": "loss/val",
        "accuracy": "accuracy/train",
        "val_accuracy": "accuracy/val",
        "lr": "lr",
        "seconds": "seconds/epoch",
    }

    def __init__(self, folder: Path, purge_step: int | None):
        writer_class = summary_writer()
        try:
            self.writer = writer_class(str(folder), purge_step=purge_step)
        except OSError as err:
            raise WriteError(f"could not write TensorBoard events in {folder}: {err.strerror or err}") from err

    def add(self, row: dict) -> None:
        for key, tag in self.TAGS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def summary_writer() -> type:
    """torch.utils.tensorboard's SummaryWriter; ConfigError when the tensorboard package is missing.

    TensorBoard is told to use its own stub of TensorFlow (tensorboard.compat.notf, its switch for
    builds without TensorFlow): where TensorFlow is installed (the [peers] extra) importing it would
    cost seconds and fill stderr with its logs, and writing event files needs none of it."""
    try:
        importlib.import_module("tensorboard")
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(
            "--tensorboard needs the tensorboard package, which is not installed here: "
            "pip install 'digitlab[tensorboard]' (or pip install tensorboard)"
        ) from err
    return SummaryWriter


# --- what a person reads: the header, and what to do after Ctrl-C -------------------------------


def header_text(
    plan: RunPlan,
    dataset: Dataset,
    sizes: tuple[int, int],
    config: dict,
    run_path: Path,
    checkpoint: dict | None,
    resumed: bool,
) -> str:
    """The lines printed before the first bar: recipe, data, device, bf16, run directory, and for a
    resumed run (`checkpoint`: rank 0's, None when it had none) the epoch it continues from."""
    recipe, train = plan.recipe, config["train"]
    n_train, n_val = sizes
    schedule = f", {recipe.optimizer} lr {recipe.lr:g}, {recipe.schedule} schedule" if recipe.engine == "torch" else ""
    lines = [
        f"recipe: {recipe.name} ({recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}, batch "
        f"{recipe.batch_size}{schedule})"
    ]
    limit = f" (--limit {plan.subset:,})" if plan.subset else ""
    validation = (
        f"{n_val:,} validation (held out, --val-split {plan.val_split:g})"
        if plan.val_split
        else "validation on the test set (as the tutorials; --val-split holds out training images)"
    )
    lines.append(
        f"dataset: {dataset.name}: {n_train:,} training{limit}, {validation}, {len(dataset.test_labels):,} test images"
    )
    if train.get("mix"):
        shares = ", ".join(f"{Path(source).name} {share:.0%}" for source, share in train["mix"].items())
        lines.append(f"mix: each epoch draws {shares} of its images")
    processes = f", {train['processes']} processes ({train['backend']})" if train["processes"] > 1 else ""
    threads = f", {train['threads']} thread{'s' if train['threads'] != 1 else ''}" if recipe.engine == "torch" else ""
    lines.append(f"device: {train['device']}{threads}{processes}")
    lines.append(f"bf16: {bf16_text(recipe, train['precision'])}")
    extras = [f"keeps the {plan.keep} epoch" if plan.keep == "best" else ""]
    extras.append(f"TensorBoard: {run_path / TENSORBOARD}" if plan.tensorboard else "")
    extras = "; ".join(e for e in extras if e)
    lines.append(f"run directory: {run_path}" + (f" ({extras})" if extras else ""))
    if resumed:
        lines.append(resume_text(checkpoint, recipe.epochs))
    return "\n".join(lines)


def resume_text(checkpoint: dict | None, epochs: int) -> str:
    done = checkpoint["state"]["epoch"] if checkpoint else 0
    if done == 0:
        return "resuming: no epoch had finished, so it starts again from epoch 1"
    if done >= epochs:
        return f"resuming: all {epochs} epochs are in its checkpoint; only calibrating and evaluating"
    return f"resuming: {epoch_span(done)} in its checkpoint; continuing from epoch {done + 1} of {epochs}"


def epoch_span(done: int) -> str:
    return "epoch 1 is" if done == 1 else f"epochs 1-{done} are"


def precision(recipe: Recipe, dev: torch.device) -> str:
    """config.json's train.precision: 'bf16 autocast', 'float32', or why a bf16 recipe fell back."""
    if not recipe.bf16:
        return "float32"
    if bf16_supported(dev):
        return "bf16 autocast"
    return f"float32 ({bf16_missing(dev)})"


def bf16_text(recipe: Recipe, precision: str) -> str:
    if precision == "bf16 autocast":
        return "yes (autocast for the forward pass; weights and optimiser in float32)"
    if not recipe.bf16:
        return "no (the recipe trains in float32)"
    return f"no ({precision.removeprefix('float32 (').removesuffix(')')}; float32)"


def bf16_missing(dev: torch.device) -> str:
    """Why bf16_supported said no, in the words of the hardware."""
    if dev.type == "cuda":
        return f"this GPU ({torch.cuda.get_device_name(dev)}) has no bf16"
    if dev.type != "cpu":
        return f"bf16 autocast is used on CPUs and CUDA GPUs, not {dev.type}"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN, which bf16 on the CPU needs"
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "this CPU has no BF16 instructions"
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "this CPU has no AVX-512 BF16/AMX"
    return f"this {machine} CPU has no bf16 that oneDNN uses"


def interrupted_text(run_path: Path, saved: int, epochs: int, options: RunOptions) -> str:
    """What Ctrl-C leaves: where the run is, how far its checkpoint goes, the command to continue."""
    if saved == 0:
        state = "no epoch had finished, so resuming starts it again from epoch 1"
    elif saved < epochs:
        state = f"{epoch_span(saved)} in its checkpoint, of {epochs}; resuming continues from epoch {saved + 1}"
    else:
        state = f"all {epochs} epochs are trained; resuming only calibrates and evaluates it"
    return f"interrupted: the run directory {run_path}: {state}\nto continue: {resume_command(run_path, options)}"


def resume_command(run_path: Path, options: RunOptions) -> str:
    """The command line that continues the run: --resume, and what the run does not record itself
    (where the data is, a device asked for)."""
    words = ["digitlab", "train", "--resume", str(run_path)]
    if options.data_dir is not None:
        words += ["--data-dir", str(options.data_dir)]
    if options.device not in (None, "auto"):
        words += ["--device", str(options.device)]
    command = shlex.join(words)
    if options.cluster.active:
        return f"torchrun (with the options it had) -m {command}"
    return command


# --- the setup, stage by stage ----------------------------------------------------------------


def agree_on_plan(recipe: Recipe | str | None, options: RunOptions, dev: torch.device) -> tuple[RunPlan, dict | None]:
    """The plan -- recipe, data split, checkpoint -- made by rank 0 and shared: only rank 0
    reads the run directory (on several machines the others may not even see it). Also returns
    the checkpoint to resume from, on rank 0 (None elsewhere, and when there is none)."""
    cluster = options.cluster
    val_split, subset = options.val_split, options.subset
    keep, tensorboard = options.keep or "last", options.tensorboard
    checkpoint, failure = None, None
    if cluster.main:
        try:
            if options.resume is not None:
                recipe, val_split, subset, checkpoint, recorded = plan_resume(
                    Path(options.resume), options.overrides, options.settings
                )
                if options.keep not in (None, recorded["keep"]):
                    raise ConfigError(
                        f"--resume continues the run as configured: it keeps its {recorded['keep']} epoch "
                        f"(--keep {recorded['keep']}), not its {options.keep}"
                    )
                keep, tensorboard = recorded["keep"], tensorboard or recorded["tensorboard"]
                if options.data and list(options.data) != recorded["data"]:
                    raise ConfigError(
                        "--resume reloads the data the run recorded (config.json's train.data): omit --data"
                    )
                data, init = recorded["data"], recorded["init"]
                if options.init is not None and init_folder(options.init) != init:
                    raise ConfigError(
                        "--resume continues from the run's own weights (config.json's train.init): omit --init"
                    )
            else:
                init = init_folder(options.init) if options.init is not None else None
                recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
                recipe = recipe.with_settings(options.settings).override(**options.overrides)
                # --data replaces the recipe's sources; a recipe that mixes sources trains on its mix.
                data = normalise_sources(options.data or list(recipe.mix), dataset_names())
            recipe.validate()
            check_keep(keep, val_split, recipe)
            check_data(data, val_split)
            if tensorboard:
                summary_writer()  # the package is here, or a clear error before anything is written
        except DigitlabError as err:
            if not cluster.active:
                raise
            failure = err
        plan = (
            {"error": str(failure)}
            if failure
            else {
                "recipe": recipe.to_json(),
                "val_split": val_split,
                "subset": subset,
                "resume": checkpoint is not None,
                "keep": keep,
                "tensorboard": tensorboard,
                "data": data,
                "init": init,
            }
        )
    plan = cluster.share_json(plan if cluster.main else None, dev)
    if "error" in plan:  # every process stops with rank 0's reason
        raise failure if failure else DistributedError(f"rank 0 could not start the run: {plan['error']}")
    recipe = Recipe.from_json(plan["recipe"])
    if cluster.active and recipe.engine != "torch":
        raise ConfigError(
            f"{recipe.name} trains in one {recipe.engine} call: it runs in one process, not under torchrun"
        )
    plan = RunPlan(
        recipe,
        plan["val_split"],
        plan["subset"],
        plan["resume"],
        plan["keep"],
        plan["tensorboard"],
        tuple(plan["data"]),
        plan["init"],
    )
    return plan, checkpoint


def check_keep(keep: str, val_split: float, recipe: Recipe) -> None:
    """ConfigError unless --keep `keep` can work for this run."""
    if keep not in KEEP:
        raise ConfigError(f"--keep must be one of {', '.join(KEEP)}, not {keep!r:.40}")
    if keep == "best" and not val_split:
        raise ConfigError(
            "--keep best keeps the epoch of the best validation accuracy, which needs --val-split "
            "(e.g. --val-split 0.1): without it the run validates on the test set, and choosing by "
            "the test set would flatter its test accuracy"
        )
    if keep == "best" and recipe.engine != "torch":
        raise ConfigError(
            f"--keep best: {recipe.name} trains in one {recipe.engine} call, with no epochs to choose from"
        )


def check_data(data: list[str], val_split: float) -> None:
    """ConfigError unless the --data sources give the run a test split."""
    if not val_split and held_out_test(data):
        raise ConfigError(
            "--data with only folders or CSV files tests on the part it holds out: give --val-split a "
            "fraction above 0 (the default with --data is 0.1), or add a dataset by name for the test split"
        )


def init_folder(init: str | Path) -> str:
    """The run directory --init names (a shipped model's name, 'bundled' among them: its folder),
    absolute; ConfigError unless it holds a run's config.json and model.safetensors."""
    folder = resolve_model(Path(init).expanduser())
    if not ((folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()):
        raise ConfigError(
            f"--init {init}: not a run directory (config.json and model.safetensors) nor a shipped model's name"
            + (": an .onnx file holds no weights to train further" if str(init).endswith(".onnx") else "")
        )
    return str(folder.resolve())


def check_init(init: str, recipe: Recipe, args: dict) -> None:
    """ConfigError unless the weights in `init` fill this recipe's network tensor for tensor (read
    from the safetensors header through model_files, before any tensor is)."""
    if recipe.engine != "torch":
        raise ConfigError(f"--init: {recipe.name} trains in one {recipe.engine} call, from no weights")
    shapes = weight_shapes(Path(init) / WEIGHTS)
    with torch.device("meta"):
        network = create_model(recipe.model, **args)
    expected = {name: str(tuple(tensor.shape)) for name, tensor in network.state_dict().items()}
    found = {name: str(shape) for name, shape in shapes.items()}
    if expected != found:
        raise ConfigError(
            f"--init {init}: its weights are not those of {recipe.name}'s network ({recipe.model} with "
            f"these arguments): {_difference(expected, found)}"
        )


def held_out_test(data: Sequence[str]) -> bool:
    """Whether the run's test split is its held-out part: --data named no dataset."""
    names = dataset_names()
    return bool(data) and all(is_path_source(s, names) for s in data)


def load_data(recipe: Recipe, options: RunOptions, data: Sequence[str] = ()) -> Dataset:
    """The recipe's dataset (options.dataset, when given), or the joined --data sources: every
    process holds all of it. On each machine, local rank 0 loads first (and downloads, if needed)
    while the others wait, so a download happens once per machine."""
    if options.dataset is not None:
        return options.dataset
    cluster = options.cluster
    if cluster.local_rank != 0:
        cluster.barrier("waiting for local rank 0 to fetch the dataset")
    if data:
        dataset = load_sources(
            list(data),
            dataset_names(),
            lambda name: load_dataset(name, data_dir=options.data_dir, progress=options.progress),
        )
    else:
        dataset = load_dataset(recipe.dataset, data_dir=options.data_dir, progress=options.progress)
    if cluster.local_rank == 0:
        cluster.barrier("waiting for the other processes to load the dataset")
    return dataset


def run_config(
    recipe: Recipe, args: dict, dataset: Dataset, plan: RunPlan, cluster: Cluster, dev: torch.device
) -> dict:
    """The run's config.json: the recipe, the model's factory arguments, the dataset, how it trains."""
    return {
        "digitlab_version": __version__,
        "recipe": recipe.to_json(),
        "model": {"name": recipe.model, "args": args},
        "dataset": {
            "name": dataset.name,
            "classes": list(dataset.classes),
            "mean": list(dataset.mean),
            "std": list(dataset.std),
            "image_shape": list(dataset.image_shape),
        },
        "train": {
            "device": str(dev) if recipe.engine == "torch" else f"cpu ({recipe.engine})",
            "val_split": plan.val_split,
            "subset": plan.subset,
            "validation": "held-out training images" if plan.val_split else "test set",
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "bf16": recipe.bf16 and bf16_supported(dev),
            "precision": precision(recipe, dev),
            "processes": cluster.world,
            "backend": cluster.backend,
            "keep": plan.keep,
            "tensorboard": plan.tensorboard,
            "data": list(plan.data),
            "init": plan.init,
            "test": "held-out training images" if held_out_test(plan.data) else "test set",
        },
    }


def open_run_dir(
    plan: RunPlan, config: dict, checkpoint: dict | None, args: dict, options: RunOptions, dev: torch.device
) -> Path:
    """The run directory: rank 0 creates it, or checks and updates the one it resumes
    (prepare_resume); the others learn its path."""
    cluster = options.cluster
    run_path = None
    if cluster.main:
        if options.resume is not None:
            run_path = Path(options.resume)
            prepare_resume(run_path, config, checkpoint, plan, args, dev)
        else:
            run_path = create_run_dir(Path(options.out), plan.recipe.name, config)
    return Path(cluster.share_json(str(run_path) if cluster.main else None, dev))


def fit_in_engine(
    recipe: Recipe,
    run_path: Path,
    args: dict,
    splits: tuple[torch.Tensor, ...],
    records: RunRecords,
    progress: bool,
) -> tuple[nn.Module, list[dict]]:
    """A recipe another engine trains, in one call (engine "opencv": cv2.ml.ANN_MLP, by
    engines/opencv_mlp_trainer.py): its weights and its one-row history go into the run directory
    as the loop's would, with no checkpoint (there is no epoch to resume from inside one call).
    `splits`: training images and labels, then validation images and labels."""
    if recipe.engine != "opencv":
        raise ConfigError(f"unknown engine {recipe.engine!r}")
    # imported here: cv2 is needed for this recipe only
    from .engines.opencv_mlp_trainer import fit_opencv

    state, history = fit_opencv(recipe, *splits, progress=progress)
    if records.board is not None:
        records.board.add(history[-1])
    save_weights(run_path / WEIGHTS, state)
    write_history(run_path, history)
    model = create_model(recipe.model, **args)
    model.load_state_dict(state)
    return model, history


@dataclass
class Trainer:
    """What the training steps work with (start_training builds it, train_epoch uses it)."""

    model: nn.Module  # what is evaluated and saved
    forward: nn.Module  # what a step calls: the model, wrapped in DDP and/or torch.compile (same parameters)
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    generator: torch.Generator  # the shuffling, the same in every process (saved in the checkpoint)
    local_generator: torch.Generator  # augmentation: `generator` itself in one process, one per process else
    layout: torch.memory_format
    amp: bool  # bf16 autocast
    steps_per_epoch: int
    device: torch.device
    sources: torch.Tensor | None = None  # a mix: each training image's source (split_sources)
    shares: list[float] | None = None  # a mix: each source's share of an epoch


def start_training(
    recipe: Recipe, args: dict, checkpoint: dict | None, n: int, amp: bool, cluster: Cluster, dev: torch.device
) -> Trainer:
    """The model, optimiser and generators, seeded from the recipe in this order (a seed gives
    one history), then restored from `checkpoint` when resuming; `n` training images."""
    torch.manual_seed(recipe.seed)  # model initialisation, then dropout masks
    generator = torch.Generator(device=dev).manual_seed(recipe.seed + 1)  # shuffling (the same in every process)
    # One process augments with the shuffling generator itself (the history a seed has always
    # given); several draw augmentation and dropout per process and epoch (rank_seed).
    local_generator = torch.Generator(device=dev) if cluster.active else generator
    model = create_model(recipe.model, **args).to(dev)
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = make_optimizer(recipe, model.parameters())
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(generator, checkpoint["rng"])
    trained = model
    if cluster.active:  # DDP all-reduces (averages) the gradients during backward()
        with cluster.lost_peer("setting up DistributedDataParallel"):
            trained = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    forward = torch.compile(trained) if recipe.compile else trained  # same parameters; saved through `model`
    batch = recipe.batch_size  # the global batch: each process takes its slice of it
    # A last global batch smaller than the number of processes would leave one of them empty: skip it.
    steps_per_epoch = n // batch + (1 if n % batch >= cluster.world else 0)
    return Trainer(
        model=model,
        forward=forward,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        generator=generator,
        local_generator=local_generator,
        layout=layout,
        amp=amp,
        steps_per_epoch=steps_per_epoch,
        device=dev,
    )


# --- one epoch ---------------------------------------------------------------------------------


def train_epoch(
    t: Trainer,
    recipe: Recipe,
    epoch: int,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    cluster: Cluster,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over the training images in global batches, each process taking its slice of
    each: this process's summed loss and correct count (on the device: no sync per step) and
    the number of images it saw."""
    t.model.train()
    n, batch, dev = len(train_y), recipe.batch_size, t.device
    if t.sources is None:
        order = torch.randperm(n, generator=t.generator, device=dev)
    else:
        order = source_order(t.sources, t.shares, t.generator)
    if cluster.active:
        t.local_generator.manual_seed(rank_seed(recipe.seed, epoch, cluster.rank))
        torch.manual_seed(rank_seed(recipe.seed, epoch, cluster.rank) + 1)
    loss_sum = torch.zeros((), device=dev)  # summed on the device: no sync per step
    correct = torch.zeros((), device=dev, dtype=torch.long)
    seen = 0
    bar = epoch_bar(t.steps_per_epoch, epoch, recipe.epochs, progress)
    with cluster.lost_peer(f"training epoch {epoch + 1}", only_network=True):
        for i in bar:
            step = epoch * t.steps_per_epoch + i
            for group in t.optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step, t.steps_per_epoch)
            idx = order[i * batch : (i + 1) * batch]
            mine = idx.tensor_split(cluster.world)[cluster.rank] if cluster.active else idx
            x = train_x[mine].float().div_(255)  # (B, C, H, W) in [0, 1]
            y = train_y[mine]
            if recipe.augment is not None:
                x = augment_batch(x, recipe.augment, t.local_generator)
            x = x.contiguous(memory_format=t.layout)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=t.amp):
                logits = t.forward(x)
                loss = t.criterion(logits, y)
            t.optimizer.zero_grad(set_to_none=True)
            if cluster.active:
                # DDP averages over processes; weighting each by its share of the global batch
                # makes that average the gradient of the global batch's mean loss, as in one process.
                (loss * (len(mine) * cluster.world / len(idx))).backward()
            else:
                loss.backward()
            t.optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if progress and (i % 20 == 0 or i == t.steps_per_epoch - 1):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    bar.close()
    return loss_sum, correct, seen


def source_sampling(recipe: Recipe, plan: RunPlan, dataset: Dataset) -> tuple[torch.Tensor, list[float]] | None:
    """(each training image's source, each source's share of an epoch) for a recipe that mixes
    sources (recipe.mix) and trains on them; None otherwise: --data sources in place of the mix,
    like one dataset, give each image once an epoch."""
    if not recipe.mix or list(plan.data) != normalise_sources(list(recipe.mix), dataset_names()):
        return None
    sources = split_sources(dataset, plan.val_split, plan.subset, recipe.held_out_seed)
    shares = mix_shares(recipe)
    missing = [name for s, name in enumerate(recipe.mix) if not (sources == s).any()]
    if missing:
        raise ConfigError(f"the mix's {', '.join(missing)} left no training image (--limit is too small for it)")
    return sources, shares


def mix_shares(recipe: Recipe) -> list[float]:
    """Each source of the recipe's mix: its share of an epoch (the weights made to add up to 1)."""
    total = sum(recipe.mix.values())
    return [weight / total for weight in recipe.mix.values()]


def source_order(sources: torch.Tensor, shares: list[float], generator: torch.Generator) -> torch.Tensor:
    """One epoch's order of training images (as many as there are) drawn from the sources in
    their shares: source s gives round(n * share) of them (largest remainders, so they add up to
    n), every image of it once before any is drawn again, and the whole is shuffled. `sources`:
    (n,) the source of each image."""
    n, dev = len(sources), sources.device
    exact = torch.tensor(shares, dtype=torch.float64) * n
    counts = exact.floor().long()
    counts[torch.argsort(exact - counts, descending=True)[: n - int(counts.sum())]] += 1
    parts = []
    for s, count in enumerate(counts.tolist()):
        pool = (sources == s).nonzero().squeeze(1)
        rounds = -(-count // len(pool))
        drawn = [pool[torch.randperm(len(pool), generator=generator, device=dev)] for _ in range(rounds)]
        parts.append(torch.cat(drawn)[:count])
    order = torch.cat(parts)
    return order[torch.randperm(n, generator=generator, device=dev)]


def evaluate_sharded(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
    cluster: Cluster,
    dev: torch.device,
) -> tuple[float, float]:
    """evaluate_loss_accuracy over all processes, each on its slice of the images."""
    if not cluster.active:
        return evaluate_loss_accuracy(model, images, labels, label_smoothing)
    # DDP broadcast rank 0's buffers (BatchNorm statistics) before each training forward, and
    # each process then updated its own: use rank 0's, the ones its checkpoint saves.
    with cluster.lost_peer("sharing BatchNorm statistics"):
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, 0)
    mine_x, mine_y = images.tensor_split(cluster.world)[cluster.rank], labels.tensor_split(cluster.world)[cluster.rank]
    loss, accuracy = evaluate_loss_accuracy(model, mine_x, mine_y, label_smoothing) if len(mine_y) else (0.0, 0.0)
    loss_sum, correct, count = cluster.sum([loss * len(mine_y), accuracy * len(mine_y), len(mine_y)], dev)
    return loss_sum / count, correct / count


# --- choices made once per run ------------------------------------------------------------


def pick_device(device: str | None = None) -> torch.device:
    """'auto' (or None) is CUDA when available, else the CPU; anything else is forced."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return chosen


def bf16_supported(dev: torch.device) -> bool:
    """Whether bfloat16 matrix maths runs natively here (else autocast would emulate it, slowly)."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:  # oneDNN's own check: AVX-512 BF16 or AMX on x86, BF16 on Arm
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def model_arguments(recipe: Recipe, dataset: Dataset) -> dict:
    """The factory arguments that rebuild this run's model (stored in config.json)."""
    args = {"in_shape": list(dataset.image_shape), "num_classes": dataset.num_classes, **recipe.model_args}
    if recipe.normalize:
        args.update(mean=list(dataset.mean), std=list(dataset.std))
    return args


# The optimisers and learning-rate schedules a recipe names, by name: recipes.OPTIMIZER_NAMES and
# SCHEDULE_NAMES are these keys (recipes are checked below this module; a test checks they agree).
# The optimisers take the Keras defaults the classic recipes were run with.
OPTIMIZERS: dict[str, Callable[[Recipe, Iterable], torch.optim.Optimizer]] = {
    "sgd": lambda r, params: torch.optim.SGD(
        params, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov, weight_decay=r.weight_decay
    ),
    "adam": lambda r, params: torch.optim.Adam(params, lr=r.lr, eps=r.eps, weight_decay=r.weight_decay),
    "adamw": lambda r, params: torch.optim.AdamW(params, lr=r.lr, eps=r.eps, weight_decay=r.weight_decay),
    "adadelta": lambda r, params: torch.optim.Adadelta(
        params, lr=r.lr, rho=r.rho, eps=r.eps, weight_decay=r.weight_decay
    ),
}


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """The recipe's optimiser (OPTIMIZERS) over `params`."""
    if recipe.optimizer not in OPTIMIZERS:
        raise unknown_choice("optimizer", recipe.optimizer, OPTIMIZERS)
    return OPTIMIZERS[recipe.optimizer](recipe, params)


def one_cycle(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Linear rise from lr/10 to lr over the warm-up, then linear fall to ~0."""
    total = recipe.epochs * steps_per_epoch
    warm = max(1, int(recipe.warmup * total))
    if step < warm:
        return recipe.lr * (0.1 + 0.9 * step / warm)
    return recipe.lr * max(0.0, (total - step) / max(1, total - warm))


# name -> f(recipe, step, steps_per_epoch): the learning rate at optimiser step `step` (0-based).
SCHEDULES: dict[str, Callable[[Recipe, int, int], float]] = {
    "constant": lambda r, step, steps_per_epoch: r.lr,
    "step": lambda r, step, steps_per_epoch: r.lr * r.gamma ** (step // (r.step_epochs * steps_per_epoch)),
    # gamma per epoch, applied smoothly per step
    "exponential": lambda r, step, steps_per_epoch: r.lr * r.gamma ** (step / steps_per_epoch),
    "onecycle": one_cycle,
}


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimiser step `step` (0-based): a pure function of the step (SCHEDULES)."""
    if recipe.schedule not in SCHEDULES:
        raise unknown_choice("schedule", recipe.schedule, SCHEDULES)
    return SCHEDULES[recipe.schedule](recipe, step, steps_per_epoch)


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Randomly mirror, rotate, zoom, shift, bend, thicken/thin, binarise, coarsen, blur, fade,
    noise and erase a float batch (N, C, H, W).

    Every image gets its own parameters, drawn from `generator` so that a seed fixes them; each
    effect is one batched op over the whole batch (no per-image Python loop).
    """
    n, _, h, w = x.shape
    dev = x.device

    def uniform(limit: float) -> torch.Tensor:  # (N,) in [-limit, limit]
        return (torch.rand(n, generator=generator, device=dev) * 2 - 1) * limit

    def per_image(v: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 1, 1, 1) to broadcast
        return v.view(n, 1, 1, 1)

    if aug.flip:
        x = torch.where(per_image(torch.rand(n, generator=generator, device=dev) < aug.flip), x.flip(3), x)
    if aug.rotate or aug.scale or aug.shift or aug.elastic:
        angle = uniform(math.radians(aug.rotate))
        zoom = 1 + uniform(aug.scale)
        # affine_grid maps output to input coordinates in [-1, 1]: a shift of s pixels is 2s/size.
        tx, ty = uniform(2 * aug.shift / w), uniform(2 * aug.shift / h)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (N, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if aug.elastic:
            grid = grid + elastic_field(n, h, w, aug.elastic, generator, dev)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug.thickness:
        # Grey-level dilation/erosion with a 3x3 square: a pen one pixel wider or narrower.
        pick = torch.rand(n, generator=generator, device=dev)
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        x = torch.where(
            per_image(pick < aug.thickness), dilated, torch.where(per_image(pick > 1 - aug.thickness), eroded, x)
        )
    if aug.binarize:
        # A binary scan: ink where the image passes a random fraction (0.25-0.75) of its own peak.
        pick = torch.rand(n, generator=generator, device=dev) < aug.binarize
        level = 0.25 + 0.5 * torch.rand(n, generator=generator, device=dev)
        peak = x.amax((1, 2, 3)).clamp_min(1e-6)
        binary = (x > per_image(level * peak)).to(x.dtype)
        x = torch.where(per_image(pick), binary, x)
    if aug.lowres:
        # A coarse scan made MNIST-style: shrunk to one size for the batch (12-22 px), enlarged back.
        pick = torch.rand(n, generator=generator, device=dev) < aug.lowres
        size = int(torch.randint(12, 23, (1,), generator=generator, device=dev))
        coarse = F.interpolate(F.interpolate(x, size=(size, size), mode="area"), size=(h, w), mode="bilinear")
        x = torch.where(per_image(pick), coarse, x)
    if aug.blur:
        # One depthwise convolution with a different Gaussian kernel per image.
        sigma = torch.rand(n, generator=generator, device=dev) * aug.blur + 1e-3
        radius = max(1, math.ceil(2 * aug.blur))
        offsets = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        kernel_1d = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel_1d = kernel_1d / kernel_1d.sum(1, keepdim=True)  # (N, K)
        kernels = (kernel_1d[:, :, None] * kernel_1d[:, None, :]).repeat_interleave(x.shape[1], 0)[:, None]
        x = F.conv2d(x.reshape(1, -1, h, w), kernels, padding=radius, groups=kernels.shape[0]).view(x.shape)
    if aug.contrast:
        x = x * per_image(1 - torch.rand(n, generator=generator, device=dev) * aug.contrast)
    if aug.noise:
        std = per_image(torch.rand(n, generator=generator, device=dev) * aug.noise)
        noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        x = (x + noise * std).clamp_(0, 1)
    if aug.erase:
        x = x * ~erased_boxes(n, h, w, aug.erase, generator, dev)
    return x


def elastic_field(n: int, h: int, w: int, pixels: float, generator: torch.Generator, dev) -> torch.Tensor:
    """(N, H, W, 2) smooth random displacements of at most `pixels`, in grid_sample's [-1, 1] units:
    a 4x4 grid of uniform offsets enlarged bicubically (the Gaussian-smoothed noise of Simard et al.
    for a fraction of its cost), so that strokes bend instead of jittering pixel by pixel."""
    coarse = torch.rand(n, 2, 4, 4, generator=generator, device=dev) * 2 - 1
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).clamp_(-1, 1)
    scale = torch.tensor([2 * pixels / w, 2 * pixels / h], device=dev).view(1, 2, 1, 1)
    return (field * scale).permute(0, 2, 3, 1)


def erased_boxes(n: int, h: int, w: int, chance: float, generator: torch.Generator, dev) -> torch.Tensor:
    """(N, 1, H, W) masks, True inside one random rectangle (2-15% of the image, aspect 0.3-3.3) for a
    `chance` share of the images and nowhere for the rest: random erasing, batched."""

    def draw() -> torch.Tensor:
        return torch.rand(n, generator=generator, device=dev)

    pick, area, aspect = draw() < chance, (0.02 + 0.13 * draw()) * h * w, torch.exp((draw() * 2 - 1) * math.log(3.3))
    bh, bw = (area * aspect).sqrt().clamp(1, h), (area / aspect).sqrt().clamp(1, w)
    top, left = draw() * (h - bh), draw() * (w - bw)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (rows >= top.view(n, 1, 1)) & (rows < (top + bh).view(n, 1, 1))
    inside = inside & (cols >= left.view(n, 1, 1)) & (cols < (left + bw).view(n, 1, 1))
    return (inside & pick.view(n, 1, 1)).unsqueeze(1)


@torch.no_grad()
def evaluate_loss_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on uint8 images already on its device.

    The loss is the training objective (with the recipe's label smoothing), as Keras reports
    val_loss, so that the train and validation curves compare.
    """
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = images[start : start + batch_size].float().div_(255)
        y = labels[start : start + batch_size]
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing).item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(labels), correct / len(labels)


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(generator: torch.Generator, state: dict[str, torch.Tensor]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def create_run_dir(out: Path, recipe_name: str, config: dict) -> Path:
    """runs/<recipe>-<timestamp>/ (with a suffix if two runs start in the same second),
    appearing with its config.json already in it: the folder is built under a hidden name and
    renamed, so every run directory that exists can be resumed."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    tmp = make_temp_dir(Path(out), f"{recipe_name}-{stamp}")
    try:
        write_json(tmp / CONFIG, config)
        path = free_name(Path(out), f"{recipe_name}-{stamp}")
        os.rename(tmp, path)
    except OSError as err:
        raise WriteError(f"could not create a run directory in {out}: {err.strerror or err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# --- resuming: rank 0 reads and checks the run directory ----------------------------------


def plan_resume(run_path: Path, overrides: dict, settings: Sequence[str]):
    """What `--resume RUN` continues: (recipe, val_split, subset, checkpoint or None, recorded), where
    `recorded` is what else config.json says of how the run trains: keep, tensorboard.

    A run killed before its first checkpoint starts again from epoch 1; one killed after its
    last epoch but before its evaluation finishes (model.safetensors and history.json are
    rewritten from the checkpoint, then the caller evaluates). A run with its metrics.json
    written is complete: resuming it needs --epochs beyond what it trained.

    Everything read here is untrusted (issue 18) and checked before use: the run's parts are its
    own files and folders, not links (check_run_parts); config.json's recipe and split have their
    types and values (read_run_config); the checkpoint's files are as digitlab writes them
    (load_checkpoint). Whether its tensors fit the run is `prepare_resume`'s to check, once the
    dataset gives the network's shape; nothing is written before that.
    """
    check_run_parts(run_path)
    configured, val_split, subset, recorded = read_run_config(run_path / CONFIG)
    unsupported = {k for k, v in overrides.items() if v is not None} - {"epochs"}
    if settings:
        unsupported.add("--set")
    if unsupported:
        raise ConfigError(
            f"--resume continues the run as configured; only --epochs may change, not {sorted(unsupported)}"
        )
    recipe = configured.override(**overrides)
    if recipe.engine != "torch":
        raise CheckpointError(f"{recipe.name} trains in one {recipe.engine} call and cannot be resumed: train it again")
    checkpoint = load_checkpoint(run_path) if has_checkpoint(run_path) else None
    done = checkpoint["state"]["epoch"] if checkpoint else 0
    if done > configured.epochs:
        raise CheckpointError(
            f"{run_path / CONFIG} gives its recipe {configured.epochs} epochs, but its checkpoint "
            f"holds {done}: the two do not belong to one run"
        )
    if done > recipe.epochs:
        raise ConfigError(
            f"--epochs {recipe.epochs} is fewer than the {done} epochs {run_path} has trained; "
            f"pass --epochs N with N > {done}, or none"
        )
    if done >= recipe.epochs and (run_path / METRICS).is_file():
        raise CheckpointError(
            f"{run_path} already finished its {recipe.epochs} epochs; pass --epochs N with N > {done} to train further"
        )
    return recipe, val_split, subset, checkpoint, recorded


def read_run_config(path: Path) -> tuple[Recipe, float, int | None, dict]:
    """The recipe, training split (val_split, subset) and {"keep", "tensorboard"} of a run's
    config.json, each checked (a run from before --keep and --tensorboard kept its last epoch and
    had no events)."""
    config = read_json(path)
    train = config.get("train") if isinstance(config, dict) else None
    if not (isinstance(train, dict) and "recipe" in config and {"val_split", "subset"} <= set(train)):
        raise CheckpointError(
            f"{path} lacks the recipe or the training split (train.val_split, train.subset): "
            f"not a digitlab run configuration"
        )
    try:
        recipe = Recipe.from_json(config["recipe"])
        recipe.validate()
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    val_split, subset = train["val_split"], train["subset"]
    if not (type(val_split) in (int, float) and 0 <= val_split < 1):
        raise damaged(path, f"train.val_split must be a number in [0, 1), not {val_split!r:.40}")
    if not (subset is None or (type(subset) is int and subset >= 1)):
        raise damaged(path, f"train.subset must be null or a whole number of at least 1, not {subset!r:.40}")
    recorded = {"keep": train.get("keep", "last"), "tensorboard": train.get("tensorboard", False)}
    if recorded["keep"] not in KEEP:
        raise damaged(path, f"train.keep must be one of {', '.join(KEEP)}, not {recorded['keep']!r:.40}")
    if recorded["keep"] == "best" and not val_split:
        raise damaged(
            path, "train.keep is 'best', which a run without a validation split (train.val_split 0) cannot be"
        )
    recorded["data"], recorded["init"] = train.get("data", []), train.get("init")
    if not (recorded["init"] is None or type(recorded["init"]) is str):
        raise damaged(path, f"train.init must be null or a run directory, not {recorded['init']!r:.60}")
    if not (isinstance(recorded["data"], list) and all(type(s) is str for s in recorded["data"])):
        raise damaged(path, f"train.data must be a list of dataset names and paths, not {recorded['data']!r:.60}")
    if type(recorded["tensorboard"]) is not bool:
        raise damaged(path, f"train.tensorboard must be true or false, not {recorded['tensorboard']!r:.40}")
    return recipe, val_split, subset, recorded


def prepare_resume(
    run_path: Path, config: dict, checkpoint: dict | None, plan: RunPlan, args: dict, dev: torch.device
) -> None:
    """Rank 0, resuming: check that the checkpoint restores into the network, optimiser and
    generators this run builds (and, for --keep best, that its best weights fit the network), and
    only then clear the leftovers of killed writes and rewrite config.json (and, from the
    checkpoint, model.safetensors and the history). A run refused here is left byte for byte as it was."""
    recipe = plan.recipe
    folder = checkpoint["folder"] if checkpoint is not None else None
    model = restored_model(
        recipe,
        args,
        run_path / CONFIG,
        checkpoint["model"] if checkpoint else None,
        folder / "model.safetensors" if folder else None,
    )
    if checkpoint is not None:
        check_optimizer_state(
            model, checkpoint["optimizer"], recipe, folder / "optimizer.safetensors", folder / "state.json"
        )
        check_rng_state(checkpoint["rng"], dev, folder / "rng.safetensors")
        check_best(model, checkpoint, plan.keep, folder, recipe)
    remove_partial_writes(run_path)
    write_json(run_path / CONFIG, config)
    if checkpoint is not None:
        bring_up_to_date(run_path, checkpoint)
    (run_path / METRICS).unlink(missing_ok=True)  # it described the weights this run replaces


def restored_model(
    recipe: Recipe, args: dict, config_path: Path, tensors: dict | None, weights_path: Path | None
) -> nn.Module | None:
    """A throwaway copy of the network this run builds, holding the checkpoint's weights (None
    without a checkpoint). Its tensors are first counted from the arguments (models.tensor_count:
    building 20,000 layers takes a minute even on the meta device), then it is built on the meta
    device -- shapes only, no memory: config.json could describe a network of terabytes -- and
    compared tensor for tensor (name, dtype, shape) with the checkpoint; then built for real, no
    larger than the checkpoint's own tensors."""
    implied = tensor_count({"name": recipe.model, "args": args})
    if implied is not None and implied > MAX_TENSORS:
        raise CheckpointError(
            f"{config_path} describes a {recipe.model} network of {implied:,} tensors, more than "
            f"the {MAX_TENSORS} of any digitlab network"
            + (f" (its checkpoint holds {len(tensors):,})" if tensors is not None else "")
        )
    try:
        with torch.device("meta"):
            expected = {k: _describe(v) for k, v in create_model(recipe.model, **args).state_dict().items()}
    except Exception as err:  # noqa: BLE001 -- the factory's arguments come from config.json: whatever they raise
        raise CheckpointError(
            f"{config_path}: its recipe's network cannot be built: {type(err).__name__}: {err}"
        ) from err
    if tensors is None:
        return None
    found = {k: _describe(v) for k, v in tensors.items()}
    if found != expected:
        raise CheckpointError(
            f"{weights_path} does not match the {recipe.model} network {config_path} describes: "
            f"{_difference(expected, found)}"
        )
    model = create_model(recipe.model, **args)
    model.load_state_dict(tensors)
    return model


def check_best(model: nn.Module, checkpoint: dict, keep: str, folder: Path, recipe: Recipe) -> None:
    """Raise CheckpointError unless the checkpoint has best weights exactly when the run keeps its best
    epoch, and they are tensor for tensor (name, dtype, shape) the network's."""
    best = checkpoint.get("best")
    if (best is not None) != (keep == "best"):
        has = "holds" if best is not None else "lacks"
        raise damaged(folder / STATE, f"it {has} a 'best' epoch, and its run keeps its {keep} epoch (train.keep)")
    if best is None:
        return
    expected = {k: _describe(v) for k, v in model.state_dict().items()}
    found = {k: _describe(v) for k, v in best["model"].items()}
    if found != expected:
        raise CheckpointError(
            f"{folder / BEST} does not match the {recipe.model} network of the run: {_difference(expected, found)}"
        )


def check_optimizer_state(model: nn.Module, state: dict, recipe: Recipe, tensors_path: Path, meta_path: Path) -> None:
    """Raise CheckpointError unless `state` (an optimizer.state_dict()) restores into the recipe's
    optimiser of `model`: compared with what a fresh one keeps after a step with zero gradients --
    the same parameter groups, settings of the same kinds, per parameter the same tensors of the
    same dtypes and shapes -- then restored (copies) into that throwaway and stepped once, so that
    whatever torch would still refuse mid-epoch is refused here."""
    params = list(model.parameters())
    fresh = make_optimizer(recipe, params)
    for p in params:
        p.grad = torch.zeros_like(p)
    fresh.step()
    expected = fresh.state_dict()
    saved_groups, fresh_groups = state["param_groups"], expected["param_groups"]
    if [g["params"] for g in saved_groups] != [g["params"] for g in fresh_groups]:
        raise damaged(
            meta_path,
            f"its optimiser's param_groups hold parameters "
            f"{[g['params'] for g in saved_groups]!s:.60}; the {recipe.optimizer} optimiser of "
            f"this network has one group of parameters 0 to {len(params) - 1}",
        )
    for saved, wanted in zip(saved_groups, fresh_groups):
        for key, value in wanted.items():
            if key != "params" and key in saved and not _same_kind(saved[key], value):
                raise damaged(
                    meta_path,
                    f"the optimiser setting {key!r} is {saved[key]!r:.40}, where "
                    f"{recipe.optimizer} keeps {value!r:.40}",
                )
    for index, entry in state["state"].items():
        got = {k: _describe(v) for k, v in entry.items()}
        want = {k: _describe(v) for k, v in expected["state"].get(index, {}).items()}
        if got != want:
            keeps = _listing(want) if index < len(params) else "nothing: the network has no such parameter"
            raise damaged(
                tensors_path,
                f"the optimiser state of parameter {index} is {_listing(got)}; {recipe.optimizer} keeps {keeps}",
            )
    copied = {
        "state": {
            i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
            for i, entry in state["state"].items()
        },
        "param_groups": saved_groups,
    }
    try:
        fresh.load_state_dict(copied)
        fresh.step()
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(
            f"the optimiser state in {tensors_path} and {meta_path.name} cannot be restored into "
            f"the {recipe.optimizer} optimiser: {type(err).__name__}: {err}"
        ) from err


def check_rng_state(rng: dict[str, torch.Tensor], dev: torch.device, path: Path) -> None:
    """Raise CheckpointError unless each random state sets a throwaway generator of its kind: the
    shuffling generator's on `dev` (a CUDA generator's state is not a CPU one's), torch's global
    one on the CPU, and CUDA's where one was saved and a GPU is here."""
    kinds = {"generator": dev, "torch": torch.device("cpu")}
    if "cuda" in rng and torch.cuda.is_available():
        kinds["cuda"] = torch.device("cuda")
    for name, device in kinds.items():
        if name not in rng:
            raise damaged(path, f"it lacks the {name!r} random state")
        try:
            torch.Generator(device=device).set_state(rng[name].clone())
        except (RuntimeError, TypeError, ValueError) as err:
            hint = (
                ", or the run trained on another kind of device (resume with the --device it trained on)"
                if name == "generator"
                else ""
            )
            raise CheckpointError(
                f"{path}: the {name!r} random state cannot be restored on {device.type} ({err}): it is damaged{hint}"
            ) from err


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return type(value).__name__


def _listing(described: dict[str, str]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in described.items())[:200] or "nothing"


def _difference(expected: dict[str, str], found: dict[str, str], most: int = 3) -> str:
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    changed = [f"{k} is {found[k]}, not {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    parts = [f"it lacks {', '.join(missing[:most])}{' ...' if len(missing) > most else ''}"] if missing else []
    if extra:
        parts.append(
            f"it holds {', '.join(extra[:most])[:120]}{' ...' if len(extra) > most else ''}, which the network has not"
        )
    return "; ".join(parts + changed[:most])


def _same_kind(saved, fresh) -> bool:
    """Whether an optimiser setting read back from JSON can stand for a fresh optimiser's: flags and
    names equal, numbers numbers, pairs (betas) pairs of numbers."""
    if isinstance(fresh, (tuple, list)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(fresh) and all(map(_same_kind, saved, fresh))
    if type(fresh) in (int, float):
        return type(saved) in (int, float)
    return saved == fresh


def bring_up_to_date(run_path: Path, checkpoint: dict) -> None:
    """Rewrite model.safetensors (the weights the run keeps: the checkpoint's own, or its best) and
    the history (json + csv) from the checkpoint where a kill between writing the checkpoint and
    writing them left them an epoch behind."""
    history = checkpoint["state"]["history"]
    kept = checkpoint["best"]["model"] if "best" in checkpoint else checkpoint["model"]
    try:
        current = read_json(run_path / HISTORY) == history
        current = current and (run_path / HISTORY_CSV).read_text() == history_csv(history)
        weights = load_weights(run_path / WEIGHTS)
        current = (
            current and weights.keys() == kept.keys() and all(torch.equal(weights[k], v.cpu()) for k, v in kept.items())
        )
    except (CheckpointError, OSError, UnicodeDecodeError):  # missing or unreadable: rewrite
        current = False
    if not current:
        save_weights(run_path / WEIGHTS, kept)
        write_history(run_path, history)


def share_checkpoint(cluster: Cluster, checkpoint: dict | None, dev: torch.device) -> dict:
    """Rank 0's checkpoint on every process (tensors as safetensors bytes, the rest as JSON)."""
    if not cluster.active:
        return checkpoint
    main = cluster.main
    opt_tensors, opt_meta = optimizer_to_files(checkpoint["optimizer"]) if main else (None, None)
    return {
        "model": cluster.share_tensors(checkpoint["model"] if main else None, dev),
        "optimizer": optimizer_from_files(cluster.share_tensors(opt_tensors, dev), cluster.share_json(opt_meta, dev)),
        "rng": cluster.share_tensors(checkpoint["rng"] if main else None, dev),
        "state": cluster.share_json(checkpoint["state"] if main else None, dev),
    }


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process's augmentation and dropout in one epoch (several processes only):
    a pure function, so a resumed epoch draws what the interrupted one drew."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729 + 12_345) % 2**62
