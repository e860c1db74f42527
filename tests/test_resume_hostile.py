"""Hostile run directories given to `train --resume` (issue 18): each is refused with one line
(exit 2) before anything is written, the run directory stays byte for byte as it was, and
nothing outside the run is ever deleted or written.

The runs are real: keras-mlp-dropout on the offline 8x8 digits (no download), two epochs, so
that a run has a real checkpoint, optimiser state and random state to damage.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import digitlab
from digitlab.checkpoint import remove_partial_writes, save_checkpoint
from digitlab.cli import main
from digitlab.errors import CheckpointError, ConfigError, WriteError
from digitlab.recipes import RECIPES, Recipe
from memorytools import process_memory_mb

EPOCH = "checkpoint/epoch-0002"
TINY = dict(settings=["dataset=digits8x8"], epochs=2, progress=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished two-epoch run (evaluated: it has metrics.json), copied by each test."""
    return digitlab.train("keras-mlp-dropout", out=tmp_path_factory.mktemp("base"), **TINY).path


@pytest.fixture
def run(base, tmp_path) -> Path:
    copy = tmp_path / "r"
    shutil.copytree(base, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def best_base(tmp_path_factory) -> Path:
    """A finished two-epoch --keep best run: its checkpoint holds the best epoch's weights too."""
    return digitlab.train(
        "keras-mlp-dropout", out=tmp_path_factory.mktemp("best"), val_split=0.25, keep="best", **TINY
    ).path


@pytest.fixture
def best_run(best_base, tmp_path) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(best_base, copy, symlinks=True)
    return copy


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the run holding a file of the user's, which no resume may touch."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("the user's own work\n")
    return victim


def snapshot(*folders: Path) -> dict:
    """Every entry under `folders`, links not followed: a link's target, a file's SHA-256."""
    found = {}
    for folder in folders:
        for parent, dirs, files in os.walk(folder, followlinks=False):
            for name in [*dirs, *files]:
                path = Path(parent, name)
                if path.is_symlink():
                    found[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    found[str(path)] = ("folder",)
                else:
                    found[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def resume(capsys, run: Path, *extra) -> tuple[int, str]:
    code = main(["train", "--resume", str(run), "--quiet", "--device", "cpu", *extra])
    return code, capsys.readouterr().err


# --- ways to damage a run --------------------------------------------------------------------------


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    changed = change(data)
    path.write_text(json.dumps(data if changed is None else changed))


def edit_tensors(path: Path, change) -> None:
    tensors = load_file(str(path))
    changed = change(tensors)
    save_file(tensors if changed is None else changed, str(path))


def link_out(relative: str):
    """Move a part of the run outside it and leave a symbolic link in its place."""

    def damage(run: Path, outside: Path) -> None:
        target = outside / relative.replace("/", "_")
        shutil.move(run / relative, target)
        (run / relative).symlink_to(target, target_is_directory=target.is_dir())

    return damage


def json_of(relative: str, change):
    return lambda run, outside: edit_json(run / relative, change)


def tensors_of(relative: str, change):
    return lambda run, outside: edit_tensors(run / relative, change)


def put(key, value):
    def change(data):
        data[key] = value

    return change


def drop(key):
    def change(data):
        del data[key]

    return change


def put_recipe(key, value):
    def change(config):
        config["recipe"][key] = value

    return change


def rename_tensor(old, new):
    def change(tensors):
        tensors[new] = tensors.pop(old)

    return change


def set_tensor(name, value):
    def change(tensors):
        tensors[name] = value

    return change


def optimizer_meta(change):
    def edit(state):
        change(state["optimizer"])

    return json_of(f"{EPOCH}/state.json", edit)


def two_groups(meta):
    meta["param_groups"].append(dict(meta["param_groups"][0], params=[]))


def betas_text(meta):
    meta["param_groups"][0]["betas"] = "x"


def no_betas(meta):
    del meta["param_groups"][0]["betas"]


def as_folder(relative: str):
    def damage(run: Path, outside: Path) -> None:
        (run / relative).unlink()
        (run / relative).mkdir()

    return damage


def link_tensorboard_out(run: Path, outside: Path) -> None:
    """RUN/tensorboard/ as a link to a folder of the user's: resume would write event files there."""
    (outside / "events").mkdir()
    (run / "tensorboard").symlink_to(outside / "events", target_is_directory=True)


def put_train(key, value):
    def change(config):
        config["train"][key] = value

    return change


def x_model(run: Path, outside: Path) -> None:
    """Issue 18's second reproduction: the checkpoint's weights are one tensor, {"x": zeros(1)}."""
    save_file({"x": torch.zeros(1)}, str(run / EPOCH / "model.safetensors"))


def first_weight(tensors) -> str:
    return sorted(name for name in tensors if name.endswith("weight"))[0]


def retype_weight(tensors):
    name = first_weight(tensors)
    tensors[name] = tensors[name].double()


def reshape_weight(tensors):
    name = first_weight(tensors)
    tensors[name] = tensors[name][:-1].contiguous()


def reshape_moment(tensors):
    tensors["state.0.exp_avg"] = torch.zeros(3)


HOSTILE = [
    # symbolic links: never read through, never written or deleted through
    ("checkpoint-link", link_out("checkpoint"), "checkpoint is a symbolic link"),
    ("epoch-folder-link", link_out(EPOCH), "epoch-0002 is a symbolic link"),
    ("latest-link", link_out("checkpoint/latest.json"), "latest.json is a symbolic link"),
    ("state-link", link_out(f"{EPOCH}/state.json"), "state.json is a symbolic link"),
    ("checkpoint-model-link", link_out(f"{EPOCH}/model.safetensors"), "model.safetensors is a symbolic link"),
    ("optimizer-link", link_out(f"{EPOCH}/optimizer.safetensors"), "optimizer.safetensors is a symbolic link"),
    ("rng-link", link_out(f"{EPOCH}/rng.safetensors"), "rng.safetensors is a symbolic link"),
    ("config-link", link_out("config.json"), "config.json is a symbolic link"),
    ("history-link", link_out("history.json"), "history.json is a symbolic link"),
    ("weights-link", link_out("model.safetensors"), "model.safetensors is a symbolic link"),
    ("metrics-link", link_out("metrics.json"), "metrics.json is a symbolic link"),
    ("history-csv-link", link_out("history.csv"), "history.csv is a symbolic link"),
    ("tensorboard-link", link_tensorboard_out, "tensorboard is a symbolic link"),
    ("history-csv-folder", as_folder("history.csv"), "history.csv is not a file"),
    ("history-folder", as_folder("history.json"), "history.json is not a file"),
    ("metrics-folder", as_folder("metrics.json"), "metrics.json is not a file"),
    ("latest-folder", as_folder("checkpoint/latest.json"), "latest.json is not a file"),
    # checkpoint/latest.json
    ("latest-list", json_of("checkpoint/latest.json", lambda d: [d]), "latest.json"),
    ("latest-epoch-text", json_of("checkpoint/latest.json", put("epoch", "2")), "'epoch' must be a whole number"),
    (
        "latest-epoch-zero",
        json_of("checkpoint/latest.json", lambda d: {"epoch": 0, "folder": "epoch-0000"}),
        "'epoch' must be a whole number",
    ),
    ("latest-no-epoch", json_of("checkpoint/latest.json", drop("epoch")), "'epoch' must be a whole number"),
    ("latest-folder-up", json_of("checkpoint/latest.json", put("folder", "..")), "'folder' must be 'epoch-0002'"),
    ("latest-folder-absolute", json_of("checkpoint/latest.json", put("folder", "/tmp")), "'folder' must be"),
    ("latest-other-epoch", json_of("checkpoint/latest.json", put("folder", "epoch-0001")), "'folder' must be"),
    # checkpoint/epoch-0002/state.json
    ("state-list", json_of(f"{EPOCH}/state.json", lambda d: [d]), "state.json"),
    ("state-no-epoch", json_of(f"{EPOCH}/state.json", drop("epoch")), "'epoch' must be 2"),
    ("state-epoch-text", json_of(f"{EPOCH}/state.json", put("epoch", "2")), "'epoch' must be 2"),
    ("state-epoch-disagrees", json_of(f"{EPOCH}/state.json", put("epoch", 3)), "'epoch' must be 2"),
    ("state-no-optimizer", json_of(f"{EPOCH}/state.json", drop("optimizer")), "optimiser state"),
    ("history-not-list", json_of(f"{EPOCH}/state.json", put("history", {"epoch": 1})), "'history' must"),
    ("history-short", json_of(f"{EPOCH}/state.json", lambda d: drop(-1)(d["history"])), "'history' must"),
    ("history-row-text", json_of(f"{EPOCH}/state.json", lambda d: d["history"].__setitem__(0, "x")), "history row 1"),
    (
        "history-row-loss-text",
        json_of(f"{EPOCH}/state.json", lambda d: d["history"][1].__setitem__("loss", "x")),
        "history row 2",
    ),
    ("param-groups-not-list", optimizer_meta(put("param_groups", {"lr": 1})), "param_groups"),
    ("param-groups-two", optimizer_meta(two_groups), "param_groups"),
    ("param-groups-betas-text", optimizer_meta(betas_text), "'betas'"),
    ("param-groups-no-betas", optimizer_meta(no_betas), "cannot be restored into the adam optimiser"),
    ("scalars-bad-index", optimizer_meta(put("scalars", {"x": {"step": 1}})), "scalars"),
    # config.json: the recipe and the training split, read back with their types checked
    ("config-list", json_of("config.json", lambda d: [d]), "config.json"),
    ("config-no-train", json_of("config.json", drop("train")), "config.json"),
    ("recipe-list", json_of("config.json", put("recipe", [1])), "recipe must be a JSON object"),
    ("recipe-no-name", json_of("config.json", lambda d: drop("name")(d["recipe"])), "lacks its 'name'"),
    ("seed-text", json_of("config.json", put_recipe("seed", "x")), "'seed' must be"),
    ("seed-huge", json_of("config.json", put_recipe("seed", 2**70)), "seed"),
    ("epochs-text", json_of("config.json", put_recipe("epochs", "3")), "'epochs' must be"),
    ("lr-text", json_of("config.json", put_recipe("lr", "fast")), "'lr' must be"),
    ("bf16-number", json_of("config.json", put_recipe("bf16", 1)), "'bf16' must be"),
    ("augment-text", json_of("config.json", put_recipe("augment", "x")), "'augment' must be"),
    ("augment-unknown", json_of("config.json", put_recipe("augment", {"wobble": 1})), "'augment'"),
    ("model-args-list", json_of("config.json", put_recipe("model_args", [1])), "'model_args' must be"),
    ("momentum-negative", json_of("config.json", put_recipe("momentum", -1)), "momentum"),
    ("step-epochs-zero", json_of("config.json", put_recipe("step_epochs", 0)), "step_epochs"),
    ("unknown-optimizer", json_of("config.json", put_recipe("optimizer", "rmsprop")), "unknown optimizer"),
    ("unknown-schedule", json_of("config.json", put_recipe("schedule", "cosine")), "unknown schedule 'cosine'"),
    ("fewer-epochs-than-trained", json_of("config.json", put_recipe("epochs", 1)), "epochs"),
    ("val-split-text", json_of("config.json", lambda d: d["train"].__setitem__("val_split", "x")), "val_split"),
    ("subset-zero", json_of("config.json", lambda d: d["train"].__setitem__("subset", 0)), "subset"),
    ("keep-unknown", json_of("config.json", put_train("keep", "worst")), "train.keep must be one of last, best"),
    ("keep-best-without-validation", json_of("config.json", put_train("keep", "best")), "train.keep is 'best'"),
    ("tensorboard-text", json_of("config.json", put_train("tensorboard", "yes")), "train.tensorboard must be true"),
    (
        "best-in-a-keep-last-run",
        json_of(f"{EPOCH}/state.json", lambda d: d.__setitem__("best", {"epoch": 1, **d["history"][0]})),
        "best.safetensors is missing",
    ),
    ("unknown-model", json_of("config.json", put_recipe("model", "no-such-net")), "unknown model"),
    ("model-args-unknown", json_of("config.json", put_recipe("model_args", {"wings": 2})), "cannot be built"),
    ("model-args-other-net", json_of("config.json", put_recipe("model_args", {"hidden": [32]})), "does not match"),
    # the checkpoint's tensors against the network, optimiser and generators the config builds
    ("model-x-zeros", x_model, "does not match"),
    ("model-weight-float64", tensors_of(f"{EPOCH}/model.safetensors", retype_weight), "float64"),
    ("model-weight-shape", tensors_of(f"{EPOCH}/model.safetensors", reshape_weight), "does not match"),
    (
        "optimizer-name-without-dots",
        tensors_of(f"{EPOCH}/optimizer.safetensors", rename_tensor("state.0.exp_avg", "exp_avg0")),
        "state.INDEX.KEY",
    ),
    (
        "optimizer-name-bad-index",
        tensors_of(f"{EPOCH}/optimizer.safetensors", rename_tensor("state.0.exp_avg", "state.x.exp_avg")),
        "state.INDEX.KEY",
    ),
    (
        "optimizer-extra-parameter",
        tensors_of(f"{EPOCH}/optimizer.safetensors", set_tensor("state.99.exp_avg", torch.zeros(1))),
        "parameter 99",
    ),
    ("optimizer-moment-shape", tensors_of(f"{EPOCH}/optimizer.safetensors", reshape_moment), "parameter 0"),
    (
        "optimizer-foreign-key",
        tensors_of(f"{EPOCH}/optimizer.safetensors", rename_tensor("state.0.exp_avg", "state.0.momentum_buffer")),
        "parameter 0",
    ),
    (
        "rng-wrong-size",
        tensors_of(f"{EPOCH}/rng.safetensors", set_tensor("generator", torch.zeros(10, dtype=torch.uint8))),
        "'generator'",
    ),
    (
        "rng-wrong-dtype",
        tensors_of(f"{EPOCH}/rng.safetensors", set_tensor("torch", torch.zeros(5056, dtype=torch.float32))),
        "'torch'",
    ),
    (
        "rng-invalid-state",
        tensors_of(f"{EPOCH}/rng.safetensors", set_tensor("torch", torch.zeros(5056, dtype=torch.uint8))),
        "'torch'",
    ),
    ("rng-missing", tensors_of(f"{EPOCH}/rng.safetensors", lambda t: {"torch": t["torch"]}), "'generator'"),
]


@pytest.mark.parametrize("damage, message", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_a_hostile_run_is_refused_in_one_line_and_left_as_it_was(damage, message, run, outside, capsys):
    damage(run, outside)
    before = snapshot(run, outside)
    code, err = resume(capsys, run, "--epochs", "3")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitlab: error: "), err
    assert message in lines[0]
    assert snapshot(run, outside) == before


HOSTILE_BEST = [
    # a --keep best run: its checkpoint's best weights and the "best" of its state.json
    ("best-link", link_out(f"{EPOCH}/best.safetensors"), "best.safetensors is a symbolic link"),
    ("best-missing", lambda run, outside: (run / EPOCH / "best.safetensors").unlink(), "best.safetensors is missing"),
    ("best-weight-shape", tensors_of(f"{EPOCH}/best.safetensors", reshape_weight), "best.safetensors does not match"),
    ("best-x-zeros", tensors_of(f"{EPOCH}/best.safetensors", lambda t: {"x": torch.zeros(1)}), "does not match"),
    ("best-not-object", json_of(f"{EPOCH}/state.json", put("best", 1)), "'best' must name one of its 2 epochs"),
    (
        "best-epoch-beyond",
        json_of(f"{EPOCH}/state.json", lambda d: d["best"].__setitem__("epoch", 7)),
        "'best' must name one of its 2 epochs",
    ),
    (
        "best-accuracy-disagrees",
        json_of(f"{EPOCH}/state.json", lambda d: d["best"].__setitem__("val_accuracy", 2.0)),
        "'best' gives epoch",
    ),
    ("best-dropped", json_of(f"{EPOCH}/state.json", drop("best")), "lacks a 'best' epoch"),
    ("keep-edited-to-last", json_of("config.json", put_train("keep", "last")), "holds a 'best' epoch"),
    ("keep-best-validation-dropped", json_of("config.json", put_train("val_split", 0)), "train.keep is 'best'"),
]


@pytest.mark.parametrize("damage, message", [case[1:] for case in HOSTILE_BEST], ids=[case[0] for case in HOSTILE_BEST])
def test_a_hostile_keep_best_run_is_refused_in_one_line_and_left_as_it_was(damage, message, best_run, outside, capsys):
    test_a_hostile_run_is_refused_in_one_line_and_left_as_it_was(damage, message, best_run, outside, capsys)


def test_resume_keeps_what_the_run_keeps(best_run, capsys):
    before = snapshot(best_run)
    code, err = resume(capsys, best_run, "--epochs", "3", "--keep", "last")
    assert code == 2 and err.startswith("digitlab: error: --resume continues the run as configured: it keeps its best")
    assert snapshot(best_run) == before
    code, err = resume(capsys, best_run, "--epochs", "3")
    assert code == 0, err
    config = json.loads((best_run / "config.json").read_text())
    history = json.loads((best_run / "history.json").read_text())
    best = max(range(3), key=lambda i: (history[i]["val_accuracy"], -i)) + 1
    assert config["kept"]["epoch"] == best and config["kept"]["of_epochs"] == 3


def test_issue_reproduction_a_symlinked_checkpoint_deletes_nothing_outside_the_run(run, outside, capsys):
    # Issue 18, 1: cp -r runs/base runs/r; rm -r runs/r/checkpoint runs/r/metrics.json;
    # ln -s "$PWD/victim" runs/r/checkpoint; digitlab train --resume runs/r --epochs 3
    shutil.rmtree(run / "checkpoint")
    (run / "metrics.json").unlink()
    (run / "checkpoint").symlink_to(outside, target_is_directory=True)
    before = snapshot(run, outside)
    code, err = resume(capsys, run, "--epochs", "3")
    assert code == 2 and "checkpoint is a symbolic link" in err
    assert (outside / "precious.txt").read_text() == "the user's own work\n"
    assert snapshot(run, outside) == before


def test_issue_reproduction_a_damaged_checkpoint_leaves_the_run_whole(run, capsys):
    # Issue 18, 2: the checkpoint's model.safetensors holds {"x": zeros(1)}; resume used to
    # overwrite model.safetensors and delete metrics.json before failing with a RuntimeError.
    x_model(run, None)
    before = snapshot(run)
    code, err = resume(capsys, run, "--epochs", "3")
    assert code == 2 and "model.safetensors does not match" in err and "lacks" in err
    assert snapshot(run) == before
    assert (run / "metrics.json").is_file()


def test_an_enormous_network_in_config_json_is_refused_before_it_is_built(run, capsys):
    # 10^6 x 10^6 hidden units would be 4 TB of weights: the shapes are compared on the meta
    # device, so resume refuses without allocating (peak memory grows by less than 200 MiB).
    edit_json(run / "config.json", put_recipe("model_args", {"hidden": [10**6, 10**6]}))
    before, peak = snapshot(run), process_memory_mb()
    code, err = resume(capsys, run, "--epochs", "3")
    assert code == 2 and "does not match" in err
    assert process_memory_mb() - peak < 200
    assert snapshot(run) == before


def test_a_network_of_thousands_of_layers_in_config_json_is_refused_from_its_count(run, capsys):
    # Building 20,000 layers takes about a minute even on the meta device: the tensors the
    # arguments imply (models.tensor_count) are compared with the checkpoint's first.
    edit_json(run / "config.json", put_recipe("model_args", {"hidden": [8] * 20_000}))
    before, started = snapshot(run), time.perf_counter()
    code, err = resume(capsys, run, "--epochs", "3")
    assert code == 2 and "40,002 tensors" in err
    assert time.perf_counter() - started < 15
    assert snapshot(run) == before


# --- what resume and the checkpoint clean-up may delete: only digitlab's own files ----------------


def test_a_users_files_in_the_checkpoint_folder_survive_resume(run, capsys):
    (run / "checkpoint" / "notes.txt").write_text("mine\n")
    (run / "checkpoint" / "epoch-notes").mkdir()
    code, err = resume(capsys, run, "--epochs", "3")
    assert code == 0, err
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [
        "epoch-0003",
        "epoch-notes",
        "latest.json",
        "notes.txt",
    ]
    assert json.loads((run / "checkpoint" / "latest.json").read_text())["epoch"] == 3


def tiny_checkpoint(run_dir: Path, epoch: int) -> Path:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(
        run_dir,
        epoch,
        model.state_dict(),
        optimizer.state_dict(),
        {"generator": torch.Generator().get_state()},
        {"history": []},
    )


def test_checkpoint_clean_up_deletes_only_its_own_folders_and_temporaries(tmp_path, outside):
    root = tmp_path / "run" / "checkpoint"
    tiny_checkpoint(root.parent, 1)
    (root / ".epoch-0002.abc123").mkdir()  # the folder of a write killed before its rename
    (root / ".latest.json.abc123.tmp").write_text("{")
    (root / "notes.txt").write_text("mine\n")
    (root / "epoch-0007").symlink_to(outside, target_is_directory=True)
    (root / ".epoch-0008.x").symlink_to(outside, target_is_directory=True)
    (root / ".precious.txt.x.tmp").symlink_to(outside / "precious.txt")
    before = snapshot(outside)
    tiny_checkpoint(root.parent, 2)
    assert sorted(p.name for p in root.iterdir()) == [
        ".epoch-0008.x",
        ".precious.txt.x.tmp",
        "epoch-0002",
        "epoch-0007",
        "latest.json",
        "notes.txt",
    ]
    assert snapshot(outside) == before


def test_a_symlinked_checkpoint_folder_is_never_written_through(tmp_path, outside):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    with pytest.raises(WriteError, match="symbolic link"):
        tiny_checkpoint(tmp_path / "run", 1)
    assert snapshot(outside) == before


def test_partial_writes_are_cleared_without_following_links(tmp_path, outside):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / ".config.json.abc.tmp").write_text("half")
    (run_dir / "checkpoint" / ".epoch-0003.abc").mkdir()
    (run_dir / "checkpoint" / ".epoch-0004.abc").symlink_to(outside, target_is_directory=True)
    (run_dir / ".history.json.abc.tmp").symlink_to(outside / "precious.txt")
    (outside / ".model.safetensors.abc.tmp").write_text("the user's, in the folder a link points to")
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    remove_partial_writes(run_dir)
    remove_partial_writes(other)
    assert sorted(p.name for p in run_dir.rglob("*")) == [".epoch-0004.abc", ".history.json.abc.tmp", "checkpoint"]
    assert snapshot(outside) == before


# --- Recipe.from_json: every field read back with its type checked -------------------------------


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_reads_back_from_its_json(name):
    recipe = RECIPES[name]
    assert Recipe.from_json(json.loads(json.dumps(recipe.to_json()))).to_json() == json.loads(
        json.dumps(recipe.to_json())
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seed", "x", "'seed' must be a whole number"),
        ("seed", True, "'seed' must be a whole number"),
        ("epochs", 2.5, "'epochs' must be a whole number"),
        ("lr", float("nan"), "'lr' must be a finite number"),
        ("lr", None, "'lr' must be a finite number"),
        ("name", 3, "'name' must be a string"),
        ("nesterov", "yes", "'nesterov' must be true or false"),
        ("published_accuracy", "high", "'published_accuracy' must be a finite number or null"),
        ("augment", [1, 2], "'augment' must be"),
        ("augment", {"shift": "x"}, "'augment'"),
    ],
)
def test_recipe_fields_of_the_wrong_type_are_named(field, value, message):
    data = RECIPES["digitnet"].to_json()
    data[field] = value
    with pytest.raises(ConfigError, match=message):
        Recipe.from_json(data)


def test_a_recipe_that_is_not_an_object_or_lacks_a_field_is_refused():
    with pytest.raises(ConfigError, match="JSON object"):
        Recipe.from_json(["digitnet"])
    data = RECIPES["digitnet"].to_json()
    del data["model"]
    with pytest.raises(ConfigError, match="lacks its 'model'"):
        Recipe.from_json(data)


def test_a_damaged_checkpoint_is_a_checkpoint_error_through_the_api(run):
    x_model(run, None)
    with pytest.raises(CheckpointError, match="does not match"):
        digitlab.train(None, resume=run, epochs=3, progress=False)
