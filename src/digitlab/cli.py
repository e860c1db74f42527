"""The `digitlab` command: a thin layer over the Python API.

Errors a user can act on (DigitlabError) print one line and exit 2; anything else is a bug
and exits 1 with its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, DigitlabError, UnknownNameError

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
  digitlab export --onnx digitnet-pen.onnx      the bundled model as one ONNX file, verified
  digitlab predict --model digitnet-pen.onnx my_digit.png
  digitlab bench seeds --seeds 3
  digitlab bench speed                          fast over seeds, each trick, vs Keras 3 / DataLoader / sklearn

data directory: --data-dir, else $DIGITLAB_DATA, else ~/.cache/digitlab"""


MODEL_HELP = "run directory, or an .onnx file from `digitlab export` (default: the bundled model)"


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: $DIGITLAB_DATA, else ~/.cache/digitlab)")


class TrainHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the epilog's lines kept as written."""


TRAIN_EPILOG = """\
several processes (DistributedDataParallel: gloo on the CPU, NCCL on GPUs):
  torchrun --standalone --nproc-per-node 2 -m digitlab train digitnet
  torchrun --nnodes 2 --node-rank R --nproc-per-node 4 --master-addr HOST0 --master-port 29500 \\
      -m digitlab train digitnet           (on each machine; README: "Several processes, several machines")
--batch-size is the global batch: N processes take the steps one process takes with it.
Only rank 0 writes the run directory; a process that dies ends the job with an error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitlab",
        description="Handwritten-digit recognition: the classic MNIST recipes reproduced, faster recipes of our own.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("recipes", help="list recipes: source, model, parameters, published vs our accuracy")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("data", help="datasets: list, download, verify checksums")
    data_sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = data_sub.add_parser("list", help="every dataset, its folder and whether its files are there")
    add_data_dir(q)
    q.set_defaults(func=cmd_data_list)
    q = data_sub.add_parser("download", help="download a dataset's missing files (checksums verified)")
    q.add_argument("name", help="dataset name (see `digitlab data list`)")
    add_data_dir(q)
    q.set_defaults(func=cmd_data_download)
    q = data_sub.add_parser("verify", help="check files against their published MD5; exit 2 if any is missing or wrong")
    q.add_argument("name", nargs="?", help="dataset name (default: every dataset whose folder exists)")
    add_data_dir(q)
    q.set_defaults(func=cmd_data_verify)

    p = sub.add_parser("train", help="train a recipe; writes runs/<recipe>-<timestamp>/",
                       formatter_class=TrainHelpFormatter, epilog=TRAIN_EPILOG)
    p.add_argument("recipe", nargs="?", help="recipe name (see `digitlab recipes`); omit with --resume")
    p.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    p.add_argument("--batch-size", type=int,
                   help="override the recipe's batch size (under torchrun: the global batch, split over processes)")
    p.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    p.add_argument("--seed", type=int, help="override the recipe's seed (same seed, same history)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--val-split", type=float, default=0.0,
                   help="hold out this fraction of the training set for validation (0: validate on the test "
                        "set, as the tutorials do)")
    p.add_argument("--limit", type=int, help="train on a seeded random subset of this many training images")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                   help="change any other recipe field, repeatable: optimizer=sgd|adam|adamw|adadelta, "
                        "schedule=constant|step|exponential|onecycle, label_smoothing=0.1, momentum=0.9, "
                        "weight_decay=5e-4, augment=SHIFT,ROTATE,SCALE (e.g. 2,10,0.1), channels_last=true ...")
    p.add_argument("--out", default="runs", help="folder for run directories")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last complete checkpoint (after a crash or a "
                   "kill: from the start if no epoch had finished; only --epochs may change)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_dir(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="report, confusion matrix, error gallery for a run")
    p.add_argument("run", help="run directory, or an .onnx file from `digitlab export` (then give --out)")
    p.add_argument("--split", default="test", choices=["test", "train", "val"],
                   help="which split (default: test; val: the images a --val-split run held out)")
    p.add_argument("--out", help="write the files here instead of the run directory (required for an .onnx file)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_data_dir(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("summary", help="Keras-style table: layers, output shapes, parameter counts")
    p.add_argument("target", help="recipe name or run directory")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("predict", help="one digit per image: digit, confidence, top 3 (MNIST-style preparation first)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, GIF, TIFF or WebP)")
    p.add_argument("--model", metavar="RUN", help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--show-input", metavar="DIR", help="save the 28x28 image the model saw for each input here")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("read", help="lines of digits in photos or scans: text, boxes, confidences")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos or scans of one or more lines of digits")
    p.add_argument("--model", metavar="RUN", help=MODEL_HELP)
    p.add_argument("--unsure-below", type=float, default=None, metavar="P",
                   help="digits whose top probability is below P read as '?' (default: 0.6)")
    p.add_argument("--annotate", metavar="OUT.png",
                   help="draw boxes and readings; with several images, OUT-<image name>.png for each")
    p.add_argument("--json", action="store_true", help="print the whole structure as JSON")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("serve", help="the REST API and the browser page (draw a digit, drop a photo)",
                       description="Serve the REST API (/api/predict, /api/read, /api/models, /healthz, "
                                   "OpenAPI docs at /docs) and the page at / on uvicorn. Ctrl-C or SIGTERM "
                                   "stops it cleanly.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", metavar="RUN", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--max-body-mb", type=float, default=10, help="larger request bodies are refused with 413")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="images declaring more pixels are refused with 413 before they are decoded")
    p.add_argument("--threads", type=int, default=1, help="threads for model work (ONNX Runtime and PyTorch)")
    p.add_argument("--read-timeout", type=float, default=10, metavar="SECONDS",
                   help="time for a request's head, and again for its body, to arrive; a slower one gets 408 "
                        "and its connection is closed (an 8 MB photo in 10 s needs 6.4 Mbit/s)")
    p.add_argument("--write-timeout", type=float, default=10, metavar="SECONDS",
                   help="time a client may take to read on while an answer waits for it; a slower one's "
                        "connection is closed and its answer dropped (unread answers held memory)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="a run (or the bundled model) as one self-contained ONNX file, verified",
                       description="Export a model to ONNX: input 'images' uint8 (N, C, H, W), any batch size; "
                                   "output 'logits' float32; the run's config (classes, image shape, calibration) "
                                   "in the file's metadata, so `--model FILE.onnx` works wherever a run does. "
                                   "Before the file is written, ONNX Runtime runs it on the test set of the "
                                   "model's dataset: it must give PyTorch's class on >= 99.9% of the images with "
                                   "logits within 1e-4, or nothing is written.")
    p.add_argument("run", nargs="?", metavar="RUN", help="run directory (default: the bundled model)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--no-verify", action="store_true", help="write without checking against PyTorch")
    add_data_dir(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="reproducible benchmark tables written to BENCHMARKS.md")
    bench_sub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    q = bench_sub.add_parser("seeds", help="train the classic recipes in full over several seeds vs published accuracy",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--recipes", nargs="+", help="recipes to run (default: every recipe whose data is available)")
    q.add_argument("--seeds", type=int, default=3, help="seeds per recipe (fewer for the slow ones, see --max-seconds)")
    q.add_argument("--max-seconds", type=float, default=900,
                   help="stop adding seeds to a recipe once its runs took this long in total")
    q.add_argument("--results", default="benchmarks/results/seeds.json",
                   help="JSON file the runs are appended to (rows from earlier invocations are kept)")
    q.add_argument("--markdown", default="BENCHMARKS.md", help="file whose 'seeds' section is rewritten")
    q.add_argument("--out", default="runs/bench", help="folder for the run directories")
    q.add_argument("--device", default="auto", help="auto, cpu or cuda")
    q.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")
    add_data_dir(q)
    q.set_defaults(func=cmd_bench_seeds)
    q = bench_sub.add_parser("read", help="read real handwriting (USPS, cheques, photos) and generated pages, "
                                          "beside Tesseract when installed",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--model", metavar="RUN", help=MODEL_HELP)
    q.add_argument("--pages", type=int, default=200, help="synthetic pages generated from the MNIST test set")
    q.add_argument("--seed", type=int, default=0, help="seed of the synthetic pages")
    q.add_argument("--unsure-below", type=float, help="the reader's unsure threshold (default: read.py's, 0.6)")
    q.add_argument("--limit", type=int, help="at most this many images per set (quick runs)")
    q.add_argument("--no-tesseract", action="store_true", help="do not run Tesseract even when installed")
    q.add_argument("--results", default="benchmarks/results/read.json", help="JSON file of the results")
    q.add_argument("--markdown", default="BENCHMARKS.md", help="file whose 'bench read' section is rewritten")
    add_data_dir(q)
    q.set_defaults(func=cmd_bench_read)
    q = bench_sub.add_parser("infer", help="inference speed: PyTorch eager, torch.compile, ONNX Runtime; "
                                           "images/s, one-image latency, agreement",
                             description="For the bundled model and each --model: images/s at batch 256 and "
                                         "1024, one-image latency p50/p99, and agreement with eager PyTorch on "
                                         "the MNIST test set, for PyTorch eager (channels_last), torch.compile "
                                         "(compilation timed apart) and ONNX Runtime.")
    q.add_argument("--model", metavar="RUN", action="append", default=[],
                   help="also this run directory or .onnx file, repeatable (the bundled model always runs)")
    q.add_argument("--paths", nargs="+", default=["eager", "compile", "onnx"], choices=["eager", "compile", "onnx"],
                   metavar="PATH", help="inference paths to measure: eager, compile, onnx (default: all three)")
    q.add_argument("--seconds", type=float, default=3, help="how long each batch size runs (default: 3)")
    q.add_argument("--calls", type=int, default=1000,
                   help="one-image calls behind p50/p99, at least 300 (default: 1000)")
    q.add_argument("--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime (default: one per core)")
    q.add_argument("--quick", action="store_true",
                   help="smoke test: 0.2 s per batch size, 30 calls, 1,000 images (checks the machinery; figures "
                        "mean nothing)")
    q.add_argument("--results", default="benchmarks/results/infer.json",
                   help="JSON file of the results (default: benchmarks/results/infer.json)")
    q.add_argument("--markdown", default="BENCHMARKS.md",
                   help="file whose 'bench infer' section is rewritten (default: BENCHMARKS.md)")
    add_data_dir(q)
    q.set_defaults(func=cmd_bench_infer)
    q = bench_sub.add_parser("serve", help="load test of `digitlab serve` on loopback: requests/s, p50/p99 latency",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--clients", type=int, default=16, help="concurrent clients, each with one keep-alive connection")
    q.add_argument("--seconds", type=float, default=10, help="how long each kind of request is sent")
    q.add_argument("--kinds", nargs="+", default=["pixels", "canvas"], choices=["pixels", "canvas"],
                   help="pixels: JSON 28x28 arrays (seen as they are); canvas: PNG data URLs (prepared first)")
    q.add_argument("--abuse", action="store_true",
                   help="instead: the pixels load while, from another process, clients send malformed requests, "
                        "slow heads and bodies, idle connections and large bodies; every good request must "
                        "succeed, every abusive one be refused or closed, the service stay up (results under "
                        "'abuse', a section of its own)")
    q.add_argument("--read-timeout", type=float, default=10, metavar="SECONDS",
                   help="with --abuse: the service's `serve --read-timeout`")
    q.add_argument("--model", metavar="RUN", help=MODEL_HELP)
    q.add_argument("--results", default="benchmarks/results/serve.json", help="JSON file of the results")
    q.add_argument("--markdown", default="BENCHMARKS.md", help="file whose 'bench serve' section is rewritten")
    add_data_dir(q)
    q.set_defaults(func=cmd_bench_serve)
    q = bench_sub.add_parser(
        "speed", help="training speed: `fast` over seeds, each trick undone, vs Keras 3, a DataLoader loop, "
                      "scikit-learn; peak memory",
        description="Time `fast` and `fast-995` over seeds (training seconds, load time apart, GFLOP/s against "
                    "this CPU's measured peak), undo each of fast's tricks on its own, and run the usual tools "
                    "side by side on the same machine: Keras 3 on keras-cnn and keras-mlp-dropout (needs "
                    "`pip install 'digitlab[peers]'`), a conventional PyTorch DataLoader loop, scikit-learn's "
                    "MLPClassifier. Every contender runs in its own process. Takes about 15 minutes on 2 cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--seeds", type=int, default=5, help="seeds of `fast`")
    q.add_argument("--seeds-995", type=int, default=3, help="seeds of `fast-995` (0 skips it)")
    q.add_argument("--keras-max-epochs", type=int, default=12, help="Keras keras-cnn trains until 99%% or this")
    q.add_argument("--mlp-epochs", type=int, default=5, help="epochs of the MLP comparisons")
    q.add_argument("--no-peers", action="store_true", help="leave out Keras, scikit-learn and the DataLoader loop")
    q.add_argument("--no-ablations", action="store_true", help="do not undo fast's tricks one by one")
    q.add_argument("--quick", action="store_true",
                   help="smoke test: 5,000 images, 1 epoch, 1 seed (checks the machinery; figures mean nothing)")
    q.add_argument("--results", default="benchmarks/results/speed.json", help="JSON file of the results")
    q.add_argument("--markdown", default="BENCHMARKS.md", help="file whose 'bench speed' section is rewritten")
    add_data_dir(q)
    q.set_defaults(func=cmd_bench_speed)
    q = bench_sub.add_parser(
        "fuzz", help="damaged files through the IDX reader, the image path and the model loader: only digitlab's "
                     "errors may come out",
        description="Generate damaged inputs with Hypothesis (fuzz_inputs.py) -- IDX pairs through load_idx_pair; "
                    "image files (PNG, JPEG, BMP, GIF, TIFF, WebP, cut short, bits flipped, headers claiming huge "
                    "sizes, random bytes; ICO/ICNS wrapping huge PNGs, TIFF tiles larger than the image, DDS and "
                    "other formats digitlab does not read) through predict, read and annotate with the bundled "
                    "model; config.json and .onnx files mutated (deep nesting, huge integers and layer lists, "
                    "odd temperatures, allocating operators) through predict --model -- each target in its own "
                    "process. Any exception other than a DigitlabError, or an input running longer than "
                    "--time-limit, is a failure kept with its input. Needs Hypothesis.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--examples", type=int, default=100_000, help="generated inputs in all, split evenly between "
                                                                  "the targets")
    q.add_argument("--seed", type=int, default=0, help="Hypothesis seed (the same seed generates the same inputs)")
    q.add_argument("--targets", nargs="+", default=["idx", "image", "model"], choices=["idx", "image", "model"],
                   help="what to fuzz")
    q.add_argument("--time-limit", type=float, default=30.0, help="seconds one input may take before it counts "
                                                                  "as a hang")
    q.add_argument("--failures", default="runs/fuzz-failures", help="folder for the inputs that failed")
    q.add_argument("--results", default="benchmarks/results/fuzz.json", help="JSON file of the results")
    q.add_argument("--markdown", default="BENCHMARKS.md", help="file whose 'bench fuzz' section is rewritten")
    q.set_defaults(func=cmd_bench_fuzz)
    return parser


# --- commands ---------------------------------------------------------------------------


def cmd_recipes(args) -> int:
    from .catalog import recipe_table

    rows = recipe_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'recipe':<19}{'dataset':<9}{'model':<11}{'params':>10}  {'published':>9}  {'ours':>20}  source")
    for r in rows:
        pub = f"{r['published_accuracy'] * 100:.2f}%" if r["published_accuracy"] else "-"
        ours = r["measured"] or "not measured"
        print(f"{r['name']:<19}{r['dataset']:<9}{r['model']:<11}{r['parameters']:>10,}  {pub:>9}  {ours:>20}  "
              f"{r['source']}")
    print("\n'ours': mean ± sd over seeds from `digitlab bench seeds` (BENCHMARKS.md).")
    return 0


def cmd_data_list(args) -> int:
    from .data import describe_datasets, resolve_data_dir

    print(f"data directory: {resolve_data_dir(args.data_dir)}\n")
    print(f"{'dataset':<15}{'shape':<11}{'classes':>7}  {'files':<9} description")
    for row in describe_datasets(args.data_dir):
        shape = "x".join(str(d) for d in row["image_shape"])
        state = "bundled" if row["folder"] is None else ("present" if row["present"] else "missing")
        print(f"{row['name']:<15}{shape:<11}{row['num_classes']:>7}  {state:<9} {row['description']}")
    return 0


def cmd_data_download(args) -> int:
    from .data import download_dataset

    folder = download_dataset(args.name, args.data_dir)
    print(f"{args.name}: all files present and verified in {folder}")
    return 0


def cmd_data_verify(args) -> int:
    from .data import describe_datasets, verify_dataset

    if args.name:
        names = [args.name]
    else:  # every dataset with something on disk, plus the bundled one
        names = [r["name"] for r in describe_datasets(args.data_dir)
                 if r["folder"] is None or Path(r["folder"]).is_dir()]
    bad = 0
    for name in names:
        for row in verify_dataset(name, args.data_dir):
            bad += row["status"] != "ok"
            print(f"{name:<15}{row['status']:<10}{row['file']:<30}{row['md5'] or ''}")
    if bad:
        print(f"\n{bad} file(s) missing or wrong; `digitlab data download NAME` fetches them", file=sys.stderr)
        return 2
    return 0


def cmd_train(args) -> int:
    from . import api

    if not args.recipe and not args.resume:
        raise UnknownNameError("name a recipe to train (see `digitlab recipes`) or --resume RUN")
    run = api.train(args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    device=args.device, data_dir=args.data_dir, out=args.out, resume=args.resume,
                    val_split=args.val_split, subset=args.limit, settings=args.settings, progress=not args.quiet)
    if run.rank != 0:  # under torchrun, rank 0 reports for all
        return 0
    last = run.history[-1]
    metrics = json.loads((run.path / "metrics.json").read_text())
    print(f"{run.recipe.name}: test accuracy {metrics['accuracy'] * 100:.2f}% after {last['epoch']} epochs "
          f"({sum(r['seconds'] for r in run.history):.1f} s of training)")
    print(f"run directory: {run.path}")
    return 0


def cmd_evaluate(args) -> int:
    from . import api

    metrics = api.evaluate(args.run, split=args.split, data_dir=args.data_dir, out=args.out, device=args.device)
    print(metrics.report)
    print(f"accuracy {metrics.accuracy * 100:.2f}%  loss {metrics.loss:.4f}  ({len(metrics.labels)} images)")
    print(f"files written to {args.out or args.run}")
    return 0


def cmd_predict(args) -> int:
    from . import api

    model = api.load_model(args.model)
    # Every input first: a bad one names itself and stops the command before any file is written.
    predictions = [api.predict(path, model)[0] for path in args.images]
    rows = [{"image": path, **prediction.to_json()} for path, prediction in zip(args.images, predictions)]
    if args.show_input:
        import cv2

        targets = _output_paths([Path(args.show_input) / (Path(path).stem + "-28x28.png") for path in args.images])
        outputs = []
        for row, target, prediction in zip(rows, targets, predictions):
            _, png = cv2.imencode(".png", prediction.model_input)  # 28x28 uint8: always encodes
            outputs.append((target, png.tobytes()))
            row["model_input"] = str(target)
        _write_all(outputs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for path, prediction in zip(args.images, predictions):
        top = "  ".join(f"{d} {p * 100:.1f}%" for d, p in prediction.top3)
        print(f"{path}: {prediction.digit} ({prediction.confidence * 100:.1f}%)   top 3: {top}")
    return 0


def cmd_read(args) -> int:
    from . import api
    from .read import UNSURE_BELOW, annotation_png

    model = api.load_model(args.model)
    unsure = UNSURE_BELOW if args.unsure_below is None else args.unsure_below
    # Every input read (and every annotation drawn) first: a bad one stops the command before any file is written.
    readings = [api.read(path, model, unsure_below=unsure) for path in args.images]
    results = [{"image": path, **reading.to_json()} for path, reading in zip(args.images, readings)]
    if args.annotate:
        out = Path(args.annotate)
        targets = _output_paths([out.with_name(f"{out.stem}-{Path(path).stem}{out.suffix or '.png'}")
                                 if len(args.images) > 1 else out for path in args.images])
        _write_all([(target, annotation_png(path, reading))
                    for target, path, reading in zip(targets, args.images, readings)])
        for result, target in zip(results, targets):
            result["annotation"] = str(target)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for path, reading in zip(args.images, readings):
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
    from .files import atomic_write

    for path, data in outputs:
        atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))


def cmd_summary(args) -> int:
    from .catalog import summary_text

    print(summary_text(args.target))
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx

    done = export_onnx(args.run, args.onnx, verify=not args.no_verify, data_dir=args.data_dir)
    print(f"wrote {done.path}: {done.size / 1024:,.0f} KiB, {done.parameters:,} parameters "
          f"({done.exporter} exporter)")
    if done.verification is None:
        print("not verified (--no-verify)")
    else:
        print(f"verified with ONNX Runtime: {done.verification}")
    return 0


def cmd_bench_seeds(args) -> int:
    from .bench.seeds import bench_seeds

    bench_seeds(recipes=args.recipes, seeds=args.seeds, max_seconds=args.max_seconds, results=Path(args.results),
                markdown=Path(args.markdown), out=Path(args.out), device=args.device, data_dir=args.data_dir,
                threads=args.threads)
    return 0


def cmd_bench_read(args) -> int:
    from .bench.read import bench_read

    bench_read(data_dir=args.data_dir, model=args.model, markdown=Path(args.markdown), results=Path(args.results),
               synthetic_pages=args.pages, seed=args.seed, unsure_below=args.unsure_below,
               tesseract=not args.no_tesseract, limit=args.limit)
    return 0


def cmd_bench_infer(args) -> int:
    from .bench.infer import bench_infer

    bench_infer(args.model, paths=args.paths, seconds=args.seconds, calls=args.calls, threads=args.threads,
                data_dir=args.data_dir, quick=args.quick, results=Path(args.results), markdown=Path(args.markdown))
    return 0


def cmd_serve(args) -> int:
    from .errors import ConfigError
    from .serve import serve

    if (args.max_body_mb <= 0 or args.max_pixels <= 0 or args.read_timeout <= 0 or args.write_timeout <= 0
            or args.threads < 1):
        raise ConfigError("--max-body-mb, --max-pixels, --read-timeout and --write-timeout must be positive and "
                          "--threads at least 1")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must lie in 1-65535, got {args.port}")
    serve(args.model, host=args.host, port=args.port, max_body=round(args.max_body_mb * 1024 * 1024),
          max_pixels=args.max_pixels, threads=args.threads, read_timeout=args.read_timeout,
          write_timeout=args.write_timeout, log_level=args.log_level)
    return 0


def cmd_bench_serve(args) -> int:
    from .bench.serve import bench_abuse, bench_serve

    if args.abuse:
        bench_abuse(clients=args.clients, seconds=args.seconds, read_timeout=args.read_timeout, model=args.model,
                    data_dir=args.data_dir, results=Path(args.results), markdown=Path(args.markdown))
    else:
        bench_serve(clients=args.clients, seconds=args.seconds, kinds=args.kinds, model=args.model,
                    data_dir=args.data_dir, results=Path(args.results), markdown=Path(args.markdown))
    return 0


def cmd_bench_speed(args) -> int:
    from .bench.speed import bench_speed

    bench_speed(seeds=args.seeds, seeds_995=args.seeds_995, peers=not args.no_peers, ablations=not args.no_ablations,
                keras_max_epochs=args.keras_max_epochs, mlp_epochs=args.mlp_epochs, data_dir=args.data_dir,
                quick=args.quick, markdown=Path(args.markdown), results=Path(args.results))
    return 0


def cmd_bench_fuzz(args) -> int:
    from .bench.fuzz import bench_fuzz

    report = bench_fuzz(args.examples, seed=args.seed, targets=tuple(args.targets), time_limit=args.time_limit,
                        results=Path(args.results), markdown=Path(args.markdown), failures=Path(args.failures))
    print(f"{report['examples']:,} inputs in {report['wall_seconds']:.0f} s: {report['failures']} failure(s)"
          + (f"; their inputs are in {args.failures}" if report["failures"] else ""))
    return 1 if report["failures"] else 0


IMAGE_COMMANDS = ("predict", "read", "serve", "bench")


def one_line(text: str) -> str:
    """`text` with its line breaks and other unprintable characters written as escapes ('\\n',
    '\\x1b'): a file name holding a newline cannot split an error line, nor one holding a terminal
    escape sequence rewrite it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in IMAGE_COMMANDS:
        from .preprocess import quiet_decoders  # imported here: cv2 and Pillow, only for commands that decode images

        quiet_decoders()  # no Pillow warning or libtiff message above (or instead of) digitlab's own line
    try:
        return args.func(args)
    except DigitlabError as err:
        print(f"digitlab: error: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
