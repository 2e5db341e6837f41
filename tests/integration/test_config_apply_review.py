"""``stripemeter config apply``: mappings by meter id, and ``push`` on a stored metric.

Found in the review of issue 16; on SQLite and PostgreSQL against the emulator,
run as an operator runs it (``cli.main``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.persistence import Stores
from adapters.stripe_gateway import SdkStripeGateway
from api import cli
from api.config_file import read_config
from api.config_plan import alert_id_for, apply_plan, plan
from domain.alerting import AlertService
from domain.meters import Aggregation, MetricDefinition
from domain.stripe_mapping import StripeMappingService
from domain.tenancy import tenant_id_for
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.integration.test_config_apply import apply, head, stripe_env, write

__all__ = ["stripe_env"]  # the fixture, shared with the apply tests


@pytest.mark.usefixtures("cli_env")
def test_a_mapping_by_meter_id_is_unchanged_on_the_second_apply(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The meter's event name is not the metric's: the plan compared the stored mapping
    with the metric's name, so every apply was an 'update' that asked Stripe again."""
    meter = stripe_env.client().v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": "calls_v2",
            "default_aggregation": {"formula": "sum"},
        }
    )
    path = write(
        tmp_path,
        f"""\
        [tenant]
        slug = "acme"
        [metrics.api_calls]
        aggregation = "sum"
        [mappings.api_calls]
        stripe_meter_id = "{meter.id}"
        """,
    )
    code, out, err = apply(capsys, path)
    assert (code, err, out[-1]) == (0, "", "applied 3 changes")
    mapping = stores.app.tenant(tenant_id_for("acme")).mappings["api_calls"]
    assert (mapping.stripe_meter_id, mapping.stripe_event_name) == (meter.id, "calls_v2")

    before = head(stores)
    code, out, err = apply(capsys, path)
    assert (code, err) == (0, "")
    assert f"  unchanged  mappings.api_calls: Stripe meter 'calls_v2' ({meter.id}), delta" in out
    assert out[-2:] == ["0 to create, 0 to update, 2 unchanged", "nothing to change"]
    assert head(stores) == before


@pytest.mark.usefixtures("cli_env")
def test_a_push_that_is_not_the_stored_metrics_is_refused(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/config-file.md: "a push that says otherwise is refused". It was, only for a
    metric declared in the same file; for one declared before, it passed silently."""
    stores.app.register_tenant("acme", "Acme")
    stores.app.declare_metric(tenant_id_for("acme"), MetricDefinition("seats", Aggregation.MAX))
    path = write(
        tmp_path,
        """\
        [tenant]
        slug = "acme"
        [mappings.seats]
        create_meter = true
        push = "delta"
        """,
    )
    before = head(stores)
    code, out, err = apply(capsys, path)
    assert (code, out) == (1, [])
    assert err == (
        f"stripemeter: {path}: mappings.seats.push: a 'max' metric is pushed as 'value'"
        " (the push follows the metric's aggregation: domain/mappings.py)\n"
    )
    assert head(stores) == before
    assert stripe_env.client().v1.billing.meters.list().data == []


@pytest.mark.usefixtures("cli_env")
def test_two_mappings_on_one_meter_by_id_are_refused_before_anything_is_applied(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The file's own check compares the event names it plans, which a meter named by id
    does not show: the plan passed, and the domain refused the second mapping midway,
    after the tenant, both metrics and the first mapping were applied."""
    meter = stripe_env.client().v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": "calls_v2",
            "default_aggregation": {"formula": "sum"},
        }
    )
    path = write(
        tmp_path,
        f"""\
        [tenant]
        slug = "acme"
        [metrics.api_calls]
        aggregation = "sum"
        [metrics.other_calls]
        aggregation = "sum"
        [mappings.api_calls]
        stripe_meter_id = "{meter.id}"
        [mappings.other_calls]
        stripe_meter_id = "{meter.id}"
        """,
    )
    before = head(stores)
    code, out, err = apply(capsys, path)
    assert (code, out) == (1, [])
    assert err == (
        f"stripemeter: {path}: mappings.other_calls: Stripe meter 'calls_v2' is already"
        " mapped by mappings.api_calls\n"
    )
    assert head(stores) == before


