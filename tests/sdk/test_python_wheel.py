"""The Python SDK builds into a wheel with its types and complete metadata (not published)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import stripemeter

PYTHON_SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"


def test_the_wheel_holds_the_package_its_types_and_its_metadata(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=PYTHON_SDK,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("stripemeter_client-*.whl")
    assert wheel.name == f"stripemeter_client-{stripemeter.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert {"stripemeter/__init__.py", "stripemeter/py.typed"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not {n for n in names if n.startswith(("tests/", "sdk_service"))}
    assert metadata["Name"] == "stripemeter-client"
    assert metadata["Version"] == stripemeter.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata.get_all("Requires-Dist") == ["httpx<1,>=0.27"]
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert metadata["Description-Content-Type"] == "text/markdown"
