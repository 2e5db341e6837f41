"""STRIPEMETER_CONFIG_FILE refusals that ``serve`` itself makes before anything starts:
one line and exit status 1.

With STRIPEMETER_EMBEDDED_WORKER=false, ``serve`` applies the file itself, so a
change the domain refuses is its one-line refusal (not the API process's ERROR
line and status 3, which docs/config-file.md said of both). A file that names
no tenant is refused there too, whatever the worker."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.operator import create_tenant, declare_metric
from tests.e2e.test_config_at_start import EXAMPLE, environment, serve_once


def test_serve_without_the_embedded_worker_refuses_a_change_with_one_line(
    tmp_path: Path,
) -> None:
    env = {**environment(tmp_path, EXAMPLE), "STRIPEMETER_EMBEDDED_WORKER": "false"}
    create_tenant(env, "acme")
    declare_metric(env, "acme", "seats", "last")
    done = serve_once(env)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"stripemeter: {EXAMPLE}: metrics.seats: metric 'seats' is already declared with"
        " other settings (aggregation last -> max, unit unit -> seat)"
    )
    assert "refused, not starting" not in done.stdout + done.stderr


def test_serve_refuses_a_file_without_a_tenant_slug_before_anything_starts(
    tmp_path: Path,
) -> None:
    """``--tenant`` is config apply's; serve has only the file's slug. A file without one
    passed serve's check, started the writer and the API, and then stopped it with
    status 3 and a hint at a --tenant option serve does not have."""
    no_slug = tmp_path / "no-slug.toml"
    no_slug.write_text('[metrics.api_calls]\naggregation = "sum"\n')
    done = serve_once(environment(tmp_path, no_slug))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"stripemeter: {no_slug}: tenant.slug: is required (STRIPEMETER_CONFIG_FILE"
        " applies the file to the tenant it names)\n"
    )
