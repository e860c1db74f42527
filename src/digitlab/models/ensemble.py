"""Ensembles: several trained networks as one model, their probabilities averaged.

An ensemble is a network like any other (a registered factory, a run directory with config.json and
model.safetensors, one ONNX graph on export), so that everything that takes a run takes it. Its
arguments name its members as config.json names a model ({"name", "args"}); its weights are theirs
under "members.I.". `digitlab ensemble RUN... --out DIR` (ensemble.py) writes one from trained runs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from . import create_model_from_config, model_task, register_model, tensor_count

# Members at most: eight digitnet-max members are 320 tensors (model_files.MAX_TENSORS) and 2.5M parameters.
MAX_MEMBERS = 8


class Ensemble(nn.Module):
    """(N, C, H, W) -> (N, K): the log of the members' mean probabilities, each member's logits
    divided by its own calibration temperature first. Softmax of these logits is that mean exactly,
    so the argmax, the probabilities and a later calibration all see the averaged distribution."""

    def __init__(self, members: list[nn.Module], temperatures: list[float]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = None
        for member, temperature in zip(self.members, self.temperatures, strict=True):
            p = torch.softmax(member(x) / temperature, 1)
            mean = p if mean is None else mean + p
        return torch.log((mean / len(self.members)).clamp_min(1e-30))

    def extra_repr(self) -> str:
        return f"members={len(self.members)}, temperatures={self.temperatures}"


def _member_entries(members) -> list[dict]:
    """The members' {"name", "args"} entries, checked: 2 to MAX_MEMBERS digit classifiers, none an
    ensemble (config.json is untrusted: no nesting, no size beyond what the cap allows)."""
    if not isinstance(members, (list, tuple)) or not 2 <= len(members) <= MAX_MEMBERS:
        count = len(members) if isinstance(members, (list, tuple)) else members
        raise ConfigError(f"an ensemble has 2 to {MAX_MEMBERS} members, not {count!r:.40}")
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


def _member_tensors(members=None, in_shape=(1, 28, 28), num_classes=10, **_) -> int:
    """The ensemble's tensors: its members'; a ValueError (tensor_count: no count) where one has none."""
    if members is None:
        members = _default_members(in_shape, num_classes)
    try:
        counts = [tensor_count(entry) for entry in _member_entries(members)]
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
) -> nn.Module:
    """Members (model entries of runs, each taking `in_shape` and giving `num_classes`), averaged;
    None: two default digitnets (what the registry's shape-only build gives, untrained).

    temperatures: each member's calibration temperature (1 each when None).
    """
    entries = _member_entries(_default_members(in_shape, num_classes) if members is None else members)
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
    return Ensemble(networks, list(temperatures))
