"""The runtime package ``ccat_operators`` holds runtime code only; the development tools live in ``ccat_dev``.

Workers and the image built from the Dockerfile have ``ccat_operators`` and not ``ccat_dev``
(the demo's and tests' private PostgreSQL, S3 and Airflow): nothing in the runtime package may
need it, and ``ccat devdb`` says it is a development command when it is absent.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ccat_operators.cli import main
from tests.conftest import REPO

RUNTIME = REPO / "plugins" / "ccat_operators"
DEV_PACKAGE = "ccat_dev"


def dev_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, inside a function) of every import of the dev package in a module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            if any(name == DEV_PACKAGE or name.startswith(f"{DEV_PACKAGE}.") for name in names):
                found.append((child.lineno, in_function))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def test_no_runtime_module_imports_the_dev_package_at_module_level() -> None:
    modules = sorted(RUNTIME.rglob("*.py"))
    assert len(modules) > 30
    imports = {str(path.relative_to(REPO)): dev_imports(path) for path in modules}
    at_module_level = {name: lines for name, lines in imports.items() if any(not inside for _, inside in lines)}
    assert at_module_level == {}
    # The one lazy import: `ccat devdb` in the CLI.
    assert {name for name, lines in imports.items() if lines} == {"plugins/ccat_operators/cli.py"}
    assert not list(RUNTIME.glob("dev*.py")) and not (RUNTIME / "children.py").exists()


#: Imports every module of ccat_operators in a fresh interpreter where ccat_dev cannot be imported.
IMPORT_ALL_WITHOUT_DEV = """
import importlib, importlib.abc, pkgutil, sys

class NoDevPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ccat_dev" or name.startswith("ccat_dev."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name="ccat_dev")
        return None

sys.meta_path.insert(0, NoDevPackage())
import ccat_operators
names = [info.name for info in pkgutil.walk_packages(ccat_operators.__path__, "ccat_operators.")]
for name in names:
    importlib.import_module(name)
assert not any(name.startswith("ccat_dev") for name in sys.modules)
print(len(names))
"""


def test_every_runtime_module_imports_without_the_dev_package() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL_WITHOUT_DEV], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 30


def test_devdb_without_the_dev_package_says_it_is_a_development_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [name for name in sys.modules if name == DEV_PACKAGE or name.startswith(f"{DEV_PACKAGE}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: "import halted"
    monkeypatch.setitem(sys.modules, DEV_PACKAGE, None)
    assert main(["devdb", "start", "--dir", str(tmp_path / "pg")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ccat: error: `ccat devdb start` is a development command")
    assert "make install" in error and error.count("\n") == 1
    assert not (tmp_path / "pg").exists()


def test_the_image_and_the_runtime_distribution_hold_only_the_runtime_package() -> None:
    copied = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith(("COPY ", "ADD ")):
            copied += line.split()[1:-1]
    runtime = {"requirements.txt", "constraints.txt", "pyproject.toml", "README.md", "plugins/ccat_operators"}
    assert set(copied) == runtime
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "dev" in ignored and "tests" in ignored
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"] == {"where": ["plugins"], "include": ["ccat_operators*"]}
    dev_project = tomllib.loads((REPO / "dev" / "pyproject.toml").read_text())
    assert dev_project["tool"]["setuptools"]["packages"]["find"]["include"] == ["ccat_dev*"]


@pytest.mark.parametrize(
    ("command", "preloaded"),
    [("scheduler", True), ("celery", True), ("dag-processor", True), ("api-server", False), ("version", False)],
)
def test_the_processes_that_fork_our_code_preload_it(command: str, preloaded: bool, tmp_path: Path) -> None:
    """The scheduler, a Celery worker and the dag-processor import every module of ours at start; others do not."""
    check = (
        "import sys; sys.argv = ['airflow', sys.argv[1]]; import airflow.settings; "
        "from ccat_operators.preload import module_names; "
        "import json; print(json.dumps(sorted(m for m in module_names() if m not in sys.modules)))"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", check, command], env=env, capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    missing = json.loads(result.stdout.strip().splitlines()[-1])
    assert (missing == []) is preloaded, (missing, result.stderr[-2000:])
    assert "not preloaded" not in result.stderr
