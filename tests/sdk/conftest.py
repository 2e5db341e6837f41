"""Node and npm for the Node SDK's tests: skipped locally without them, a failure under CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_SDK = Path(__file__).resolve().parents[2] / "sdk" / "node"


@pytest.fixture(scope="session")
def npm() -> str:
    """npm, with the SDK's development packages installed from the lockfile (``npm ci``)."""
    found = shutil.which("npm")
    if found is None or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js and npm are required under CI (.ci/run installs them)")
        pytest.skip("Node.js and npm are not installed")
    lock = NODE_SDK / "package-lock.json"
    installed = NODE_SDK / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([found, "ci", "--no-audit", "--no-fund"], cwd=NODE_SDK, check=True)
    return found


@pytest.fixture(scope="session")
def node_sdk_build(npm: str) -> Path:
    """The SDK's CommonJS build, built once per session from the current sources."""
    subprocess.run([npm, "run", "build"], cwd=NODE_SDK, check=True, capture_output=True)
    return NODE_SDK / "dist" / "cjs" / "index.js"
