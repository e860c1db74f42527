"""`digitlab bench fuzz`: generated damaged files through digitlab's readers; only digitlab's errors may come out.

    from digitlab.bench.fuzz import bench_fuzz
    report = bench_fuzz(examples=100_000)     # split evenly between the targets

Targets, each fed by a Hypothesis strategy of fuzz_inputs.py and run through the entry points
users reach:
- idx: a pair of IDX files (images, labels) -> data.idx.load_idx_pair, which reads each with
  read_idx (gzip or plain) and checks the pair -- as load_dataset reads MNIST and Fashion-MNIST;
  one file in 32 is a gzip bomb (a header claiming gigabytes over a zero stream, issue 18);
- model: a config.json in a copy of the bundled run directory (nested deep, integers of thousands
  of digits, mlp layers by the 100,000, odd temperatures, damaged; or a folder, a FIFO, a link to
  /dev/zero), or an .onnx file of digitlab's form given operators that allocate what their data
  says, enormous padding, odd metadata or damage -> api.predict(image, api.load_model(path)) as
  `digitlab predict --model PATH` runs it (issue 18);
- image: an image file -> api.predict(path) as `digitlab predict FILE` runs it, and api.read(bytes)
  then api.annotate(bytes) as the service's /api/read and `digitlab read --annotate` run them,
  with the bundled model. One input in ten is a hostile container (fuzz_inputs.hostile_files,
  issue 18): an ICO or ICNS wrapping a PNG of up to 179 MP, a TIFF whose tiles are larger than the
  image, a DDS with bad pixel-format flags, or a format digitlab does not read (PCX, TGA, QOI...).

Every entry point must accept an input or raise a DigitlabError: any other exception is a
failure, counted with its input saved as the reproducer. An input running longer than
`time_limit` seconds is a hang: faulthandler's watchdog (a C thread, so it fires even while
a decoder holds the GIL) dumps the stack and ends the process, and the input being run is kept.
Memory: each target runs in its own process, which resets its peak RSS (VmHWM, through
/proc/self/clear_refs) once the model is loaded, so the peak reported is that of the fuzzing;
Hypothesis runs in chunks of CHUNK inputs, as its bookkeeping grows with every input of a run
(about 2 KB each, measured).

Measured (BENCHMARKS.md, one run, 2 AMD EPYC cores shared with other work, no GPU): 100,000
inputs, 50,000 per target, in 23 minutes; no exception but digitlab's, the slowest input 7.9 s
(an image near the 40-megapixel limit through all three entry points), peak RSS 1.65 GB for the
image target (0.39 GB for idx). Earlier runs found six bugs, each now a test in tests/test_fuzz.py:
an IDX shape numpy refuses, CIELAB TIFFs, damaged EXIF blocks, a 0-pixel reduction in `read`, and
two near-hangs (hairline strokes: 157 s; noise read as 2,261 candidate digits: 14 s).
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from .. import api
from ..data.idx import load_idx_pair
from ..errors import ConfigError, DigitlabError
from ..files import write_json
from .common import machine, process_memory_mb, write_section

TARGETS = ("idx", "image", "model")
DEFAULT_TARGETS = TARGETS  # the CLI's default too (cli.py): every kind of input keeps being tried
ENTRIES = {"idx": ("load_idx_pair",), "image": ("predict", "read"), "model": ("predict --model",)}
MODEL_AS_LIMIT = 8 << 30  # bytes of address space for the model target: /dev/zero read whole ends in MemoryError
DEFAULT_EXAMPLES = 100_000  # in all, split evenly between the targets
TIME_LIMIT_S = 30.0  # per input: an image at the 40-megapixel limit takes 3-9 s through all entry points
CHUNK = 1_000  # inputs per Hypothesis run (its memory grows with each input of a run)
START, END = "<!-- bench fuzz: begin -->", "<!-- bench fuzz: end -->"
HEADING = "## Damaged inputs (`digitlab bench fuzz`)"


def bench_fuzz(
    examples: int = DEFAULT_EXAMPLES,
    *,
    seed: int = 0,
    targets=DEFAULT_TARGETS,
    time_limit: float = TIME_LIMIT_S,
    results: Path | None = Path("benchmarks/results/fuzz.json"),
    markdown: Path | None = Path("BENCHMARKS.md"),
    failures: Path = Path("runs/fuzz-failures"),
    progress: bool = True,
) -> dict:
    """Fuzz each target in its own process with examples // len(targets) inputs; the report.

    Writes the report to `results` (JSON) and its table to `markdown`, and each failing input
    (one per kind of failure) to `failures`. Raises ConfigError for a bad option; failures
    found are reported, not raised.
    """
    _hypothesis()  # a missing Hypothesis is said once, here, not by each worker
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ConfigError(f"unknown fuzz target(s) {unknown}; targets: {', '.join(TARGETS)}")
    if examples < len(targets) or time_limit <= 0:
        raise ConfigError(f"--examples must be at least {len(targets)} (one per target) and --time-limit positive")
    started = time.perf_counter()
    rows = [
        _run_worker(target, examples // len(targets), seed, time_limit, Path(failures), progress) for target in targets
    ]
    options = sys.argv[3:] if sys.argv[1:3] == ["bench", "fuzz"] else ["--examples", str(examples), "--seed", str(seed)]
    report = {
        "command": " ".join(["digitlab bench fuzz", *options]),
        "date": date.today().isoformat(),
        "machine": machine(),
        "python": sys.version.split()[0],
        "versions": _versions(),
        "seed": seed,
        "time_limit_s": time_limit,
        "examples": sum(row["examples"] for row in rows),
        "failures": sum(row["failure_count"] for row in rows),
        "wall_seconds": time.perf_counter() - started,
        "targets": rows,
    }
    if results is not None:
        write_json(Path(results), report)
    if markdown is not None:
        publish(report, Path(markdown))
    return report


def _hypothesis():
    try:
        import hypothesis
    except ImportError as err:
        raise ConfigError(
            "`digitlab bench fuzz` needs Hypothesis: pip install hypothesis (or pip install -e '.[test]')"
        ) from err
    return hypothesis


def _versions() -> dict:
    return {
        name: version(name)
        for name in ("hypothesis", "pillow", "numpy", "opencv-contrib-python-headless", "onnxruntime")
    }


# --- the parent: one process per target ------------------------------------------------------------


def _run_worker(target: str, examples: int, seed: int, time_limit: float, failures: Path, progress: bool) -> dict:
    """Fuzz `target` in a child process; its report, with a hang or crash of the child recorded
    as a failure whose reproducer is the input it was running."""
    with tempfile.TemporaryDirectory(prefix=f"digitlab-fuzz-{target}-", dir=_scratch()) as work:
        work = Path(work)
        command = [
            sys.executable,
            "-m",
            "digitlab.bench.fuzz",
            target,
            str(examples),
            str(seed),
            str(time_limit),
            str(work),
            str(failures.absolute()),
        ]
        started = time.perf_counter()
        with open(work / "stderr.txt", "w") as stderr:
            process = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=stderr)
        wall = time.perf_counter() - started
        report_path = work / "report.json"
        if not report_path.is_file():
            raise RuntimeError(
                f"the {target} fuzzing process ended (exit {process.returncode}) before its first "
                f"report:\n{(work / 'stderr.txt').read_text()[-3000:]}"
            )
        report = json.loads(report_path.read_text())  # written after every chunk: a crash loses one chunk at most
        report["wall_seconds"] = wall
        if process.returncode != 0:  # a hang (faulthandler's exit), a crash (a signal), the OOM killer, a bug here
            dump = (work / "stack.txt").read_text() if (work / "stack.txt").exists() else ""
            hang = "Timeout" in dump
            error = (
                "hang"
                if hang
                else f"process ended with exit code {process.returncode}: "
                + _last_error((work / "stderr.txt").read_text())
            )
            saved = _save_inputs(work, failures, f"{target}-{'hang' if hang else 'crash'}")
            report["failures"].append(
                {"entry": "(process)", "error": error, "where": _innermost_frame(dump), "count": 1, "inputs": saved}
            )
            report["failure_count"] += 1
    return report


def _scratch() -> str | None:
    """A RAM-backed folder for the per-input files where there is one: each input is written once."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _save_inputs(work: Path, failures: Path, name: str) -> list[str]:
    failures.mkdir(parents=True, exist_ok=True)
    saved = []
    for path in sorted(work.glob("input*")):
        target = failures / f"{name}-{path.name}"
        shutil.copyfile(path, target)
        saved.append(str(target))
    return saved


