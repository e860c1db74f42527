"""README's front door says what works: the set-up commands, the extras, and the test command CI runs."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _setup_block() -> list[str]:
    section = README[README.index("## Set up, run, test") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_set_up_is_two_commands_install_then_the_main_job():
    install, main_job = _setup_block()
    # PyTorch's own CPU wheel index: on an ordinary machine `pip install torch==2.13.0` is the CUDA build
    assert install.startswith("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && ")
    assert "peers" not in install  # TensorFlow (1.3 GB) only for who asks for it
    assert main_job == "DIGITLAB_DATA=../shared/data digitlab train digitnet"


def test_the_plain_install_has_no_tensorflow_and_the_extras_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[ ]", dependency)[0].lower() for dependency in project["dependencies"]]
    assert not {"tensorflow", "tensorflow-cpu", "keras"} & set(names)
    assert {"test", "peers", "lint"} <= set(project["optional-dependencies"])
    for extra in re.findall(r'pip install -e "\.\[(\w+)\]"', README):
        assert extra in project["optional-dependencies"]


def test_ci_runs_the_readme_test_command_exactly():
    command = re.search(r"```bash\n(DIGITLAB_DATA=\S+ python -m pytest -q)\s", README).group(1)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command
