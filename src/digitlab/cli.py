"""The `digitlab` command: a thin layer over the Python API.

Each command is two functions side by side: `_X_options(parser)` adds its options, `cmd_X(args)`
runs it; `build_parser` lists the commands. An option's default is read from the function the
command calls (or the module that owns the value), never written again here. Those modules import
torch, cv2 or FastAPI (2-4 s on 2 cores), so a command's options are added only when that command
is parsed or its help printed (CommandParser): `digitlab --help` imports none of them.

Errors a user can act on (DigitlabError) print one line and exit 2; anything else is a bug
and exits 1 with its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, DigitlabError, UnknownNameError
from .recipes import OPTIMIZER_NAMES, SCHEDULE_NAMES
from .version import __version__

EPILOG = """examples:
  digitlab recipes                              what can be trained, published vs measured accuracy
  digitlab data verify mnist                    check the MNIST files' checksums
  digitlab train digitnet                       our default recipe (>= 99.6% on MNIST)
  digitlab train fast                           99% in about 4 s of training on 2 CPU cores
  digitlab train keras-cnn --epochs 2 --val-split 0.1
  digitlab train keras-cnn --set schedule=onecycle --set label_smoothing=0.1
  digitlab train --resume runs/keras-cnn-20261121-101500
  digitlab evaluate runs/digitnet-20261121-101500 --split train
  digitlab summary keras-mlp-512
  digitlab predict my_digit.png --show-input seen/
  digitlab read cheque.jpg --annotate cheque-read.png
  digitlab serve --port 8000                    then open http://127.0.0.1:8000/
  digitlab export --onnx digitnet-real.onnx      the bundled model as one ONNX file, verified
  digitlab predict --model digitnet-real.onnx my_digit.png
  digitlab ensemble runs/digitnet-max-* --out runs/max-ensemble   averaged probabilities, one model
  digitlab bench seeds --seeds 3
  digitlab bench speed                          fast over seeds, each trick, vs Keras 3 / DataLoader / sklearn

data directory: --data-dir, else $DIGITLAB_DATA, else ~/.cache/digitlab"""

# A RUN argument takes a run directory, an .onnx file from `digitlab export` or a shipped model's name
# (checkpoint.named_models; `digitlab recipes` lists them): SHIPPED in a help text becomes their names.
MODEL_HELP = (
    "run directory, a shipped model's name (SHIPPED), or an .onnx file from `digitlab export` "
    "(default: the bundled model)"
)
# What a folder given to predict or read is searched for: the extensions of the formats they read
# (preprocess.FORMATS), written here so that `--help` needs no Pillow.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, TIFF or WebP"
MiB = 1024 * 1024  # serve --max-body-mb's unit


# --- the parser ---------------------------------------------------------------------------


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's default at the end of its help, once: not where the help says it already
    ("(default: the bundled model)", "%(default)s"), nor where there is none to say (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        said = "(default" in help or "%(default)" in help
        none = default is None or default is False or default is argparse.SUPPRESS or default == []
        takes_default = action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        return help if said or none or not takes_default else help + " (default: %(default)s)"


class DefaultsRawEpilogFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the epilog's lines kept as written."""


class CommandParser(argparse.ArgumentParser):
    """One command's parser, whose options `add_options(parser)` adds on first use -- when the
    command is parsed or its help or usage printed -- rather than when `build_parser` lists the
    commands: the option builders import the modules their defaults come from."""

    def __init__(self, *args, add_options: Callable[[CommandParser], None] | None = None, **kwargs):
        self._pending_options = add_options
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def _add_pending_options(self) -> None:
        add_options, self._pending_options = self._pending_options, None
        if add_options is not None:
            add_options(self)
            if self._subparsers is None:  # a command that runs (not one that only lists its actions)
                self.add_argument(
                    "--verbose",
                    action="store_true",
                    help="on an error, print its details below its one line (the files missing, the URLs tried, ...)",
                )

    def parse_known_args(self, args=None, namespace=None):
        self._add_pending_options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_pending_options()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_pending_options()
        return super().format_help()


Commands = list[tuple[str, str, Callable[[CommandParser], None]]]  # (name, one-line help, options builder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitlab",
        description="Handwritten-digit recognition: the classic MNIST recipes reproduced, faster recipes of our own.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    _add_commands(
        parser,
        "command",
        "COMMAND",
        [
            ("recipes", "list recipes: source, model, parameters, published vs our accuracy", _recipes_options),
            ("data", "datasets: list, download, verify checksums", _data_options),
            ("train", "train a recipe; writes runs/<recipe>-<timestamp>/", _train_options),
            ("evaluate", "report, confusion matrix, error gallery for a run", _evaluate_options),
            ("summary", "Keras-style table: layers, output shapes, parameter counts", _summary_options),
            (
                "predict",
                "one digit per image: digit, confidence, top 3 (MNIST-style preparation first)",
                _predict_options,
            ),
            ("read", "lines of digits in photos or scans: text, boxes, confidences", _read_options),
            ("serve", "the REST API and the browser page (draw a digit, drop a photo)", _serve_options),
            ("export", "a run (or the bundled model) as one self-contained ONNX file, verified", _export_options),
            (
                "ensemble",
                "one model from several runs: their probabilities averaged, usable as a run",
                _ensemble_options,
            ),
            ("bench", "reproducible benchmark tables written to BENCHMARKS.md", _bench_options),
        ],
    )
    return parser


def _add_commands(parser: argparse.ArgumentParser, dest: str, metavar: str, commands: Commands) -> None:
    """`parser`'s subcommands (commands, a command's actions, the bench suites), one required."""
    subparsers = parser.add_subparsers(dest=dest, metavar=metavar, required=True, parser_class=CommandParser)
    for name, help, add_options in commands:
        subparsers.add_parser(name, help=help, add_options=add_options)


