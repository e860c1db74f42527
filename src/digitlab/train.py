"""The training loop: flat and visible, top to bottom.

The whole dataset lives on the device as uint8 (it is faster to gather and convert uint8
than to keep a float copy, and 4x smaller); a batch is a set of indices into it; shuffling
and augmentation draw from one seeded generator, so a seed gives the same history on the
same machine, and `resume` restores that generator, the global RNG (dropout), the
optimiser and the history from the last complete checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (
    CONFIG,
    HISTORY,
    WEIGHTS,
    load_checkpoint,
    read_json,
    save_checkpoint,
    save_weights,
    write_json,
)
from .data import Dataset, load_dataset
from .errors import CheckpointError, ConfigError
from .models import create_model
from .recipes import Augment, Recipe, get_recipe


@dataclass
class Run:
    """A trained (or training) run: its folder, recipe, model and per-epoch history."""

    path: Path
    recipe: Recipe
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


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


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """The recipe's optimiser with the Keras defaults the classic recipes were run with."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=recipe.lr, rho=recipe.rho, eps=recipe.eps,
                                    weight_decay=recipe.weight_decay)
    raise ConfigError(f"unknown optimizer {recipe.optimizer!r}")


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimiser step `step` (0-based): a pure function of the step."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** (step // (recipe.step_epochs * steps_per_epoch))
    if recipe.schedule == "exponential":  # gamma per epoch, applied smoothly per step
        return recipe.lr * recipe.gamma ** (step / steps_per_epoch)
    # onecycle: linear rise from lr/10 to lr over the warm-up, then linear fall to ~0.
    warm = max(1, int(recipe.warmup * total))
    if step < warm:
        return recipe.lr * (0.1 + 0.9 * step / warm)
    return recipe.lr * max(0.0, (total - step) / max(1, total - warm))


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Randomly rotate, zoom, shift, thicken/thin, blur, fade and noise a float batch (N, C, H, W).

    Every image gets its own parameters, drawn from `generator` so that a seed fixes them; each
    effect is one batched op over the whole batch (no per-image Python loop).
    """
    n, _, h, w = x.shape
    dev = x.device

    def uniform(limit: float) -> torch.Tensor:  # (N,) in [-limit, limit]
        return (torch.rand(n, generator=generator, device=dev) * 2 - 1) * limit

    def per_image(v: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 1, 1, 1) to broadcast
        return v.view(n, 1, 1, 1)

    if aug.rotate or aug.scale or aug.shift:
        angle = uniform(math.radians(aug.rotate))
        zoom = 1 + uniform(aug.scale)
        # affine_grid maps output to input coordinates in [-1, 1]: a shift of s pixels is 2s/size.
        tx, ty = uniform(2 * aug.shift / w), uniform(2 * aug.shift / h)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (N, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug.thickness:
        # Grey-level dilation/erosion with a 3x3 square: a pen one pixel wider or narrower.
        pick = torch.rand(n, generator=generator, device=dev)
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        x = torch.where(per_image(pick < aug.thickness), dilated,
                        torch.where(per_image(pick > 1 - aug.thickness), eroded, x))
    if aug.blur:
        # One depthwise convolution with a different Gaussian kernel per image.
        sigma = torch.rand(n, generator=generator, device=dev) * aug.blur + 1e-3
        radius = max(1, math.ceil(2 * aug.blur))
        offsets = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        kernel_1d = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel_1d = kernel_1d / kernel_1d.sum(1, keepdim=True)  # (N, K)
        kernels = (kernel_1d[:, :, None] * kernel_1d[:, None, :]).repeat_interleave(x.shape[1], 0)[:, None]
        x = F.conv2d(x.reshape(1, -1, h, w), kernels, padding=radius, groups=kernels.shape[0]).view(x.shape)
    if aug.contrast:
        x = x * per_image(1 - torch.rand(n, generator=generator, device=dev) * aug.contrast)
    if aug.noise:
        std = per_image(torch.rand(n, generator=generator, device=dev) * aug.noise)
        noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        x = (x + noise * std).clamp_(0, 1)
    return x


def split_validation(
    dataset: Dataset, val_split: float, subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Training images/labels and, with val_split > 0, a held-out part of the training set.

    `subset` keeps a seeded random subset of the training set first (for quick runs).
    """
    images, labels = dataset.train_images, dataset.train_labels
    if not 0 <= val_split < 1:
        raise ConfigError(f"--val-split must be in [0, 1), got {val_split}")
    if subset is not None or val_split:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        if subset is not None:
            if subset < 1:
                raise ConfigError(f"--limit must be at least 1, got {subset}")
            order = order[:subset]
        images, labels = images[order], labels[order]
    if not val_split:
        return images, labels, None, None
    n_val = int(round(len(labels) * val_split))
    if n_val < 1 or n_val >= len(labels):
        raise ConfigError(f"--val-split {val_split} leaves no validation or no training images")
    return images[n_val:], labels[n_val:], images[:n_val], labels[:n_val]