def _last_error(stderr: str) -> str:
    """The last traceback in a process's stderr, shortened: where it raised and what."""
    lines = [line for line in stderr.splitlines() if not line.startswith(" ") and "Warning" not in line]
    return " | ".join(lines[-2:])[-600:] if lines else "(no message)"


def _innermost_frame(dump: str) -> str:
    """Where faulthandler's dump says the process was: its innermost frame (listed first), else what it
    wrote in its place (`<no Python frame>` when the watchdog fired while no Python code ran)."""
    lines = [line.strip() for line in dump.splitlines() if line.strip()]
    frames = [line for line in lines if line.startswith("File ")]
    if frames:
        return frames[0]
    other = [line for line in lines if not line.startswith(("Timeout (", "Thread 0x", "Current thread 0x"))]
    return other[0] if other else "(no frame in faulthandler's dump)"


# --- the child: one target -------------------------------------------------------------------------


class Tally:
    """Outcomes per entry point, failures grouped by kind (one reproducer each), time per input."""

    def __init__(self, target: str, failures: Path, inputs: list[Path]):
        self.target, self.failures_dir, self.inputs = target, failures, inputs
        self.outcomes = {entry: Counter() for entry in ENTRIES[target]}
        self.failures: dict[tuple, dict] = {}
        self.examples = 0
        self.max_seconds = 0.0
        self.total_seconds = 0.0

    def run(self, entry: str, call) -> None:
        """Run call() and count its outcome under `entry`: accepted, the DigitlabError's class, or FAILURE."""
        try:
            call()
            self.outcomes[entry]["accepted"] += 1
        except DigitlabError as err:
            self.outcomes[entry][type(err).__name__] += 1
        except Exception as err:  # noqa: BLE001 -- what the fuzzer is looking for
            self.outcomes[entry]["FAILURE"] += 1
            self._failure(entry, err)

    def _failure(self, entry: str, err: Exception) -> None:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        where = f"{frame.filename}:{frame.lineno} in {frame.name}"
        key = (entry, type(err).__name__, where)
        if key in self.failures:
            self.failures[key]["count"] += 1
            return
        self.failures_dir.mkdir(parents=True, exist_ok=True)
        name = f"{self.target}-{len(self.failures) + 1}"
        saved = []
        for path in self.inputs:
            shutil.copyfile(path, self.failures_dir / f"{name}-{path.name}")
            saved.append(str(self.failures_dir / f"{name}-{path.name}"))
        self.failures[key] = {
            "entry": entry,
            "error": f"{type(err).__name__}: {str(err)[:300]}",
            "where": where,
            "count": 1,
            "inputs": saved,
        }

    def timed(self, seconds: float) -> None:
        self.examples += 1
        self.total_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)

    def report(self, memory: dict) -> dict:
        return {
            "target": self.target,
            "examples": self.examples,
            "outcomes": {entry: dict(counts.most_common()) for entry, counts in self.outcomes.items()},
            "failure_count": sum(f["count"] for f in self.failures.values()),
            "failures": list(self.failures.values()),
            "max_seconds_per_input": self.max_seconds,
            "mean_ms_per_input": 1000 * self.total_seconds / max(self.examples, 1),
            **memory,
        }


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        return True
    except OSError:
        return False