def _defaults(function: Callable) -> dict:
    """`function`'s parameters that have a default, and that default: a command's defaults are
    those of the function it calls."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


# --- options several commands share -------------------------------------------------------


def _shipped(help: str) -> str:
    """`help` with SHIPPED replaced by the names of the models shipped in the package."""
    from .checkpoint import named_models  # imported here: start-up time (NumPy; no torch)

    return help.replace("SHIPPED", ", ".join(named_models()).replace("%", "%%"))


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="RUN", help=_shipped(MODEL_HELP))


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "int8"),
        default="auto",
        help="auto (default): a run's int8 export (model-int8.onnx, which the bundled model ships) "
        "where it has one made from its weights, else float32; float32 or int8: that one",
    )


def _add_device(parser: argparse.ArgumentParser, help: str = "auto, cpu or cuda") -> None:
    parser.add_argument("--device", default="auto", help=help)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", metavar="DIR", help="dataset folder (default: $DIGITLAB_DATA, else ~/.cache/digitlab)"
    )


def _add_bench_files(
    parser: argparse.ArgumentParser, results, markdown, section: str, results_help: str = "JSON file of the results"
) -> None:
    parser.add_argument("--results", default=results, metavar="FILE.json", help=results_help)
    parser.add_argument(
        "--markdown", default=markdown, metavar="FILE.md", help=f"Markdown file whose '{section}' section is rewritten"
    )


def _bench_files(args) -> tuple[Path, Path]:
    """A suite's --results and --markdown, checked before it runs (files.output_file: their folders
    exist -- the defaults are the repository's benchmarks/results/ and BENCHMARKS.md -- and they end
    .json and .md)."""
    from .files import output_file  # imported here: start-up time (NumPy)

    return output_file(args.results, (".json",), "benchmark results"), output_file(
        args.markdown, (".md", ".markdown"), "a benchmark table"
    )


# --- commands ---------------------------------------------------------------------------


def _recipes_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_recipes)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_recipes(args) -> int:
    from .catalog import recipe_table, shipped_table  # imported here: start-up time (NumPy; the table needs no torch)

    rows = recipe_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'recipe':<19}{'dataset':<15}{'model':<11}{'params':>10}  {'published':>9}  {'ours':>20}  source")
    for r in rows:
        pub = f"{r['published_accuracy'] * 100:.2f}%" if r["published_accuracy"] else "-"
        ours = r["measured"] or "not measured"
        print(
            f"{r['name']:<19}{r['dataset']:<15}{r['model']:<11}{r['parameters']:>10,}  {pub:>9}  {ours:>20}  "
            f"{r['source']}"
        )
    print("\n'ours': mean ± sd over seeds from `digitlab bench seeds` (BENCHMARKS.md).")
    print("\nshipped models, by name in place of a run directory (--model NAME, evaluate/export/summary NAME):")
    for row in shipped_table():
        if row["same_as"]:
            print(f"  {row['name']:<17}{row['same_as']}: the default model")
            continue
        tested = row["evaluation"]
        shown = f"{tested['accuracy'] * 100:.2f}% on {tested['dataset']} {tested['split']}" if tested else ""
        print(f"  {row['name']:<17}recipe {row['recipe'] or '?':<25}{shown}")
    return 0


def _data_options(parser: CommandParser) -> None:
    _add_commands(
        parser,
        "action",
        "ACTION",
        [
            ("list", "every dataset, its folder and whether its files are there", _data_list_options),
            ("download", "download a dataset's missing files (checksums verified)", _data_download_options),
            (
                "verify",
                "check files against their published MD5; exit 2 if any is missing or wrong",
                _data_verify_options,
            ),
        ],
    )


def _data_list_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_data_list)
    _add_data_dir(parser)


def cmd_data_list(args) -> int:
    from .data import describe_datasets, resolve_data_dir  # imported here: start-up time (NumPy)

    print(f"data directory: {resolve_data_dir(args.data_dir)}\n")
    print(f"{'dataset':<15}{'shape':<11}{'classes':>7}  {'files':<9} description")
    for row in describe_datasets(args.data_dir):
        shape = "x".join(str(d) for d in row["image_shape"])
        state = "bundled" if row["folder"] is None else ("present" if row["present"] else "missing")
        print(f"{row['name']:<15}{shape:<11}{row['num_classes']:>7}  {state:<9} {row['description']}")
    return 0


def _data_download_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_data_download)
    parser.add_argument("name", help="dataset name (see `digitlab data list`)")
    _add_data_dir(parser)


def cmd_data_download(args) -> int:
    from .data import download_dataset  # imported here: start-up time (NumPy)

    folder = download_dataset(args.name, args.data_dir)
    print(f"{args.name}: all files present and verified in {folder}")
    return 0


def _data_verify_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_data_verify)
    parser.add_argument("name", nargs="?", help="dataset name (default: every dataset whose folder exists)")
    _add_data_dir(parser)


def cmd_data_verify(args) -> int:
    from .data import describe_datasets, verify_dataset  # imported here: start-up time (NumPy)

    if args.name:
        names = [args.name]
    else:  # every dataset with something on disk, plus the bundled one
        names = [
            r["name"] for r in describe_datasets(args.data_dir) if r["folder"] is None or Path(r["folder"]).is_dir()
        ]
    bad = 0
    for name in names:
        for row in verify_dataset(name, args.data_dir):
            bad += row["status"] != "ok"
            print(f"{name:<15}{row['status']:<10}{row['file']:<38} {row['md5'] or ''}")  # orand's json: 36
    if bad:
        print(f"\n{bad} file(s) missing or wrong; `digitlab data download NAME` fetches them", file=sys.stderr)
        return 2
    return 0


TRAIN_EPILOG = """\
several processes (DistributedDataParallel: gloo on the CPU, NCCL on GPUs):
  torchrun --standalone --nproc-per-node 2 -m digitlab train digitnet
  torchrun --nnodes 2 --node-rank R --nproc-per-node 4 --master-addr HOST0 --master-port 29500 \\
      -m digitlab train digitnet           (on each machine; README: "Several processes, several machines")
