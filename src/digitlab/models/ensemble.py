"""Ensembles: several trained networks as one model, their probabilities averaged, over the image
alone or also over its four one-pixel shifts (test-time augmentation: `shifts=1`).

An ensemble is a network like any other (a registered factory, a run directory with config.json and
model.safetensors, one ONNX graph on export), so that everything that takes a run takes it. Its
arguments name its members as config.json names a model ({"name", "args"}); its weights are theirs
under "members.I.". `digitlab ensemble RUN... --out DIR` (ensemble.py) writes one from trained runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import create_model_from_config, model_task, register_model, tensor_count

# Members at most: eight digitnet-max members are 320 tensors (model_files.MAX_TENSORS) and 2.5M parameters.
MAX_MEMBERS = 8

# The views `shifts` adds, (rows, columns): the image's four one-pixel shifts, background-filled.
# MNIST-style inputs have an empty 4-pixel border (preprocess centres the digit in 20x20), so a
# shift loses no ink. Chosen on a hold-out of MNIST train (BENCHMARKS.md, "The most accurate models").
SHIFTS = {0: (), 1: ((1, 0), (-1, 0), (0, 1), (0, -1))}


def shifted(x: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """(N, C, H, W) moved down `rows` and right `columns` pixels (negative: up, left), the pixels it
    uncovers 0 (the background of an MNIST-style input, before the members' Normalize)."""
    return F.pad(x, (columns, -columns, rows, -rows))  # a negative pad crops: one ONNX Pad


class Ensemble(nn.Module):
    """(N, C, H, W) -> (N, K): the log of the members' mean probabilities, each member's logits
    divided by its own calibration temperature first, over the image and, with `shifts` 1, its
    four one-pixel shifts too (every member sees every view; all are averaged alike). Softmax of
    these logits is that mean exactly, so the argmax, the probabilities and a later calibration all
    see the averaged distribution."""

    def __init__(self, members: list[nn.Module], temperatures: list[float], shifts: int = 0):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]
        self.shifts = shifts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [x] + [shifted(x, rows, columns) for rows, columns in SHIFTS[self.shifts]]
        mean = None
        for view in views:
            for member, temperature in zip(self.members, self.temperatures, strict=True):
                p = torch.softmax(member(view) / temperature, 1)
                mean = p if mean is None else mean + p
        return torch.log((mean / (len(self.members) * len(views))).clamp_min(1e-30))

    def extra_repr(self) -> str:
        return f"members={len(self.members)}, temperatures={self.temperatures}, shifts={self.shifts}"


def fewest_members(shifts: int) -> int:
    """The fewest members an ensemble has: 2, or 1 over shifted views (one run's test-time augmentation)."""
    return 1 if shifts else 2


def _check_shifts(shifts) -> int:
    if type(shifts) is not int or shifts not in SHIFTS:
        raise ConfigError(
            f"an ensemble's shifts are 0 (the image alone) or 1 (also its four one-pixel shifts), not {shifts!r:.40}"
        )
    return shifts


def _member_entries(members, shifts: int = 0) -> list[dict]:
    """The members' {"name", "args"} entries, checked: 2 to MAX_MEMBERS digit classifiers (1 with
    shifted views: one run's test-time augmentation), none an ensemble (config.json is untrusted: no
    nesting, no size beyond what the cap allows)."""
    fewest = fewest_members(shifts)
    if not isinstance(members, (list, tuple)) or not fewest <= len(members) <= MAX_MEMBERS:
        count = len(members) if isinstance(members, (list, tuple)) else members
        raise ConfigError(
            f"an ensemble has {fewest} to {MAX_MEMBERS} members{' (with shifted views)' if shifts else ''}, "
            f"not {count!r:.40}"
        )
    for entry in members:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"an ensemble member is a model entry {{'name', 'args'}}, not {entry!r:.80}")
        if entry["name"] == "ensemble" or model_task(entry["name"]) != "digits":
            raise ConfigError(f"an ensemble's members classify single images; {entry['name']!r} cannot be one")
    return list(members)


def _default_members(in_shape, num_classes) -> tuple[dict, ...]:
    """What `ensemble` builds when it is named no members (as every registered model builds from
    shapes alone): two default digitnets of those shapes."""
    entry = {"name": "digitnet", "args": {"in_shape": tuple(in_shape), "num_classes": num_classes}}
    return (entry, entry)


def _member_tensors(members=None, in_shape=(1, 28, 28), num_classes=10, shifts=0, **_) -> int:
    """The ensemble's tensors: its members'; a ValueError (tensor_count: no count) where one has none."""
    if members is None:
        members = _default_members(in_shape, num_classes)
    try:
        counts = [tensor_count(entry) for entry in _member_entries(members, _check_shifts(shifts))]
    except ConfigError as err:  # a malformed member list: building it says what is wrong
        raise ValueError(str(err)) from err
    if None in counts:
        raise ValueError("a member's tensors cannot be counted")
    return sum(counts)


@register_model(tensors=_member_tensors)
def ensemble(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    members: tuple[dict, ...] | None = None,
    temperatures: tuple[float, ...] | None = None,
    shifts: int = 0,
) -> nn.Module:
    """Members (model entries of runs, each taking `in_shape` and giving `num_classes`), averaged;
    None: two default digitnets (what the registry's shape-only build gives, untrained).

    temperatures: each member's calibration temperature (1 each when None). shifts: 0, the image
    alone; 1, also its four one-pixel shifts (SHIFTS), five views each member reads.
    """
    shifts = _check_shifts(shifts)
    entries = _member_entries(_default_members(in_shape, num_classes) if members is None else members, shifts)
    temperatures = (1.0,) * len(entries) if temperatures is None else tuple(temperatures)
    if len(temperatures) != len(entries) or not all(
        type(t) in (int, float) and math.isfinite(t) and t > 0 for t in temperatures
    ):
        raise ConfigError(f"an ensemble needs one positive temperature per member, not {temperatures!r:.80}")
    networks = []
    for entry in entries:
        args = entry.get("args")
        if not isinstance(args, dict):
            raise ConfigError(f"ensemble member {entry['name']!r} has no 'args' mapping")
        if tuple(args.get("in_shape", ())) != tuple(in_shape) or args.get("num_classes") != num_classes:
            raise ConfigError(
                f"ensemble member {entry['name']!r} takes {args.get('in_shape')} images into "
                f"{args.get('num_classes')} classes; the ensemble {tuple(in_shape)} into {num_classes}"
            )
        networks.append(create_model_from_config(entry))
    return Ensemble(networks, list(temperatures), shifts)
