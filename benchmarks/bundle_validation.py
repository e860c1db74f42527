"""How the bundled model's network was chosen: candidates trained on the five training sources
less a validation hold-out, each measured on that hold-out, source by source.

    DIGITLAB_DATA=../shared/data python benchmarks/bundle_validation.py                    # digitnet-real
    DIGITLAB_DATA=../shared/data python benchmarks/bundle_validation.py --set model_args='{"widths": [48, 96, 192]}'
    DIGITLAB_DATA=../shared/data python benchmarks/bundle_validation.py --clutter 0.3

The hold-out: ORAND-CAR-A train images a_car_001000-001099 (all their crops: a string's digits share
a writer, so a crop-level split would flatter), and a seeded 10% of MNIST train, USPS train,
Optdigits train and HwD-1000 train. Nothing here reads a test split, the ORAND-CAR-A dev images or
real-digits/: the choice of network was made on these figures alone (BENCHMARKS.md, "The bundled
model"). The loop is train.py's (the recipe's mix drawn by train.source_order, its one-cycle
schedule, augment_batch, bf16 autocast where the CPU has it), written out without run directories.

--clutter P: the cheque clutter tried and dropped: with probability P each, a neighbouring digit's
edge entering from the left or right, an underline, a dot at a bottom corner (ORAND's crops carry
such ink); it cost 1.6 points of the ORAND hold-out.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

import digitlab
from digitlab.data.orand import orand_crops
from digitlab.models import count_parameters, create_model
from digitlab.recipes import get_recipe
from digitlab.train import augment_batch, bf16_supported, learning_rate, source_order

ORAND_HOLD_OUT = 1000  # ORAND-CAR-A train images numbered from here (to 1099) are held out
HOLD_OUT = 0.1  # of every other source


def sources(names: list[str]) -> dict[str, tuple[torch.Tensor, ...]]:
    """name -> (train images, labels, hold-out images, labels), uint8 (N, 1, 28, 28)."""
    out = {}
    for name in names:
        if name == "orand-car-a":
            images, labels, numbers = (torch.from_numpy(a) for a in orand_crops("train"))
            held = numbers >= ORAND_HOLD_OUT
        else:
            data = digitlab.load_dataset(name, progress=False)
            images, labels = data.train_images, data.train_labels
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))
            held = torch.zeros(len(labels), dtype=torch.bool)
            held[order[: int(HOLD_OUT * len(labels))]] = True
        out[name] = (images[~held], labels[~held], images[held], labels[held])
    return out


def clutter(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Cheque clutter on a float batch (N, 1, 28, 28): a neighbour's edge, an underline, a dot."""
    n, _, h, w = x.shape

    def rand() -> torch.Tensor:
        return torch.rand(n, generator=generator)

    rows, cols = torch.arange(h).view(1, h, 1).float(), torch.arange(w).view(1, 1, w).float()
    out = x
    pick = (rand() < p).view(n, 1, 1, 1)  # another digit of the batch, 14-22 px to one side
    shift = ((14 + rand() * 8).round().long() * torch.where(rand() < 0.5, -1, 1))[:, None]
    source = torch.arange(w)[None] - shift
    inside = ((source >= 0) & (source < w))[:, None, None, :]
    other = x[torch.randperm(n, generator=generator)]
    shifted = torch.gather(other, 3, source.clamp(0, w - 1)[:, None, None, :].expand(n, 1, h, w)) * inside
    out = torch.where(pick, torch.maximum(out, shifted), out)
    pick = (rand() < p).view(n, 1, 1, 1)  # an underline low in the box, slightly tilted
    y0, slope = (19 + rand() * 8).view(n, 1, 1), ((rand() - 0.5) * 0.2).view(n, 1, 1)
    thick, x0, x1 = (0.6 + rand() * 1.2).view(n, 1, 1), (rand() * 10).view(n, 1, 1), (18 + rand() * 10).view(n, 1, 1)
    distance = (rows - (y0 + slope * (cols - 14))).abs()
    line = ((thick - distance).clamp(0, 1) * ((cols >= x0) & (cols <= x1))).unsqueeze(1)
    out = torch.where(pick, torch.maximum(out, line * (0.6 + 0.4 * rand()).view(n, 1, 1, 1)), out)
    pick = (rand() < p / 2).view(n, 1, 1, 1)  # a dot at a bottom corner
    cy, cx = (21 + rand() * 6).view(n, 1, 1), torch.where(rand() < 0.5, rand() * 5, 23 + rand() * 5).view(n, 1, 1)
    radius = (1 + rand() * 1.2).view(n, 1, 1)
    dot = (radius - ((rows - cy) ** 2 + (cols - cx) ** 2).sqrt()).clamp(0, 1).unsqueeze(1)
    return torch.where(pick, torch.maximum(out, dot), out)


@torch.no_grad()
def hold_out_accuracy(model: nn.Module, data: dict) -> dict[str, float]:
    model.eval()
    out = {}
    for name, (_, _, images, labels) in data.items():
        logits = torch.cat([model(images[i : i + 2048].float().div(255)) for i in range(0, len(labels), 2048)])
        out[name] = round(100 * float((logits.argmax(1) == labels).float().mean()), 2)
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="digitnet-real")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE: a recipe field (model_args as JSON)")
    parser.add_argument("--clutter", type=float, default=0.0, help="probability of each kind of cheque clutter")
    parser.add_argument("--every", type=int, default=5, help="measure the hold-out every N epochs")
    args = parser.parse_args()

    recipe = get_recipe(args.recipe)
    model_args = [s for s in args.set if s.startswith("model_args=")]
    recipe = recipe.with_settings([s for s in args.set if not s.startswith("model_args=")])
    if model_args:
        recipe = recipe.override(model_args=json.loads(model_args[-1].partition("=")[2]))
    data = sources(list(recipe.mix))
    train_x = torch.cat([d[0] for d in data.values()])
    train_y = torch.cat([d[1] for d in data.values()])
    ids = torch.cat([torch.full((len(d[1]),), s) for s, d in enumerate(data.values())])
    shares = [w / sum(recipe.mix.values()) for w in recipe.mix.values()]
    pixels = train_x.float().div(255)
    mean, std = float(pixels.mean()), float(pixels.std())
    del pixels
    print({name: (len(d[1]), len(d[3])) for name, d in data.items()}, flush=True)

    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed + 1)
    model = create_model(
        recipe.model, in_shape=(1, 28, 28), num_classes=10, mean=(mean,), std=(std,), **recipe.model_args
    )
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    amp = recipe.bf16 and bf16_supported(torch.device("cpu"))
    steps = len(train_y) // recipe.batch_size
    print(f"{recipe.name}: {recipe.model} {recipe.model_args}, {count_parameters(model):,} parameters", flush=True)
    started = time.perf_counter()
    for epoch in range(recipe.epochs):
        order = source_order(ids, shares, generator)
        for i in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, epoch * steps + i, steps)
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            x = train_x[idx].float().div_(255)
            if args.clutter:
                x = clutter(x, args.clutter, generator)
            x = augment_batch(x, recipe.augment, generator).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = criterion(model(x), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        line = f"epoch {epoch + 1}/{recipe.epochs} ({time.perf_counter() - started:.0f} s)"
        if (epoch + 1) % args.every == 0 or epoch + 1 == recipe.epochs:
            line += f": hold-out accuracy {hold_out_accuracy(model, data)}"
        print(line, flush=True)
    print(
        json.dumps({"recipe": recipe.name, "model_args": recipe.model_args, "hold_out": hold_out_accuracy(model, data)})
    )


if __name__ == "__main__":
    main()