--batch-size is the global batch: N processes take the steps one process takes with it.
Only rank 0 writes the run directory; a process that dies ends the job with an error."""


def _train_options(parser: CommandParser) -> None:
    from . import api  # imported here: start-up time (torch)
    from .train import KEEP

    defaults = _defaults(api.train)
    parser.set_defaults(func=cmd_train)
    parser.formatter_class, parser.epilog = DefaultsRawEpilogFormatter, TRAIN_EPILOG
    parser.add_argument("recipe", nargs="?", help="recipe name (see `digitlab recipes`); omit with --resume")
    parser.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="override the recipe's batch size (under torchrun: the global batch, split over processes)",
    )
    parser.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    parser.add_argument("--seed", type=int, help="override the recipe's seed (same seed, same history)")
    _add_device(parser, "auto (CUDA when present), cpu or cuda")
    parser.add_argument(
        "--val-split",
        type=float,
        default=defaults["val_split"],
        help="hold out this fraction of the training set for validation (default 0.1 with --data, else 0: "
        "validate on the test set, as the tutorials do)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="SOURCE",
        help="train on your own digits instead of the recipe's dataset, repeatable: a folder with one "
        "subfolder of images per class (DIR/0/*.png ... DIR/9/), a CSV of file,label rows (paths relative "
        "to it) or a dataset name; joined. Each image is prepared as predict prepares it; the test split "
        "is the named datasets' test, else the held-out part. Recorded for --resume",
    )
    parser.add_argument(
        "--init",
        metavar="RUN",
        help="fine-tune: start from RUN's weights (a run directory, or 'bundled' for the bundled model) "
        "instead of random ones; the recipe's network must be RUN's. Recorded in config.json",
    )
    parser.add_argument("--limit", type=int, help="train on a seeded random subset of this many training images")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"change any other recipe field, repeatable: optimizer={'|'.join(OPTIMIZER_NAMES)}, "
        f"schedule={'|'.join(SCHEDULE_NAMES)}, label_smoothing=0.1, momentum=0.9, "
        "weight_decay=5e-4, augment=SHIFT,ROTATE,SCALE (e.g. 2,10,0.1), channels_last=true, "
        "mix=SOURCE:WEIGHT,... (datasets or your folders, each its share of every epoch), "
        "split_seed=0 (hold out the images seed 0 holds out, to compare seeds on one hold-out) ...",
    )
    parser.add_argument("--out", default=defaults["out"], help="folder for run directories")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN from its last complete checkpoint (after a "
        "crash or a kill: from the start if no epoch had finished; only --epochs may change, and "
        "--tensorboard be added)",
    )
    parser.add_argument(
        "--keep",
        choices=KEEP,
        help="which epoch's weights the run keeps: last (the default, as the published results were "
        "measured) or best (the best validation accuracy; needs --val-split). Recorded in config.json",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log each epoch's scalars into RUN/tensorboard/ (needs the tensorboard package: "
        "pip install 'digitlab[tensorboard]')",
    )
    parser.add_argument("--quiet", action="store_true", help="no header, progress bars or epoch lines")
    _add_data_dir(parser)


def cmd_train(args) -> int:
    from . import api  # imported here: start-up time (torch)
    from .files import output_folder

    if not args.recipe and not args.resume:
        raise UnknownNameError("name a recipe to train (see `digitlab recipes`) or --resume RUN")
    if not args.resume:
        output_folder(args.out)  # created when the run starts; a file in its way, or no permission, stops it now
    run = api.train(
        args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        data_dir=args.data_dir,
        out=args.out,
        resume=args.resume,
        val_split=args.val_split,
        subset=args.limit,
        settings=args.settings,
        data=args.data,
        init=args.init,
        progress=not args.quiet,
        keep=args.keep,
        tensorboard=args.tensorboard,
    )
    if run.rank != 0:  # under torchrun, rank 0 reports for all
        return 0
    last, kept, calibration = run.history[-1], run.config["kept"], run.config["calibration"]
    metrics = json.loads((run.path / "metrics.json").read_text())
    print(
        f"{run.recipe.name}: test accuracy {metrics['accuracy'] * 100:.2f}% after {last['epoch']} "
        f"epoch{'s' if last['epoch'] != 1 else ''} "
        f"({sum(r['seconds'] for r in run.history):.1f} s of training)"
    )
    if kept["keep"] == "best":
        print(f"kept epoch {kept['epoch']} of {kept['of_epochs']}: the best val_accuracy, {kept['val_accuracy']:.4f}")
    if calibration["fitted_on"]:
        print(f"calibrated: temperature {calibration['temperature']:.4f}, fitted on {calibration['fitted_on']}")
    print(f"run directory: {run.path}")
    return 0


def _evaluate_options(parser: CommandParser) -> None:
    from . import api  # imported here: start-up time (torch)

    parser.set_defaults(func=cmd_evaluate)
    parser.add_argument(
        "run",
        metavar="RUN",
        help=_shipped(
            "run directory, a shipped model's name (SHIPPED), or an .onnx file from `digitlab export` (then give --out)"
        ),
    )
    parser.add_argument(
        "--split",
        default=_defaults(api.evaluate)["split"],
        choices=["test", "train", "val"],
        help="which split (default: %(default)s; val: the images a --val-split run held out)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="write the files into this folder (created if missing) instead of the run directory "
        "(required for an .onnx file). A shipped model's folder is never written into: its files go to "
        "runs/evaluate-NAME/ (NAME: its folder's name, e.g. digitnet-real for bundled) unless --out says otherwise",
    )
    _add_device(parser)
    _add_precision(parser)
    _add_data_dir(parser)


def cmd_evaluate(args) -> int:
    from . import api  # imported here: start-up time (torch)
    from .checkpoint import resolve_model
    from .evaluate import evaluation_folder
    from .files import output_folder

    run = resolve_model(args.run)
    folder = evaluation_folder(run, args.out)  # --out, else the run directory; a shipped model's: runs/evaluate-NAME/
    if folder != run:  # checked before the work; a run directory is load_model's to check
        output_folder(folder)
    metrics = api.evaluate(
        args.run, split=args.split, data_dir=args.data_dir, out=folder, device=args.device, precision=args.precision
    )
    print(metrics.report)
    print(f"accuracy {metrics.accuracy * 100:.2f}%  loss {metrics.loss:.4f}  ({len(metrics.labels)} images)")
    print(f"files written to {folder}")
    return 0


def _summary_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_summary)
    parser.add_argument("target", help="recipe name or run directory")


def cmd_summary(args) -> int:
    from .catalog import summary_text  # imported here: start-up time (torch)

    print(summary_text(args.target))
    return 0


def _predict_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_predict)
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help=f"image files ({IMAGE_FORMATS}), or folders: the image files in each, by name",
    )
    _add_model(parser)
    _add_precision(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--show-input",
        metavar="DIR",
        help="save the 28x28 image the model saw for each input in this folder (created if missing)",
    )


def cmd_predict(args) -> int:
    from . import api  # imported here: start-up time (torch)
    from .files import output_folder

    images = _image_inputs(args.images)
    if args.show_input:
        output_folder(args.show_input)
    model = api.load_model(args.model, precision=args.precision)
    # Every input first: a bad one names itself and stops the command before any file is written.
    predictions = [api.predict(path, model)[0] for path in images]
    rows = [{"image": path, **prediction.to_json()} for path, prediction in zip(images, predictions)]
    if args.show_input:
        import cv2  # imported here: start-up time

        targets = _output_paths([Path(args.show_input) / (Path(path).stem + "-28x28.png") for path in images])
        outputs = []
        for row, target, prediction in zip(rows, targets, predictions):
            _, png = cv2.imencode(".png", prediction.model_input)  # 28x28 uint8: always encodes
            outputs.append((target, png.tobytes()))
            row["model_input"] = str(target)
        _write_all(outputs)
    if args.json:
        for path, prediction in zip(images, predictions):
            _several_digits_note(path, prediction)
        print(json.dumps(rows, indent=2))
        return 0
    for path, prediction in zip(images, predictions):
        top = "  ".join(f"{d} {p * 100:.1f}%" for d, p in prediction.top3)
        print(f"{path}: {prediction.digit} ({prediction.confidence * 100:.1f}%)   top 3: {top}", flush=True)
        _several_digits_note(path, prediction)
    return 0


def _several_digits_note(path: str, prediction) -> None:
    """On stderr, where the image holds several digits side by side: `read` is the command for it
    (the prediction is left as it is: a note, not a refusal)."""
    if prediction.several_digits:
        name = one_line(path)
        print(
            f"{name} holds {prediction.digit_marks} digit-sized marks: "
            f"`digitlab read {shlex.quote(name)}` reads them all",
            file=sys.stderr,
        )


def _image_inputs(paths: list[str]) -> list[str]:
    """The image files named, each folder among them replaced by the image files directly in it
    (by their extensions, IMAGE_SUFFIXES; sorted by name; hidden files and subfolders left out),
    with a count on stderr ("DIR: 12 images"). A folder holding no image file is refused."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)  # a file, or what load_image will name as missing or unreadable
            continue
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except OSError as err:
            raise ConfigError(f"cannot list the folder {path}: {err.strerror or err}") from err
        visible = [e for e in entries if not e.name.startswith(".")]
        images = [e for e in visible if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file()]
        others = len(visible) - len(images)
        skipped = f" ({others} other entr{'y' if others == 1 else 'ies'} left out)" if others else ""
        if not images:
            raise ConfigError(
                f"the folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}){skipped}; "
                "its subfolders are not searched"
            )
        print(f"{one_line(path)}: {len(images)} image{'s' if len(images) > 1 else ''}{skipped}", file=sys.stderr)
        files.extend(os.path.join(path, e.name) for e in images)
    return files