def fuzz_target(
    target: str, examples: int, seed: int, time_limit: float, work: Path, failures: Path, progress: bool = True
) -> dict:
    """Run `examples` generated inputs through `target`'s entry points in this process; the report.

    Each input is written to `work` before it runs (the reproducer if it hangs or crashes the
    process); the report goes to work/report.json after every chunk.
    """
    # Hypothesis here, not at the top: it is the test extra, which nothing but this suite needs.
    hypothesis = _hypothesis()
    from hypothesis import HealthCheck, Phase, given, settings

    from . import fuzz_inputs  # its strategies import Hypothesis

    stack = open(work / "stack.txt", "w")  # noqa: SIM115 -- faulthandler writes to it until the process ends
    faulthandler.enable(stack)  # a segfault in a decoder leaves its stack here too
    strategy, run_one, inputs = _target(target, work)
    tally = Tally(target, failures, inputs)
    baseline = process_memory_mb(field="VmRSS")
    reset = _reset_peak_rss()
    started = time.perf_counter()

    def save_report() -> dict:
        report = tally.report(
            {
                "baseline_rss_mib": baseline,
                "peak_rss_mib": process_memory_mb(),
                "final_rss_mib": process_memory_mb(field="VmRSS"),
                "peak_is_fuzzing_only": reset,
                "seconds": time.perf_counter() - started,
            }
        )
        (work / "report.json").write_text(json.dumps(report, indent=1))
        return report

    def one(case) -> None:
        kinds = len(tally.failures)
        faulthandler.dump_traceback_later(time_limit, exit=True, file=stack)
        begun = time.perf_counter()
        run_one(case, tally)
        tally.timed(time.perf_counter() - begun)
        faulthandler.cancel_dump_traceback_later()
        if len(tally.failures) > kinds:  # a new kind of failure: in the report now, should the process die later
            save_report()

    save_report()  # so that a hang in the first chunk still leaves one
    for chunk, first in enumerate(range(0, examples, CHUNK)):
        size = min(CHUNK, examples - first)
        # One Hypothesis run per chunk, each seeded from (seed, chunk): reproducible, bounded memory.
        test = given(getattr(fuzz_inputs, strategy)())(one)
        test = settings(
            max_examples=size,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(test)
        hypothesis.seed(seed * 1_000_003 + chunk)(test)()
        report = save_report()
        if progress:
            counts = "; ".join(
                f"{entry}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for entry, c in report["outcomes"].items()
            )
            print(
                f"fuzz {target}: {tally.examples:,}/{examples:,} inputs, {report['failure_count']} failures, "
                f"max {tally.max_seconds:.2f} s per input, peak RSS {report['peak_rss_mib']:.0f} MiB ({counts})",
                flush=True,
            )
    return report


def _target(target: str, work: Path):
    """(strategy name in fuzz_inputs, run(case, tally), the files an input is written to)."""
    if target == "idx":
        images, labels = work / "input-images.idx", work / "input-labels.idx"

        def run_idx(case: tuple[bytes, bytes], tally: Tally) -> None:
            images.write_bytes(case[0])
            labels.write_bytes(case[1])
            tally.run("load_idx_pair", lambda: load_idx_pair(images, labels))

        return "idx_pairs", run_idx, [images, labels]

    if target == "model":
        return _model_target(work)
    torch.set_num_threads(1)  # small images: threads would only contend
    model = api.load_model()  # the bundled model, on ONNX Runtime as `digitlab predict` runs it
    path = work / "input-image"

    def run_image(data: bytes, tally: Tally) -> None:
        path.write_bytes(data)
        tally.run("predict", lambda: api.predict(str(path), model))  # as `digitlab predict FILE`
        # as the service's /api/read (bytes in), then `digitlab read --annotate` drawing on it
        tally.run("read", lambda: api.annotate(data, api.read(data, model)))

    return "image_files", run_image, [path]


def _model_target(work: Path):
    """The model target: each input becomes config.json of a copy of the bundled run directory, or
    an .onnx file, and is loaded and run on one 28x28 digit as `digitlab predict --model` does."""
    torch.set_num_threads(1)
    # Bounded, so that a regression reading /dev/zero as config.json fails with MemoryError, not the machine.
    resource.setrlimit(resource.RLIMIT_AS, (MODEL_AS_LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1]))
    run, config, onnx_path = work / "run", work / "run" / "config.json", work / "model.onnx"
    shutil.copytree(api.BUNDLED_MODEL, run)
    reproducer = work / "input-model"  # a regular file always: the Tally copies it on a failure
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:16] = 255  # a one

    def run_model(case: tuple[str, bytes], tally: Tally) -> None:
        kind, data = case
        reproducer.write_bytes(f"{kind}\n".encode() + data)
        if config.is_dir() and not config.is_symlink():
            config.rmdir()
        else:
            config.unlink(missing_ok=True)
        if kind == "onnx":
            onnx_path.write_bytes(data)
        elif kind == "config-folder":
            config.mkdir()
        elif kind == "config-fifo":
            os.mkfifo(config)
        elif kind == "config-dev-zero":
            config.symlink_to("/dev/zero")
        else:
            config.write_bytes(data)
        path = onnx_path if kind == "onnx" else run
        tally.run("predict --model", lambda: api.predict(digit, api.load_model(path), prepare=False))

    return "model_files", run_model, [reproducer]


