"""The package stands alone: it imports nothing of the service, and ships its types."""

from __future__ import annotations

import ast
import sys

import tomllib
from sdk_service import ROOT

import stripemeter

PACKAGE = ROOT / "sdk" / "python"
SOURCE = PACKAGE / "src" / "stripemeter"


def test_the_sdk_imports_only_the_standard_library_httpx_and_itself() -> None:
    imported: set[str] = set()
    for module in SOURCE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    outside = {name for name in imported if name not in sys.stdlib_module_names}
    assert outside == {"httpx", "stripemeter"}


def test_the_distribution_metadata_matches_the_package() -> None:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert project["name"] == "stripemeter-client"
    assert project["version"] == stripemeter.__version__
    assert project["dependencies"] == ["httpx>=0.27,<1"]
    assert (SOURCE / "py.typed").exists()
    assert (PACKAGE / "LICENSE").exists()
    assert all(hasattr(stripemeter, name) for name in stripemeter.__all__)