def _read_options(parser: CommandParser) -> None:
    from .read import METHODS, UNSURE_BELOW  # imported here: start-up time (cv2, NumPy)

    parser.set_defaults(func=cmd_read)
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="photos or scans of one or more lines of digits, or folders: the image files in each, by name",
    )
    _add_model(parser)
    _add_precision(parser)
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="how each line is read: 'segment' cuts it into digits and classifies each with --model; "
        "'sequence' reads it whole with the line recognizer (--line-model); 'auto' does both and keeps, "
        "line by line, the reading the line recognizer finds likelier",
    )
    parser.add_argument(
        "--line-model",
        metavar="RUN",
        help="a run directory of the line recognizer (`digitlab train linenet`) or a shipped one's name "
        "(linenet); default: the bundled one",
    )
    parser.add_argument(
        "--unsure-below",
        type=float,
        default=UNSURE_BELOW,
        metavar="P",
        help="digits whose top probability is below P read as '?'",
    )
    parser.add_argument(
        "--annotate",
        metavar="OUT.png",
        help="draw boxes and readings into this file, in the format its extension names: .png, .jpg, "
        ".webp, .bmp or .tif; with several images, OUT-<image name>.EXT for each (an image under 256 "
        "pixels on its shorter side is drawn enlarged)",
    )
    parser.add_argument(
        "--annotate-confidence",
        action="store_true",
        help="with --annotate: each digit's probability drawn under its box, smaller ('98%%'; for a '?' "
        "the probability of its best guess)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the whole structure as JSON; every box is [x, y, w, h]: left, top, width and "
        "height in pixels of the original image",
    )


BOX_FORMAT = "[x, y, w, h]: left, top, width, height in pixels of the original image (origin top left)"


def cmd_read(args) -> int:
    from . import api  # imported here: start-up time (torch)
    from .read.annotation import annotation_bytes, annotation_path

    images = _image_inputs(args.images)
    targets = []
    if args.annotate:  # checked before any work: its folder exists, its extension is a format
        out = annotation_path(args.annotate)
        several = [out.with_name(f"{out.stem}-{Path(path).stem}{out.suffix}") for path in images]
        targets = _output_paths(several if len(images) > 1 else [out])
    elif args.annotate_confidence:
        raise ConfigError("--annotate-confidence draws on the image --annotate OUT.png writes: give --annotate too")
    model = api.load_model(args.model, precision=args.precision)
    line_model = None if args.method == "segment" else api.load_line_model(args.line_model)
    # Every input read (and every annotation drawn) first: a bad one stops the command before any file is written.
    readings = [
        api.read(path, model, unsure_below=args.unsure_below, method=args.method, line_model=line_model)
        for path in images
    ]
    results = [
        {"image": path, "box_format": BOX_FORMAT, **reading.to_json()} for path, reading in zip(images, readings)
    ]
    if targets:
        _write_all(
            [
                (target, annotation_bytes(path, reading, target.suffix, confidence=args.annotate_confidence))
                for target, path, reading in zip(targets, images, readings)
            ]
        )
        for result, target in zip(results, targets):
            result["annotation"] = str(target)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for path, reading in zip(images, readings):
        print(f"{path}:")
        for line in reading.lines:
            sure = " ".join(f"{d.text}:{d.confidence * 100:.0f}%" for d in line.digits)
            print(f"  {line.text}    ({sure})")
        if not reading.lines:
            print("  (no digits found)")
    return 0


def _output_paths(paths: list[Path]) -> list[Path]:
    """The files a command will write, refused before any is written if two are the same file
    (two inputs named a.png in different folders): the second would replace the first."""
    seen = {}
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            raise ConfigError(f"two inputs would both be written to {str(path)!r}: give them different names")
        seen[key] = path
    return paths


def _write_all(outputs: list[tuple[Path, bytes]]) -> None:
    """Write each (path, bytes) whole or not at all (files.atomic_write)."""
    from .files import atomic_write  # imported here: start-up time (NumPy)

    for path, data in outputs:
        atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))