@torch.no_grad()
def evaluate_loss_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                           label_smoothing: float = 0.0, batch_size: int = 2048) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on uint8 images already on its device.

    The loss is the training objective (with the recipe's label smoothing), as Keras reports
    val_loss, so that the train and validation curves compare.
    """
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size].float().div_(255)
        y = labels[start:start + batch_size]
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


def new_run_dir(out: Path, recipe_name: str) -> Path:
    """runs/<recipe>-<timestamp>/, with a suffix if two runs start in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out) / f"{recipe_name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(out) / f"{recipe_name}-{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path


# --- the loop -------------------------------------------------------------------------------


def fit(
    recipe: Recipe | str | None,
    *,
    dataset: Dataset | None = None,
    data_dir: str | Path | None = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    device: str | None = None,
    val_split: float = 0.0,
    subset: int | None = None,
    settings: list[str] | None = None,
    progress: bool = True,
    **overrides,
) -> Run:
    """Train a recipe and write its run directory; see `digitlab.train` for the arguments."""
    start_epoch, history, checkpoint = 0, [], None
    if resume is not None:
        run_path = Path(resume)
        config = read_json(run_path / CONFIG)
        recipe = Recipe.from_json(config["recipe"])
        unsupported = {k for k, v in overrides.items() if v is not None} - {"epochs"}
        if settings:
            unsupported.add("--set")
        if unsupported:
            raise ConfigError(f"--resume continues the run as configured; only --epochs may change, "
                              f"not {sorted(unsupported)}")
        recipe = recipe.override(**overrides)
        val_split, subset = config["train"]["val_split"], config["train"]["subset"]
        checkpoint = load_checkpoint(run_path)
        start_epoch = checkpoint["state"]["epoch"]
        history = checkpoint["state"]["history"]
        if start_epoch >= recipe.epochs:
            raise CheckpointError(f"{run_path} already finished its {recipe.epochs} epochs; "
                                  f"pass --epochs N with N > {start_epoch} to train further")
    else:
        recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
        recipe = recipe.with_settings(settings or []).override(**overrides)
    recipe.validate()
    if checkpoint is not None and recipe.engine != "torch":
        raise CheckpointError(f"{recipe.name} trains in one {recipe.engine} call and cannot be resumed")

    dev = pick_device(device)
    dataset = dataset or load_dataset(recipe.dataset, data_dir=data_dir, progress=progress)
    train_x, train_y, val_x, val_y = split_validation(dataset, val_split, subset, recipe.seed)
    if val_x is None:  # the tutorials validate on the test set; --val-split is the honest way
        val_x, val_y = dataset.test_images, dataset.test_labels
    run_path = Path(resume) if resume is not None else new_run_dir(Path(out), recipe.name)
    args = model_arguments(recipe, dataset)
    config = {
        "digitlab_version": __version__,
        "recipe": recipe.to_json(),
        "model": {"name": recipe.model, "args": args},
        "dataset": {"name": dataset.name, "classes": list(dataset.classes), "mean": list(dataset.mean),
                    "std": list(dataset.std), "image_shape": list(dataset.image_shape)},
        "train": {"device": str(dev) if recipe.engine == "torch" else f"cpu ({recipe.engine})",
                  "val_split": val_split, "subset": subset,
                  "validation": "held-out training images" if val_split else "test set",
                  "torch_version": torch.__version__, "threads": torch.get_num_threads(),
                  "bf16": recipe.bf16 and bf16_supported(dev)},
    }
    write_json(run_path / CONFIG, config)

    if recipe.engine == "opencv":
        from .engines.opencv_mlp import fit_opencv  # imported late: cv2 is needed for this recipe only

        state, history = fit_opencv(recipe, train_x, train_y, val_x, val_y, progress=progress)
        save_weights(run_path / WEIGHTS, state)
        write_json(run_path / HISTORY, history)
        model = create_model(recipe.model, **args)
        model.load_state_dict(state)
        return Run(path=run_path, recipe=recipe, model=model.eval(), history=history, config=config)
    if recipe.engine != "torch":
        raise ConfigError(f"unknown engine {recipe.engine!r}")

    train_x, train_y, val_x, val_y = (t.to(dev) for t in (train_x, train_y, val_x, val_y))
    torch.manual_seed(recipe.seed)  # model initialisation, then dropout masks
    generator = torch.Generator(device=dev).manual_seed(recipe.seed + 1)  # shuffling, augmentation
    model = create_model(recipe.model, **args).to(dev)
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = make_optimizer(recipe, model.parameters())
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(generator, checkpoint["rng"])
    forward = torch.compile(model) if recipe.compile else model  # same parameters; saved through `model`

    amp = config["train"]["bf16"]  # bf16 autocast only where the hardware runs it natively
    n = len(train_y)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator, device=dev)
        loss_sum = torch.zeros((), device=dev)  # summed on the device: no sync per step
        correct = torch.zeros((), device=dev, dtype=torch.long)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for i in bar:
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step, steps_per_epoch)
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = train_x[idx].float().div_(255)  # (B, C, H, W) in [0, 1]
            y = train_y[idx]
            if recipe.augment is not None:
                x = augment_batch(x, recipe.augment, generator)
            x = x.contiguous(memory_format=layout)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = forward(x)
                loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                seen = min(n, (i + 1) * recipe.batch_size)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
        bar.close()
        train_seconds = time.perf_counter() - started
        val_loss, val_accuracy = evaluate_loss_accuracy(model, val_x, val_y, recipe.label_smoothing)
        row = {"epoch": epoch + 1, "loss": loss_sum.item() / n, "accuracy": correct.item() / n,
               "val_loss": val_loss, "val_accuracy": val_accuracy, "seconds": train_seconds,
               "lr": learning_rate(recipe, (epoch + 1) * steps_per_epoch - 1, steps_per_epoch)}
        history.append(row)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{recipe.epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} "
                       f"val_loss {val_loss:.4f} val_acc {val_accuracy:.4f} ({train_seconds:.1f} s)")
        save_checkpoint(run_path, epoch + 1, model.state_dict(), optimizer.state_dict(), rng_state(generator),
                        {"history": history})
        save_weights(run_path / WEIGHTS, model.state_dict())
        write_json(run_path / HISTORY, history)
    return Run(path=run_path, recipe=recipe, model=model.eval(), history=history, config=config)
