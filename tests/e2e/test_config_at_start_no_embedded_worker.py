"""STRIPEMETER_CONFIG_FILE with STRIPEMETER_EMBEDDED_WORKER=false: ``serve`` itself applies
the file before anything starts, so a change the domain refuses is its one-line
refusal and exit status 1 (not the API process's ERROR line and status 3, which
docs/config-file.md said of both)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.test_config_at_start import EXAMPLE, ROOT, environment
from tests.e2e.test_examples import cli


def test_serve_without_the_embedded_worker_refuses_a_change_with_one_line(
    tmp_path: Path,
) -> None:
    env = {**environment(tmp_path, EXAMPLE), "STRIPEMETER_EMBEDDED_WORKER": "false"}
    cli(env, "tenants", "create", "acme")
    cli(env, "meters", "create", "--tenant", "acme", "--name", "seats", "--aggregation", "last")
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"stripemeter: {EXAMPLE}: metrics.seats: metric 'seats' is already declared with"
        " other settings (aggregation last -> max, unit unit -> seat)"
    )
    assert "refused, not starting" not in done.stdout + done.stderr