def _serve_options(parser: CommandParser) -> None:
    from .serve import serve  # imported here: start-up time (FastAPI, uvicorn, torch)

    defaults = _defaults(serve)
    read_timeout = defaults["read_timeout"]
    parser.set_defaults(func=cmd_serve)
    parser.description = (
        "Serve the REST API (/api/predict, /api/read, /api/models, /healthz, OpenAPI docs at "
        "/docs) and the page at / on uvicorn. Ctrl-C or SIGTERM stops it cleanly."
    )
    _add_model(parser)
    _add_precision(parser)
    parser.add_argument(
        "--line-model",
        metavar="RUN",
        help="the line recognizer /api/read uses (a `linenet` run directory, or a shipped one's name); "
        "default: the bundled one",
    )
    parser.add_argument("--host", default=defaults["host"], help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=defaults["port"], help="TCP port")
    # %(default)g below: the service's limits are floats (10.0), shown as 10 as this help always did
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=defaults["max_body"] / MiB,
        help="larger request bodies are refused with 413 (default: %(default)g)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=defaults["max_pixels"],
        help="images declaring more pixels are refused with 413 before they are decoded",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=defaults["threads"],
        help="threads for model work (ONNX Runtime and PyTorch), in each worker (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults["workers"],
        help="processes answering requests, each with its own model and its share of the memory "
        "limits; 1: one process (default: one per core, %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=read_timeout,
        metavar="SECONDS",
        help="time for a request's head, and again for its body, to arrive; a slower one gets 408 "
        f"and its connection is closed (an 8 MB photo in {read_timeout:g} s needs "
        f"{8 * 8 / read_timeout:g} Mbit/s) (default: %(default)g)",
    )
    parser.add_argument(
        "--write-timeout",
        type=float,
        default=defaults["write_timeout"],
        metavar="SECONDS",
        help="time a client may take to read on while an answer waits for it; a slower one's "
        "connection is closed and its answer dropped (unread answers held memory) "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--log-level",
        default=defaults["log_level"],
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level",
    )


def cmd_serve(args) -> int:
    from .serve import serve  # imported here: start-up time (FastAPI, uvicorn, torch)

    if (
        args.max_body_mb <= 0
        or args.max_pixels <= 0
        or args.read_timeout <= 0
        or args.write_timeout <= 0
        or args.threads < 1
        or args.workers < 1
    ):
        raise ConfigError(
            "--max-body-mb, --max-pixels, --read-timeout and --write-timeout must be positive, "
            "--threads and --workers at least 1"
        )
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must lie in 1-65535, got {args.port}")
    serve(
        args.model,
        host=args.host,
        port=args.port,
        max_body=round(args.max_body_mb * MiB),
        max_pixels=args.max_pixels,
        threads=args.threads,
        workers=args.workers,
        precision=args.precision,
        read_timeout=args.read_timeout,
        write_timeout=args.write_timeout,
        log_level=args.log_level,
        line_model=args.line_model,
    )
    return 0


def _export_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_export)
    parser.description = (
        "Export a model to ONNX: input 'images' uint8 (N, C, H, W), any batch size; output "
        "'logits' float32; the run's config (classes, image shape, calibration) in the file's "
        "metadata, so `--model FILE.onnx` works wherever a run does. Before the file is written, "
        "ONNX Runtime runs it on the test set of the model's dataset: it must give PyTorch's "
        "class on >= 99.9% of the images with logits within 1e-4, or nothing is written. With "
        "--int8 the convolutions and the last layer are quantised to int8 (calibrated on 2,000 of the "
        "run's training images; about twice as fast on a CPU with VNNI, see BENCHMARKS.md), held to "
        "PyTorch's class on >= 99.9% and an accuracy at most 0.1 point below PyTorch's."
    )
    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help=_shipped("run directory, or a shipped model's name (SHIPPED) (default: the bundled model)"),
    )
    parser.add_argument(
        "--onnx", required=True, metavar="FILE.onnx", help="the file to write, in a folder that exists already"
    )
    parser.add_argument("--no-verify", action="store_true", help="write without checking against PyTorch")
    parser.add_argument(
        "--int8", action="store_true", help="quantise to int8 (digit models; needs the run's training data)"
    )
    _add_data_dir(parser)


def cmd_export(args) -> int:
    from .export import export_onnx  # imported here: start-up time (torch, ONNX)

    done = export_onnx(args.run, args.onnx, verify=not args.no_verify, data_dir=args.data_dir, int8=args.int8)
    print(f"wrote {done.path}: {done.size / 1024:,.0f} KiB, {done.parameters:,} parameters ({done.exporter} exporter)")
    if done.verification is None:
        print("not verified (--no-verify)")
    else:
        print(f"verified with ONNX Runtime: {done.verification}")
    return 0


