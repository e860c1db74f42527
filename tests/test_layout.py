"""The house keeps its shape: short functions, light start-up, no test-only dependency in the product.

The one-way import order of the stages is checked by import-linter (`lint-imports`, the contract in
pyproject.toml) and style by ruff, both run by .ci/run before the tests; these tests check what those
tools do not.
"""

import ast
import subprocess
import sys
from pathlib import Path

from digitlab import catalog
from digitlab.models import count_parameters
from digitlab.recipes import RECIPES

SRC = Path(__file__).resolve().parents[1] / "src" / "digitlab"
LONGEST = 80  # lines, decorators excluded; a longer function says why in a "# long: ..." comment above it

# The libraries that take a second or more to import on 2 cores: `digitlab --help` needs none of them.
HEAVY = (
    "torch",
    "numpy",
    "cv2",
    "PIL",
    "sklearn",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "hypothesis",
    "tensorflow",
    "keras",
)


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield path, node, lines[max(0, start - 3) : start - 1]


def test_no_function_in_the_package_is_longer_than_80_lines_unless_it_says_why():
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node, above in _functions()
        if node.end_lineno - node.lineno + 1 > LONGEST and not any("# long:" in line for line in above)
    ]
    assert long == []


def test_the_length_check_sees_the_functions():
    # the check above cannot pass by looking at nothing: it finds the package's functions and their lengths
    found = {(path.name, node.name): node.end_lineno - node.lineno + 1 for path, node, _ in _functions()}
    assert len(found) > 300
    assert found[("cli.py", "main")] > 5


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=SRC.parents[1]
    )


def test_help_imports_no_heavy_library():
    done = _python(
        "import sys\n"
        "from digitlab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert "usage: digitlab" in done.stdout
    assert done.stdout.splitlines()[-1] == "imported:"


def _imported_by_command(*args: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` are imported once `digitlab ARGS` has run in a fresh interpreter."""
    done = _python(
        "import sys\n"
        "from digitlab.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"print('imported:', *(m for m in {modules!r} if m in sys.modules))\n"
        "sys.exit(code)",
        *args,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


def test_the_recipe_table_imports_no_torch():
    # torch alone takes a second to import; the table's parameter counts are recorded (catalog.PARAMETERS)
    assert _imported_by_command("recipes", modules=("torch", "sklearn", "matplotlib", "onnx", "cv2")) == []
    assert _imported_by_command("recipes", "--json", modules=("torch",)) == []


def test_predict_imports_neither_dynamo_nor_sklearn_nor_matplotlib(digit_png):
    # torch._dynamo (1 s) came with the meta device's first elementwise op, in model_files' shape check.
    # onnx is imported, by torch's TorchScript-based exporter, for the in-memory export at load.
    slow = ("torch._dynamo", "sklearn", "matplotlib", "onnxscript")
    assert _imported_by_command("predict", str(digit_png), modules=slow) == []


def test_the_recorded_parameter_counts_are_those_of_the_recipes_models():
    assert set(catalog.PARAMETERS) == set(RECIPES)  # every shipped recipe recorded, and nothing else
    counted = {name: count_parameters(catalog.recipe_model(recipe)) for name, recipe in RECIPES.items()}
    assert counted == catalog.PARAMETERS


def test_a_recipe_without_a_recorded_count_has_its_model_counted(monkeypatch):
    recorded = catalog.PARAMETERS
    monkeypatch.setattr(catalog, "PARAMETERS", {})
    assert [row["parameters"] for row in catalog.recipe_table()] == [recorded[name] for name in RECIPES]


def test_every_module_imports_without_the_test_extra():
    # hypothesis is the test extra's and only the fuzz suite needs it; tensorflow/keras are the peers' and
    # only bench speed's Keras side needs them. Block them and import every other module.
    code = """
import importlib, pkgutil, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hypothesis", "tensorflow", "keras"):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Blocked())
import digitlab
needs = {"digitlab.bench.fuzz", "digitlab.bench.fuzz_inputs"}
names = [m.name for m in pkgutil.walk_packages(digitlab.__path__, "digitlab.") if m.name not in needs]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 30


def test_hypothesis_is_imported_by_the_fuzz_suite_only():
    importers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "hypothesis" for name in names):
                importers.add(str(path.relative_to(SRC)))
    assert importers and importers <= {"bench/fuzz.py", "bench/fuzz_inputs.py"}