def test_two_applies_of_one_file_at_once_both_succeed(
    stores: Stores, stripe_env: RunningEmulator, tmp_path: Path
) -> None:
    """Two ``serve`` starting at once with one STRIPEMETER_CONFIG_FILE (two hosts, say)
    plan the same file before either applies it. The second then found the tenant and
    the alert it meant to create already there, and refused to start ("tenant 'acme'
    already exists") though the tenant says exactly what its file says."""
    path = write(
        tmp_path,
        """\
        [tenant]
        slug = "acme"
        [metrics.api_calls]
        aggregation = "sum"
        [mappings.api_calls]
        create_meter = true
        [alerts.heavy]
        metric = "api_calls"
        kind = "usage"
        threshold = 1000
        """,
    )
    config = read_config(path)
    gateway = SdkStripeGateway(TEST_API_KEY, stripe_env.url, max_network_retries=0)
    service = StripeMappingService(stores.app, gateway)
    first = plan(stores.app, config, None, lambda: service)
    second = plan(stores.app, config, None, lambda: service)

    assert [s.place for s in apply_plan(first)] == [
        "tenant",
        "metrics.api_calls",
        "mappings.api_calls",
        "alerts.heavy",
    ]
    apply_plan(second)  # raised ApplyError at "tenant"

    acme = tenant_id_for("acme")
    assert stores.app.tenant(acme).mappings["api_calls"].stripe_event_name == "api_calls"
    assert AlertService(stores.app).rule(acme, alert_id_for(acme, "heavy")).threshold == 1000
    assert [m.event_name for m in stripe_env.client().v1.billing.meters.list().data] == [
        "api_calls"
    ]


@pytest.mark.usefixtures("cli_env")
def test_another_tenant_than_the_files_is_not_given_the_files_tenant_name(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--tenant globex`` on a file for acme: globex was created named "Acme Inc"."""
    path = write(
        tmp_path,
        """\
        [tenant]
        slug = "acme"
        name = "Acme Inc"
        [metrics.api_calls]
        aggregation = "sum"
        """,
    )
    code = cli.main(["config", "apply", str(path), "--tenant", "globex"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "  create     tenant: globex (globex)" in out
    assert stores.app.tenant(tenant_id_for("globex")).display_name == "globex"


@pytest.mark.usefixtures("cli_env")
def test_a_mapping_by_id_does_not_claim_its_metrics_name_as_a_meter(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The file's check took a mapping by id to be on the meter named like its metric:
    ``calls`` by id (meter 'calls_v1') and ``calls_v2`` on meter 'calls' were refused
    as "Stripe meter 'calls' is already mapped by mappings.calls", which is untrue."""
    client = stripe_env.client()
    old = client.v1.billing.meters.create(
        {"display_name": "v1", "event_name": "calls_v1", "default_aggregation": {"formula": "sum"}}
    )
    path = write(
        tmp_path,
        f"""\
        [tenant]
        slug = "acme"
        [metrics.calls]
        aggregation = "sum"
        [metrics.calls_v2]
        aggregation = "sum"
        [mappings.calls]
        stripe_meter_id = "{old.id}"
        [mappings.calls_v2]
        stripe_event_name = "calls"
        create_meter = true
        """,
    )
    code, out, err = apply(capsys, path)
    assert (code, err) == (0, "")
    assert out[-1] == "applied 5 changes"
    mappings = stores.app.tenant(tenant_id_for("acme")).mappings
    assert {m: mappings[m].stripe_event_name for m in mappings} == {
        "calls": "calls_v1",
        "calls_v2": "calls",
    }