# --- BENCHMARKS.md ---------------------------------------------------------------------------------


def publish(report: dict, markdown: Path) -> None:
    lines = [
        START,
        "| target | entry point | inputs | accepted | refused with a DigitlabError (by class) | other exceptions "
        "| max s per input | mean ms per input | peak RSS (baseline) | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["targets"]:
        for entry, counts in row["outcomes"].items():
            refused = ", ".join(f"{name} {n:,}" for name, n in counts.items() if name not in ("accepted", "FAILURE"))
            lines.append(
                f"| {row['target']} | `{entry}` | {sum(counts.values()):,} | {counts.get('accepted', 0):,} "
                f"| {refused} | **{counts.get('FAILURE', 0)}** | {row['max_seconds_per_input']:.3f} "
                f"| {row['mean_ms_per_input']:.1f} | {row['peak_rss_mib']:.0f} MiB "
                f"({row['baseline_rss_mib']:.0f} MiB) | {row['wall_seconds']:.0f} s |"
            )
    failures = [
        f"- {row['target']} `{f['entry']}`: {f['count']} x {f['error']} at {f['where']} "
        f"(reproducer: {', '.join(f['inputs'])})"
        for row in report["targets"]
        for f in row["failures"]
    ]
    versions = ", ".join(f"{name} {v}" for name, v in report["versions"].items())
    lines += [
        "",
        f"`{report['command']}` on {report['date']}: {report['machine']}, Python {report['python']}, "
        f"{versions}. {report['examples']:,} generated inputs in {report['wall_seconds']:.0f} s, "
        f"{report['failures']} failure(s); an input running over {report['time_limit_s']:g} s would count "
        f"as a hang. Peak RSS is the fuzzing process's high-water mark after its setup (imports, "
        f"the model); the baseline is its RSS then.",
        *failures,
        END,
    ]
    write_section(
        markdown,
        START,
        END,
        "\n".join(lines),
        HEADING + "\n\nGenerated damaged files (fuzz_inputs.py) through the IDX reader and the image "
        "path of `predict`, `read` and the service: each must be read or refused with digitlab's own "
        "error (exit 2, HTTP 4xx), never another exception, a hang or unbounded memory.\n\n",
    )


if __name__ == "__main__":  # a worker started by _run_worker: TARGET EXAMPLES SEED TIME_LIMIT WORK FAILURES
    _target_name, _examples, _seed, _limit, _work, _failures = sys.argv[1:]
    fuzz_target(_target_name, int(_examples), int(_seed), float(_limit), Path(_work), Path(_failures))
