"""Make a trained linenet run the bundled line recognizer: src/digitlab/weights/linenet/.

    DIGITLAB_DATA=../shared/data digitlab train linenet --val-split 0.1 --out runs/lines
    DIGITLAB_DATA=../shared/data python benchmarks/bundle_line_model.py runs/lines/linenet-<stamp>

Copies the run's weights and config.json, measures the model on the ORAND-CAR-A dev strings
(reporting only: nothing was chosen by them; the run validated on its own held-out training
strings and synthetic lines) as `digitlab evaluate` does, and writes weights/LINES.md, its card.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path

import digitlab
from digitlab.bench.common import machine
from digitlab.checkpoint import BUNDLED_LINE_RUN, CONFIG, HISTORY, WEIGHTS, load_weights, save_weights
from digitlab.files import read_json, write_json, write_text
from digitlab.models import count_parameters

CARD = "LINES.md"


def instruction_set() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    if "avx512f" in flags:
        return "AVX-512" + (" with BF16" if "avx512_bf16" in flags else "")
    return "AVX2" if "avx2" in flags else "no AVX2"


def card(config: dict, history: list[dict], metrics, parameters: int) -> str:
    recipe, lines = config["recipe"], config["train"]["lines"]
    seconds = sum(row["seconds"] for row in history)
    shares = ", ".join(f"{name} {share:.0%}" for name, share in config["train"]["mix"].items())
    by_length = "\n".join(
        f"| {length} | {entry['strings']} | {entry['strings_exact']:.2%} |"
        for length, entry in metrics.by_length.items()
    )
    last = history[-1]
    return f"""# The bundled line recognizer

`digitlab read` (methods `sequence` and `auto`, the default) reads each line of digits whole with
this model; it ships inside the package beside the digit model (README.md there).

- Recipe: `{recipe["name"]}` (`digitlab recipes`): CNN + BiLSTM + CTC (`linenet`, {parameters:,}
  parameters), one frame per 4 columns of a line 32 pixels high, the ten digits and CTC's blank.
- Data: lines of 1-10 digits written on the fly ({shares} of the digits of each epoch: MNIST train,
  USPS train, Optdigits train, HwD-1000 train), punctuation between them that it learns to pass
  over, photographed on paper with patterns, ruled lines, light, blur, noise and JPEG; and
  {recipe["real_lines"]:.0%} of every batch ORAND-CAR-A training strings (images a_car_000154-001099,
  {lines["real_training_lines"]} of them). Validation: {lines["validation"]}.
  Never the ORAND-CAR-A dev split, never real-digits/.
- Made by: `DIGITLAB_DATA=../shared/data digitlab train linenet --val-split 0.1 --out runs/lines`, then
  `python benchmarks/bundle_line_model.py RUN` ({date.today().isoformat()}); it keeps the last epoch.
- Training: {len(history)} epochs, {seconds:.0f} s on a {machine()} ({instruction_set()}), 2 threads,
  {config["train"]["precision"]}; last epoch: val lines exact {last["val_accuracy"]:.2%},
  val CTC loss {last["val_loss"]:.3f}.
- Files: `model.safetensors` ({(BUNDLED_LINE_RUN / WEIGHTS).stat().st_size / 1024:.0f} KB) and `config.json`.

On the ORAND-CAR-A dev strings (a_car_001100 and above, {len(metrics.labels)} cheque amounts, reporting only),
each image read whole as one line (`digitlab evaluate`): strings exact **{metrics.accuracy:.2%}**, digit
accuracy {metrics.digit_accuracy:.2%}.

| digits | strings | exact |
|---:|---:|---:|
{by_length}

`digitlab bench read` measures the whole reader with it (BENCHMARKS.md).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished linenet run directory")
    args = parser.parse_args()
    config, history = read_json(args.run / CONFIG), read_json(args.run / HISTORY)
    staged = BUNDLED_LINE_RUN.with_name(BUNDLED_LINE_RUN.name + ".new")
    staged.mkdir(exist_ok=True)
    save_weights(staged / WEIGHTS, load_weights(args.run / WEIGHTS))
    write_json(staged / CONFIG, config)
    if BUNDLED_LINE_RUN.exists():
        shutil.rmtree(BUNDLED_LINE_RUN)
    staged.rename(BUNDLED_LINE_RUN)
    model = digitlab.load_line_model(BUNDLED_LINE_RUN)
    metrics = digitlab.evaluate(BUNDLED_LINE_RUN, out=Path(args.run) / "bundled-evaluation")
    config["evaluation"] = {
        "dataset": "orand-car-a dev lines",
        "split": "test",
        "n": len(metrics.labels),
        "accuracy": metrics.accuracy,
        "digit_accuracy": metrics.digit_accuracy,
    }
    write_json(BUNDLED_LINE_RUN / CONFIG, config)
    text = card(config, history, metrics, count_parameters(model.module))
    write_text(BUNDLED_LINE_RUN.parent / CARD, text)
    print(text)
    print(json.dumps(config["evaluation"]))


if __name__ == "__main__":
    main()