def _ensemble_options(parser: CommandParser) -> None:
    parser.set_defaults(func=cmd_ensemble)
    parser.description = (
        "Make one model of several runs of digit models trained on the same data (e.g. one recipe "
        "with different --seed): it averages their probabilities, each at its run's calibration "
        "temperature. The result is a run directory like any other -- `--model DIR` in predict, read "
        "and serve, `digitlab evaluate DIR`, `digitlab export DIR` (one ONNX file holding every "
        "member) -- written whole or not at all. Then it is evaluated on the test set, beside what "
        "each member measured (each run's own metrics.json). With --shifts 1 every member also reads "
        "the image's four one-pixel shifts (test-time augmentation: five times the computation), and "
        "one run is enough: `digitlab ensemble RUN --shifts 1 --out DIR`."
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help=_shipped("run directories or shipped models' names (SHIPPED), 2 to 8 (1 with --shifts 1)"),
    )
    _add_shifts(
        parser,
        "1: average over the image and its four one-pixel shifts (up, down, left, right), as "
        "digitnet-max and mnist-ensemble do; 0: the image alone (default)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="the new folder to write (must not exist)")
    parser.add_argument(
        "--no-evaluate", action="store_true", help="only write it (evaluating needs the dataset's test split)"
    )
    _add_data_dir(parser)


def _add_shifts(parser: CommandParser, help: str) -> None:
    """--shifts: test-time augmentation, the image's four one-pixel shifts (models/ensemble.py's SHIFTS)."""
    parser.add_argument("--shifts", type=int, choices=(0, 1), default=0, help=help)


def cmd_ensemble(args) -> int:
    from . import api  # imported here: start-up time (torch)
    from .files import read_json

    folder = api.ensemble(args.runs, args.out, args.shifts)
    members = read_json(folder / "config.json")["ensemble"]["members"]
    views = ", each over the image and its four one-pixel shifts" if args.shifts else ""
    print(f"wrote {folder}: {len(members)} member{'s' * (len(members) > 1)}{views}")
    for member in members:
        accuracy = member["test_accuracy"]
        shown = f"{accuracy * 100:.2f}%" if isinstance(accuracy, (int, float)) else "not evaluated"
        print(f"  {member['run']}  ({member['recipe']}, seed {member['seed']}): test accuracy {shown}")
    if not args.no_evaluate:
        metrics = api.evaluate(folder, data_dir=args.data_dir)
        accuracy, images = metrics.accuracy * 100, len(metrics.labels)
        print(f"ensemble: test accuracy {accuracy:.2f}%  loss {metrics.loss:.4f}  ({images} images)")
        print(f"report and plots written to {folder}")
    return 0


# --- bench: one suite each --------------------------------------------------------------


def _bench_options(parser: CommandParser) -> None:
    _add_commands(
        parser,
        "suite",
        "SUITE",
        [
            (
                "seeds",
                "train the classic recipes in full over several seeds vs published accuracy",
                _bench_seeds_options,
            ),
            (
                "read",
                "read real handwriting (USPS, cheques, photos) and generated pages, beside Tesseract when installed",
                _bench_read_options,
            ),
            (
                "infer",
                "inference speed: PyTorch eager, torch.compile, ONNX Runtime float and int8; images/s, latency",
                _bench_infer_options,
            ),
            ("serve", "load test of `digitlab serve` on loopback: requests/s, p50/p99 latency", _bench_serve_options),
            (
                "speed",
                (
                    "training speed: `fast` over seeds, each trick undone, vs Keras 3, a DataLoader loop, "
                    "scikit-learn; peak memory"
                ),
                _bench_speed_options,
            ),
            (
                "fuzz",
                (
                    "damaged files through the IDX reader, the image path and the model loader: only digitlab's "
                    "errors may come out"
                ),
                _bench_fuzz_options,
            ),
            (
                "finetune",
                "fine-tuning an MNIST model on N digits per class of a new writer (USPS) vs from scratch",
                _bench_finetune_options,
            ),
            (
                "prepare",
                "MNIST-style preparation per digit, fast path vs the reference, and their agreement",
                _bench_prepare_options,
            ),
        ],
    )


def _bench_seeds_options(parser: CommandParser) -> None:
    # bench_seeds takes no defaults of its own: these are the command's
    parser.set_defaults(func=cmd_bench_seeds)
    parser.add_argument("--recipes", nargs="+", help="recipes to run (default: every recipe whose data is available)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="seeds per recipe (fewer for the slow ones, see --max-seconds); 0 with --ensemble or --shifts 1: "
        "train nothing, only measure the runs already there (after seeds trained side by side)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=900,
        help="stop adding seeds to a recipe once its runs took this long in total",
    )
    _add_bench_files(
        parser,
        "benchmarks/results/seeds.json",
        "BENCHMARKS.md",
        "seeds",
        results_help="JSON file the runs are appended to (rows from earlier invocations are kept)",
    )
    parser.add_argument("--out", default="runs/bench", help="folder for the run directories")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also make the ensemble of each recipe's seed runs in the results file whose run directories "
        "are still there, this invocation's and earlier ones' (`digitlab ensemble`), and add its row",
    )
    _add_shifts(
        parser,
        "1: also measure each seed run (and with --ensemble the ensemble) over the image and its four "
        "one-pixel shifts (`digitlab ensemble --shifts 1`), rows 'RECIPE +shifts'",
    )
    parser.add_argument(
        "--first-seed", type=int, help="the first seed (default: the recipe's); e.g. one seed per invocation"
    )
    _add_device(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")
    _add_data_dir(parser)


def cmd_bench_seeds(args) -> int:
    from .bench.seeds import bench_seeds
    from .files import output_folder

    results, markdown = _bench_files(args)

    bench_seeds(
        recipes=args.recipes,
        seeds=args.seeds,
        max_seconds=args.max_seconds,
        results=results,
        markdown=markdown,
        out=output_folder(args.out),
        device=args.device,
        data_dir=args.data_dir,
        threads=args.threads,
        ensemble_of=args.ensemble,
        first_seed=args.first_seed,
        shifts=args.shifts,
    )
    return 0


def _bench_read_options(parser: CommandParser) -> None:
    from .bench.read import DIGIT_SETS, bench_read  # imported here, as every suite: start-up time (torch, cv2)
    from .read import METHODS, UNSURE_BELOW

    defaults = _defaults(bench_read)
    parser.set_defaults(func=cmd_bench_read)
    parser.add_argument(
        "--model",
        metavar="RUN",
        action="append",
        help=_shipped(
            "run directory, .onnx file, or a shipped model's name (SHIPPED); repeatable: the models are "
            "measured side by side, each in its own column (default: the bundled model alone)"
        ),
    )
    parser.add_argument(
        "--digit-sets",
        nargs="*",
        metavar="NAME",
        default=list(DIGIT_SETS),
        help=f"datasets of 28x28 digits whose test split is classified digit by digit (default: "
        f"{' '.join(DIGIT_SETS)}; none: --digit-sets alone)",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=defaults["synthetic_pages"],
        help="synthetic pages generated from the MNIST test set",
    )
    parser.add_argument(
        "--scenes", type=int, default=defaults["scenes"], help="photo scenes generated from the MNIST test set"
    )
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="seed of the synthetic pages and scenes")
    parser.add_argument(
        "--method",
        action="append",
        choices=METHODS,
        help="a reading method to measure, each in its own column; repeatable (default: "
        f"{' '.join(METHODS)}: the reader before issue 15 beside the line recognizer and both together)",
    )
    parser.add_argument(
        "--line-model",
        metavar="RUN",
        help="the line recognizer's run directory, or a shipped one's name (default: the bundled one)",
    )
    parser.add_argument(
        "--unsure-below",
        type=float,
        default=defaults["unsure_below"],
        help=f"the reader's unsure threshold (default: digitlab.read's, {UNSURE_BELOW})",
    )
    parser.add_argument("--limit", type=int, help="at most this many images (digits, pages) per set (quick runs)")
    parser.add_argument("--no-tesseract", action="store_true", help="do not run Tesseract even when installed")
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench read")
    _add_data_dir(parser)


def cmd_bench_read(args) -> int:
    from .bench.read import bench_read
    from .read import METHODS

    results, markdown = _bench_files(args)

    bench_read(
        data_dir=args.data_dir,
        model=args.model,  # None (the bundled model) or the list of --model given
        markdown=markdown,
        results=results,
        synthetic_pages=args.pages,
        seed=args.seed,
        unsure_below=args.unsure_below,
        tesseract=not args.no_tesseract,
        limit=args.limit,
        digit_sets=args.digit_sets,
        methods=args.method or METHODS,
        line_model=args.line_model,
        scenes=args.scenes,
    )
    return 0


