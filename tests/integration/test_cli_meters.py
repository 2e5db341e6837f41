"""``stripemeter meters`` answers from the same query as ``/v1/meters``, without building a request.

The CLI declares a metric by the metric's own rules and lists metrics in the
API's shape; a second identical declaration changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.persistence import Stores
from api import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


@pytest.mark.usefixtures("cli_env")
def test_meters_create_then_list_in_the_apis_shape(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    stores.app.register_tenant("acme", "Acme")
    create = ("meters", "create", "--tenant", "acme", "--name", "gpu_seconds")
    flags = ("--aggregation", "max", "--unit", "second", "--stripe-event-name", "gpu_s")

    assert run(capsys, *create, *flags) == (0, {"name": "gpu_seconds", "created": True}, "")
    assert run(capsys, *create, *flags) == (0, {"name": "gpu_seconds", "created": False}, "")
    assert run(capsys, "meters", "list", "--tenant", "acme") == (
        0,
        [
            {
                "name": "gpu_seconds",
                "aggregation": "max",
                "unit": "second",
                "latenessWindowSeconds": 48 * 3600,
                "stripeEventName": "gpu_s",
                "allowNegative": False,
            }
        ],
        "",
    )


@pytest.mark.usefixtures("cli_env")
def test_meters_create_refuses_what_the_metric_refuses(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    stores.app.register_tenant("acme", "Acme")
    create = ("meters", "create", "--tenant", "acme")

    code, out, err = run(capsys, *create, "--name", "API-calls", "--aggregation", "sum")
    assert (code, out) == (1, None)
    assert err.startswith("stripemeter: name: must start with a lowercase letter")
    code, out, err = run(capsys, *create, "--name", "api_calls", "--aggregation", "median")
    assert (code, out) == (1, None)
    assert err == "stripemeter: aggregation: must be one of sum, count, max, last\n"
    assert run(capsys, "meters", "list", "--tenant", "acme") == (0, [], "")
