"""A Keras-style model summary: layer, output shape, parameter count, totals."""

from __future__ import annotations

import torch
from torch import nn


def summarize(model: nn.Module, in_shape: tuple[int, ...], title: str = "") -> str:
    """The table Keras' `model.summary()` prints, measured by running one sample through.

    Only leaf modules are listed (for an nn.Sequential these are its layers); output
    shapes are written Keras-style with the batch dimension as None.
    """
    rows: list[tuple[str, str, int]] = []
    hooks = []
    counts: dict[str, int] = {}

    def record(module: nn.Module, _inputs, output) -> None:
        kind = type(module).__name__
        counts[kind] = counts.get(kind, 0) + 1
        if isinstance(output, tuple):  # an LSTM: (outputs, (h, c)); the outputs are what flows on
            output = output[0]
        shape = "(None, " + ", ".join(str(d) for d in output.shape[1:]) + ")"
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((f"{kind.lower()}_{counts[kind]} ({kind})", shape, params))

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *in_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max([len(r[0]) for r in rows] + [20]) + 2
    line = "-" * (width + 34)
    out = []
    if title:
        out.append(f'Model: "{title}"')
    out += [line, f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>12}", "=" * len(line)]
    for name, shape, params in rows:
        out.append(f"{name:<{width}}{shape:<22}{params:>12,}")
    out += [
        "=" * len(line),
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)