def _bench_infer_options(parser: CommandParser) -> None:
    from .bench.infer import MIN_CALLS, PATHS, bench_infer  # imported here: start-up time (torch, ONNX Runtime)

    defaults = _defaults(bench_infer)
    parser.set_defaults(func=cmd_bench_infer)
    parser.description = (
        "For the bundled model and each --model: images/s at batch 256 and 1024, one-image "
        "latency p50/p99, agreement with eager PyTorch and accuracy on the MNIST test set, for PyTorch "
        "eager (channels_last), torch.compile (compilation timed apart), ONNX Runtime with and without "
        "batch norms folded into the convolutions, and ONNX Runtime int8 (calibrated on MNIST training "
        "images) with every convolution quantised or all but the first."
    )
    parser.add_argument(
        "--model",
        metavar="RUN",
        action="append",
        default=[],
        help=_shipped(
            "also this run directory, .onnx file or shipped model's name (SHIPPED), repeatable "
            "(the bundled model always runs)"
        ),
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=list(defaults["paths"]),
        choices=PATHS,
        metavar="PATH",
        help=f"inference paths to measure: {', '.join(PATHS)} (default: all)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=defaults["seconds"],
        help="how long each batch size runs (default: %(default)g)",
    )
    parser.add_argument(
        "--calls", type=int, default=defaults["calls"], help=f"one-image calls behind p50/p99, at least {MIN_CALLS}"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime (default: one per core)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 0.2 s per batch size, 30 calls, 1,000 images (checks the machinery; figures mean nothing)",
    )
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench infer")
    _add_data_dir(parser)


def cmd_bench_infer(args) -> int:
    from .bench.infer import bench_infer

    results, markdown = _bench_files(args)

    bench_infer(
        args.model,
        paths=args.paths,
        seconds=args.seconds,
        calls=args.calls,
        threads=args.threads,
        data_dir=args.data_dir,
        quick=args.quick,
        results=results,
        markdown=markdown,
    )
    return 0


def _bench_serve_options(parser: CommandParser) -> None:
    from .bench.serve import KINDS, bench_serve  # imported here: start-up time (torch, cv2)
    from .serve import serve

    defaults = _defaults(bench_serve)
    parser.set_defaults(func=cmd_bench_serve)
    parser.add_argument(
        "--clients",
        type=int,
        default=defaults["clients"],
        help="concurrent clients, each with one keep-alive connection",
    )
    parser.add_argument(
        "--seconds", type=float, default=defaults["seconds"], help="how long each kind of request is sent"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(defaults["kinds"]),
        choices=KINDS,
        help="pixels: JSON 28x28 arrays (seen as they are); canvas: PNG data URLs (prepared first); "
        "upload: single-digit PNGs 16-64 px as multipart/form-data (prepared first)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="the service's `serve --workers`, and the peer's uvicorn workers (default: the service's default)",
    )
    parser.add_argument(
        "--no-peer",
        dest="peer",
        action="store_false",
        help="leave out the peer (a plain FastAPI + Pillow + PyTorch eager endpoint, same model, "
        "same number of workers) that is otherwise measured beside the service",
    )
    parser.add_argument(
        "--abuse",
        action="store_true",
        help="instead: the pixels load while, from another process, clients send malformed requests, "
        "slow heads and bodies, idle connections and large bodies; every good request must "
        "succeed, every abusive one be refused or closed, the service stay up (results under "
        "'abuse', a section of its own)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=_defaults(serve)["read_timeout"],
        metavar="SECONDS",
        help="with --abuse: the service's `serve --read-timeout` (default: %(default)g)",
    )
    _add_model(parser)
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench serve")
    _add_data_dir(parser)


def cmd_bench_serve(args) -> int:
    from .bench.serve import bench_abuse, bench_serve

    results, markdown = _bench_files(args)

    if args.abuse:
        bench_abuse(
            clients=args.clients,
            seconds=args.seconds,
            read_timeout=args.read_timeout,
            model=args.model,
            data_dir=args.data_dir,
            results=results,
            markdown=markdown,
        )
    else:
        bench_serve(
            clients=args.clients,
            seconds=args.seconds,
            kinds=args.kinds,
            workers=args.workers,
            peer=args.peer,
            model=args.model,
            data_dir=args.data_dir,
            results=results,
            markdown=markdown,
        )
    return 0


def _bench_speed_options(parser: CommandParser) -> None:
    from .bench.speed import bench_speed  # imported here: start-up time (torch)

    defaults = _defaults(bench_speed)
    parser.set_defaults(func=cmd_bench_speed)
    parser.description = (
        "Time `fast` and `fast-995` over seeds (training seconds, load time apart, GFLOP/s "
        "against this CPU's measured peak), undo each of fast's tricks on its own, and run the "
        "usual tools side by side on the same machine: Keras 3 on keras-cnn and keras-mlp-dropout "
        "(needs `pip install 'digitlab[peers]'`), a conventional PyTorch DataLoader loop, "
        "scikit-learn's MLPClassifier. Every contender runs in its own process. Takes about 15 "
        "minutes on 2 cores."
    )
    parser.add_argument("--seeds", type=int, default=defaults["seeds"], help="seeds of `fast`")
    parser.add_argument("--seeds-995", type=int, default=defaults["seeds_995"], help="seeds of `fast-995` (0 skips it)")
    parser.add_argument(
        "--keras-max-epochs",
        type=int,
        default=defaults["keras_max_epochs"],
        help="Keras keras-cnn trains until 99%% or this",
    )
    parser.add_argument("--mlp-epochs", type=int, default=defaults["mlp_epochs"], help="epochs of the MLP comparisons")
    parser.add_argument("--no-peers", action="store_true", help="leave out Keras, scikit-learn and the DataLoader loop")
    parser.add_argument("--no-ablations", action="store_true", help="do not undo fast's tricks one by one")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 5,000 images, 1 epoch, 1 seed (checks the machinery; figures mean nothing)",
    )
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench speed")
    _add_data_dir(parser)


def cmd_bench_speed(args) -> int:
    from .bench.speed import bench_speed

    results, markdown = _bench_files(args)

    bench_speed(
        seeds=args.seeds,
        seeds_995=args.seeds_995,
        peers=not args.no_peers,
        ablations=not args.no_ablations,
        keras_max_epochs=args.keras_max_epochs,
        mlp_epochs=args.mlp_epochs,
        data_dir=args.data_dir,
        quick=args.quick,
        markdown=markdown,
        results=results,
    )
    return 0


