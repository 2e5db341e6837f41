"""The Node SDK's own tests (node:test, against a real service) and its npm tarball.

They run here so that the README's one test command covers them. Node and npm
come from the system (``.ci/run`` installs Debian's when missing); the SDK's
development packages only through ``npm ci`` and the committed lockfile.
Without Node the tests are skipped locally and fail under CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.sdk.conftest import NODE_SDK

BUILD = "npm run build"


def scripts() -> dict[str, str]:
    manifest: dict[str, dict[str, str]] = json.loads((NODE_SDK / "package.json").read_text())
    return manifest["scripts"]


def test_the_node_sdk_passes_its_tests_against_the_real_service(
    npm: str, node_sdk_build: Path
) -> None:
    """``npm test``, with its pretest's build being the session's (``node_sdk_build``, from
    the same sources) rather than a third one: the pretest's other steps, then the tests."""
    steps = [step.strip() for step in scripts()["pretest"].split("&&")]
    assert BUILD in steps, steps
    for step in steps:
        if step != BUILD:
            checked = subprocess.run(
                [npm, "exec", "--", *step.split()],
                check=False,
                cwd=NODE_SDK,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert checked.returncode == 0, (step, checked.stdout[-3000:], checked.stderr[-3000:])
    done = subprocess.run(
        [npm, "test", "--ignore-scripts"],  # the test script itself; no pre- or post-script
        check=False,
        cwd=NODE_SDK,
        env={**os.environ, "STRIPEMETER_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "# fail 0" in done.stdout


def test_the_npm_tarball_holds_the_builds_types_readme_and_licence_only(
    npm: str, node_sdk_build: Path
) -> None:
    # npm pack builds first (prepack); the session has built from the same sources.
    assert BUILD in scripts()["prepack"]
    done = subprocess.run(
        [npm, "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=NODE_SDK,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    (pack,) = json.loads(done.stdout)
    files = {entry["path"] for entry in pack["files"]}
    assert pack["name"] == "@stripemeter/sdk-node"
    assert {"package.json", "README.md", "LICENSE"} <= files
    for build in ("esm", "cjs"):
        assert {f"dist/{build}/index.js", f"dist/{build}/index.d.ts"} <= files
    assert "dist/cjs/package.json" in files
    assert not {f for f in files if f.startswith(("src/", "test/", "node_modules/"))}
    manifest = json.loads((NODE_SDK / "package.json").read_text())
    assert manifest["license"] == "MIT"
    assert not manifest.get("dependencies"), "the SDK has no runtime dependencies"
