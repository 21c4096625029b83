"""The layers of docs/layout.md hold in the code: checked from the import statements themselves.

tuning/ holds the commands and the packages; a command never imports another command; the
library never imports a command or the commands' ``cli`` package; model/ never imports Optuna
or tuning; the tools that only read a study never load torch; no module passes 300 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TUNING = ROOT / "tuning"
COMMANDS = ("search", "confirm", "export", "train", "report", "dashboard", "spacetool", "whatif",
            "proxy")
PACKAGES = ("cli", "study", "space", "training", "workers", "results")
LIBRARY = ("study", "space", "training", "workers", "results")
READ_ONLY = ("export", "report", "dashboard", "spacetool", "whatif", "proxy")  # never load torch
API = "api"  # tuning/api.py: the Python API, on the library beside the commands
MAX_LINES = 300  # one concept a module (shared design notes)


def imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, with its submodules.

    ``from tuning import cores`` counts as ``tuning`` and ``tuning.cores``: a name imported from
    a package may be a module.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_tuning_holds_the_commands_and_the_packages() -> None:
    top = {p.stem for p in TUNING.glob("*.py")} - {"__init__"}
    folders = {p.name for p in TUNING.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top == {*COMMANDS, API}
    assert folders == set(PACKAGES)
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((TUNING / package / "__init__.py").read_text()))
        assert doc, f"tuning/{package}/__init__.py needs a docstring saying what the package holds"


def test_every_command_has_main() -> None:
    for command in COMMANDS:
        tree = ast.parse((TUNING / f"{command}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), command


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_never_imports_another(command: str) -> None:
    others = {f"tuning.{c}" for c in COMMANDS if c != command}
    assert imported(TUNING / f"{command}.py") & others == set()


def test_the_api_sits_on_the_library_beside_the_commands() -> None:
    names = imported(TUNING / f"{API}.py")
    assert names & {f"tuning.{c}" for c in COMMANDS} == set()
    # Of what the commands share, only the search's settings (its defaults and checks).
    cli = {n for n in names if n.startswith("tuning.cli")}
    assert cli <= {"tuning.cli.search_settings", "tuning.cli.search_settings.SearchSettings"}
    for command in COMMANDS:  # beside, not under: no command calls it
        assert f"tuning.{API}" not in imported(TUNING / f"{command}.py"), command


@pytest.mark.parametrize("package", LIBRARY)
def test_the_library_never_imports_the_commands(package: str) -> None:
    forbidden = {f"tuning.{c}" for c in (*COMMANDS, API)}
    for path in modules(TUNING / package):
        names = imported(path)
        assert names & forbidden == set(), path
        assert not any(n == "tuning.cli" or n.startswith("tuning.cli.") for n in names), path


def test_the_commands_shared_code_imports_no_command() -> None:
    forbidden = {f"tuning.{c}" for c in COMMANDS}
    for path in modules(TUNING / "cli"):
        assert imported(path) & forbidden == set(), path


def test_model_knows_neither_optuna_nor_tuning() -> None:
    for path in modules(ROOT / "model"):
        names = imported(path)
        assert not any(n.split(".")[0] in ("optuna", "tuning") for n in names), path


def test_benchmarks_use_the_library_not_the_commands() -> None:
    forbidden = {f"tuning.{c}" for c in COMMANDS}
    for path in modules(ROOT / "benchmarks"):
        names = imported(path)
        assert names & forbidden == set(), path
        assert not any(n.startswith("tuning.cli.search") for n in names), path


def test_no_module_is_over_the_size_budget() -> None:
    for path in [*modules(TUNING), *modules(ROOT / "model")]:
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


@pytest.mark.e2e
def test_the_read_only_tools_load_no_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for tool in {READ_ONLY!r}:\n"
        "    importlib.import_module('tuning.' + tool)\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(len(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