def _bench_fuzz_options(parser: CommandParser) -> None:
    from .bench.fuzz import TARGETS, bench_fuzz  # imported here: start-up time (torch); Hypothesis only when run

    defaults = _defaults(bench_fuzz)
    parser.set_defaults(func=cmd_bench_fuzz)
    parser.description = (
        "Generate damaged inputs with Hypothesis (fuzz_inputs.py) -- IDX pairs through load_idx_pair; image files "
        "(PNG, JPEG, BMP, GIF, TIFF, WebP, cut short, bits flipped, headers claiming huge sizes, random bytes; "
        "ICO/ICNS wrapping huge PNGs, TIFF tiles larger than the image, DDS and other formats digitlab does not "
        "read) through predict, read and annotate with the bundled model; config.json and .onnx files mutated "
        "(deep nesting, huge integers and layer lists, odd temperatures, allocating operators) through predict "
        "--model -- each target in its own process. Any exception other than a DigitlabError, or an input running "
        "longer than --time-limit, is a failure kept with its input. Needs Hypothesis."
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=defaults["examples"],
        help="generated inputs in all, split evenly between the targets",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults["seed"], help="Hypothesis seed (the same seed generates the same inputs)"
    )
    parser.add_argument("--targets", nargs="+", default=list(defaults["targets"]), choices=TARGETS, help="what to fuzz")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=defaults["time_limit"],
        help="seconds one input may take before it counts as a hang",
    )
    parser.add_argument("--failures", default=defaults["failures"], help="folder for the inputs that failed")
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench fuzz")


def cmd_bench_fuzz(args) -> int:
    from .bench.fuzz import bench_fuzz
    from .files import output_folder

    results, markdown = _bench_files(args)

    report = bench_fuzz(
        args.examples,
        seed=args.seed,
        targets=tuple(args.targets),
        time_limit=args.time_limit,
        results=results,
        markdown=markdown,
        failures=output_folder(args.failures),
    )
    print(
        f"{report['examples']:,} inputs in {report['wall_seconds']:.0f} s: {report['failures']} failure(s)"
        + (f"; their inputs are in {args.failures}" if report["failures"] else "")
    )
    return 1 if report["failures"] else 0


def _bench_finetune_options(parser: CommandParser) -> None:
    from .bench.finetune import BASE_RECIPE, SIZES, bench_finetune  # imported here: start-up time (torch)

    defaults = _defaults(bench_finetune)
    parser.set_defaults(func=cmd_bench_finetune)
    parser.description = (
        f"USPS as a new writer: a base trained on MNIST alone (--base RUN, else {BASE_RECIPE} trained here) "
        "is fine-tuned on N USPS training digits per class for each N in --sizes, and the same recipe trains "
        "from scratch on them; USPS test accuracy of base, fine-tuned and scratch, MNIST test accuracy after "
        "fine-tuning, training seconds. About 5 minutes on 2 cores with one seed."
    )
    parser.add_argument(
        "--base",
        metavar="RUN",
        help=f"a run trained on MNIST alone, or a shipped model's name (default: train {BASE_RECIPE})",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), metavar="N", help="USPS training digits per class"
    )
    parser.add_argument("--seeds", type=int, default=defaults["seeds"], help="samples (and run seeds) per size")
    parser.add_argument("--out", default=str(defaults["out"]), help="folder for the run directories")
    parser.add_argument("--limit", type=int, help="train the suite's base on this many MNIST images (for tests)")
    for name in ("epochs", "lr", "batch_size"):
        kind = float if name == "lr" else int
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=defaults[name], help=f"fine-tuning (and scratch) {name}")
    _add_device(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench finetune")
    _add_data_dir(parser)


def cmd_bench_finetune(args) -> int:
    from .bench.finetune import bench_finetune
    from .files import output_folder

    results, markdown = _bench_files(args)

    bench_finetune(
        args.base,
        sizes=tuple(args.sizes),
        seeds=args.seeds,
        out=output_folder(args.out),
        base_limit=args.limit,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        device=None if args.device == "auto" else args.device,
        threads=args.threads,
        data_dir=args.data_dir,
        results=results,
        markdown=markdown,
    )
    return 0


def _bench_prepare_options(parser: CommandParser) -> None:
    from .bench.prepare import bench_prepare  # imported here: start-up time (torch, cv2)

    defaults = _defaults(bench_prepare)
    parser.set_defaults(func=cmd_bench_prepare)
    parser.description = (
        "Time the MNIST-style preparation (preprocess.to_mnist_style; the reader's center_digit per "
        "candidate) per digit on one core, p50 and p99, the fast path beside the reference (the "
        "computation before 2026-12-06, reference=True) on the same digits in the same run: USPS test "
        "digits (16x16), HwD-1000 (28x28), MNIST test digits drawn as 280x280 canvases, and the reader's "
        "candidates on generated pages. Also the share of pixels within one grey level of the reference "
        "and of digits the bundled model classes the same. Targets: <= 0.5 ms p50, >= 99% of pixels, "
        ">= 99.9% of classes. Needs mnist, usps and hwd-1000 in the data directory."
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="at most N digits of USPS and of HwD-1000 (default: all)"
    )
    parser.add_argument(
        "--canvas",
        type=int,
        default=defaults["canvas"],
        metavar="N",
        help="MNIST test digits drawn as canvases (default: %(default)s)",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=defaults["pages"],
        metavar="N",
        help="generated pages whose candidate digits are prepared (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="the pages' seed (default: %(default)s)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 50 digits a kind, 3 pages (checks the machinery; figures mean nothing)",
    )
    _add_bench_files(parser, defaults["results"], defaults["markdown"], "bench prepare")
    _add_data_dir(parser)


def cmd_bench_prepare(args) -> int:
    from .bench.prepare import bench_prepare

    results, markdown = _bench_files(args)
    bench_prepare(
        limit=args.limit,
        canvas=args.canvas,
        pages=args.pages,
        seed=args.seed,
        data_dir=args.data_dir,
        quick=args.quick,
        results=results,
        markdown=markdown,
    )
    return 0


# --- running a command ----------------------------------------------------------------------


IMAGE_COMMANDS = ("predict", "read", "serve", "bench")


def one_line(text: str) -> str:
    """`text` with its line breaks and other unprintable characters written as escapes ('\\n',
    '\\x1b'): a file name holding a newline cannot split an error line, nor one holding a terminal
    escape sequence rewrite it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def print_error(err: DigitlabError, verbose: bool = False) -> None:
    """The error's one line on stderr; its details (if any) below it with --verbose, else a pointer to them."""
    if not err.details:
        print(f"digitlab: error: {one_line(err.summary)}", file=sys.stderr)
    elif not verbose:
        print(f"digitlab: error: {one_line(err.summary)} (--verbose: the details)", file=sys.stderr)
    else:
        print(f"digitlab: error: {one_line(err.summary)}", file=sys.stderr)
        for line in err.details.splitlines():
            print(f"  {one_line(line)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in IMAGE_COMMANDS:
        from .preprocess import quiet_decoders  # imported here: cv2 and Pillow, only for commands that decode images

        quiet_decoders()  # no Pillow warning or libtiff message above (or instead of) digitlab's own line
    try:
        return args.func(args)
    except DigitlabError as err:
        print_error(err, verbose=getattr(args, "verbose", False))
        return err.exit_code
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
