"""The command line names periods and months by the same rules as the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from adapters.persistence import Stores
from api import cli
from domain.meters import Aggregation, MetricDefinition


def setup(stores: Stores) -> None:
    tenant = stores.app.register_tenant("acme", "Acme").id
    stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    anchor = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
    stores.app.map_customer(tenant, "cus_anchored", "cus_stripe_a", anchor)
    stores.app.map_customer(tenant, "cus_calendar", "cus_stripe_c", None)


def audit(capsys: pytest.CaptureFixture[str], customer: str, period: str) -> tuple[int, str, str]:
    names = ["--tenant", "acme", "--customer-ref", customer, "--metric", "api_calls"]
    code = cli.main(["audit", *names, "--period", period])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("cli_env")
def test_audit_period_follows_the_customers_billing_cycle(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(stores)
    code, out, err = audit(capsys, "cus_anchored", "2026-03")
    assert (code, out) == (1, "")
    assert err == (
        "stripemeter: period: customer cus_anchored is billed from its Stripe anchor"
        " 2026-01-05T10:30:00Z; name a period by its start, e.g. 2026-03-05T10:30:00Z\n"
    )
    code, out, err = audit(capsys, "cus_anchored", "2026-03-05T10:30:00Z")
    assert code == 0, err
    assert (json.loads(out)["periodStart"], json.loads(out)["periodEnd"]) == (
        "2026-03-05T10:30:00Z",
        "2026-04-05T10:30:00Z",
    )
    code, out, err = audit(capsys, "cus_calendar", "2026-03")
    assert code == 0, err
    assert json.loads(out)["period"] == "2026-03"
    code, out, err = audit(capsys, "cus_calendar", "0888-10")
    assert (code, err) == (1, "stripemeter: period: must be a month from 2000-01 to 2100-12\n")


@pytest.mark.usefixtures("cli_env")
def test_reconcile_period_is_a_month_in_the_billed_years(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(stores)
    code = cli.main(["reconcile", "--tenant", "acme", "--period", "0888-10"])
    _, err = capsys.readouterr()
    assert (code, err) == (1, "stripemeter: --period: must be a month from 2000-01 to 2100-12\n")
