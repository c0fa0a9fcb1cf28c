"""The import contracts of pyproject.toml ``[tool.importlinter]`` hold (docs/architecture.md):
kbert is layered, the report never imports torch, the layers and kernels stand alone, and
no package has an import cycle. A broken contract fails with import-linter's report,
which names the offending import chain."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib

import pytest

import kbert
from helpers import REPO

pytest.importorskip("importlinter", reason="import-linter is in the test extras: pip install -e .[test]")

LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_import_contracts_hold():
    """import-linter reads pyproject.toml from the repository root and checks every contract."""
    result = subprocess.run([sys.executable, "-c", LINT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"import contracts broken:\n{result.stdout}\n{result.stderr}"


def test_layers_and_kernels_contract_names_every_other_module():
    """The forbidden list of ``layers-kernels-alone`` is spelled out; a new top-level
    module must join it (the exhaustive ``layers`` contract already makes it take a layer)."""
    children = {f"kbert.{m.name}" for m in pkgutil.iter_modules(kbert.__path__)} - {"kbert.layers", "kbert.kernels"}
    listed = set(_contracts()["layers-kernels-alone"]["forbidden_modules"])
    assert children - listed == set(), "add these to layers-kernels-alone in pyproject.toml"
    assert listed - children == set(), "these are no longer modules of kbert: remove them from pyproject.toml"
