"""``stripemeter config apply``: a TOML file made true for a tenant, on SQLite and PostgreSQL.

The command runs as an operator runs it (``cli.main``, its own stores on the
test's database) against the Stripe emulator. "Nothing changed" is checked
on the event log itself: its head (the last notification id) does not move.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from adapters.persistence import Stores
from adapters.stripe_gateway import SdkStripeGateway
from api import cli
from api.config_file import read_config
from api.config_plan import ApplyError, alert_id_for, apply_plan, plan
from domain.alerting import AlertService
from domain.errors import NotFoundError
from domain.meters import Aggregation, MetricDefinition
from domain.stripe_mapping import StripeMappingService
from domain.tenancy import tenant_id_for
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.e2e.test_real_server import free_port

FILE = """\
[tenant]
slug = "acme"
name = "Acme Inc"
late_policy = "carry_forward"

[metrics.api_calls]
aggregation = "sum"
unit = "request"
lateness_window_seconds = 7200

[metrics.seats]
aggregation = "max"
unit = "seat"

[mappings.api_calls]
create_meter = true
push = "delta"

[mappings.seats]
stripe_event_name = "seats_max"
create_meter = true

[alerts.heavy]
metric = "api_calls"
kind = "usage"
threshold = 1000
"""


@pytest.fixture
def stripe_env(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator.url)
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
    return emulator


def write(tmp_path: Path, text: str, name: str = "stripemeter.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def apply(
    capsys: pytest.CaptureFixture[str], path: Path, *flags: str
) -> tuple[int, list[str], str]:
    code = cli.main(["config", "apply", str(path), *flags])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def head(stores: Stores) -> int:
    """The last notification id (opening the stores records one marker event)."""
    return stores.app.recorder.max_notification_id() or 0


@pytest.mark.usefixtures("cli_env")
def test_dry_run_then_apply_then_apply_again_changes_nothing(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, FILE)
    start = head(stores)

    # A dry run prints the whole diff and writes nothing (not even the tenant).
    code, out, err = apply(capsys, path, "--dry-run")
    assert (code, err) == (0, "")
    assert out == [
        f"{path} for tenant acme:",
        "  create     tenant: acme (Acme Inc)",
        "  unchanged  tenant.late_policy: carry_forward",
        "  create     metrics.api_calls: sum, unit request, lateness window 7200 s",
        "  create     metrics.seats: max, unit seat, lateness window 172800 s",
        "  create     mappings.api_calls: Stripe meter 'api_calls' (created in Stripe), delta",
        "  create     mappings.seats: Stripe meter 'seats_max' (created in Stripe), value",
        "  create     alerts.heavy: usage >= 1000 on api_calls for every customer",
        "6 to create, 0 to update, 1 unchanged",
        "dry run: nothing changed",
    ]
    assert head(stores) == start
    assert stripe_env.client().v1.billing.meters.list().data == []

    # Applied: the tenant says what the file says, through the same services as the API.
    code, out, err = apply(capsys, path)
    assert (code, err, out[-1]) == (0, "", "applied 6 changes")
    acme = tenant_id_for("acme")
    tenant = stores.app.tenant(acme)
    assert tenant.metrics["api_calls"] == MetricDefinition(
        "api_calls", Aggregation.SUM, "request", 7200
    )
    assert tenant.metrics["seats"].aggregation is Aggregation.MAX
    meters = {
        m.event_name: m.default_aggregation.formula
        for m in stripe_env.client().v1.billing.meters.list().data
    }
    assert meters == {"api_calls": "sum", "seats_max": "last"}
    assert {m: tenant.mappings[m].stripe_event_name for m in tenant.mappings} == {
        "api_calls": "api_calls",
        "seats": "seats_max",
    }
    rule = AlertService(stores.app).rule(acme, alert_id_for(acme, "heavy"))
    assert (rule.metric, rule.kind, rule.threshold) == ("api_calls", "usage", 1000)

    # Again: every item unchanged, and the log does not move.
    before = head(stores)
    code, out, err = apply(capsys, path)
    assert (code, err) == (0, "")
    assert [line.split()[0] for line in out[1:-2]] == ["unchanged"] * 6
    assert out[-2:] == ["0 to create, 0 to update, 6 unchanged", "nothing to change"]
    assert head(stores) == before

    # An edit: the diff names what changes, the dry run changes nothing, apply does.
    edited = FILE.replace('late_policy = "carry_forward"', 'late_policy = "hold"').replace(
        "threshold = 1000", "threshold = 2500\ncooldown_seconds = 60"
    )
    path = write(tmp_path, edited)
    code, out, _ = apply(capsys, path, "--dry-run")
    assert "  update     tenant.late_policy: carry_forward -> hold" in out
    assert "  update     alerts.heavy: threshold 1000 -> 2500, cooldown_seconds 3600 -> 60" in out
    assert (code, out[-2], head(stores)) == (0, "0 to create, 2 to update, 4 unchanged", before)
    code, out, _ = apply(capsys, path)
    assert (code, out[-1]) == (0, "applied 2 changes")
    assert stores.app.tenant(acme).late_policy == "hold"
    rule = AlertService(stores.app).rule(acme, alert_id_for(acme, "heavy"))
    assert (rule.threshold, rule.cooldown_seconds) == (2500, 60)

    # For scripts: --json says the same, as JSON.
    code, out, _ = apply(capsys, path, "--json")
    assert code == 0
    answer = json.loads("\n".join(out))
    assert (answer["tenant"], answer["dryRun"], answer["applied"]) == ("acme", False, [])
    assert answer["items"][0] == {
        "place": "tenant.late_policy",
        "action": "unchanged",
        "detail": "hold",
    }


# Each refusal comes after valid items (a new metric, a mapping, an alert): none is applied.
BROKEN = [
    pytest.param(
        FILE + "[metrics.oops\n",
        "not valid TOML: Expected ']' at the end of a table declaration (at line 27, column 14)",
        id="bad-toml",
    ),
    pytest.param(
        FILE + "[metrics.storage]\naggregation = 'sum'\nunits = 'gb'\n",
        "metrics.storage.units: unknown key (expected one of aggregation, unit,"
        " lateness_window_seconds, stripe_event_name, allow_negative)",
        id="unknown-key",
    ),
    pytest.param(
        FILE + "[metrics.storage]\naggregation = 'median'\n",
        "metrics.storage.aggregation: must be one of sum, count, max, last",
        id="bad-aggregation",
    ),
    pytest.param(
        FILE + "[metrics.storage]\naggregation = 'sum'\nlateness_window_seconds = '2h'\n",
        "metrics.storage.lateness_window_seconds: must be an integer",
        id="wrong-type",
    ),
    pytest.param(
        FILE + "[metrics.storage]\naggregation = 'sum'\nlateness_window_seconds = 99999999\n",
        "metrics.storage.lateness_window_seconds: must be between 0 and 3024000",
        id="out-of-range",
    ),
    pytest.param(
        FILE + "[alerts.burst]\nmetric = 'seats'\nkind = 'spike'\nthreshold = 2\n",
        "alerts.burst.metric: a spike alert needs a sum or count metric, not max",
        id="alert-the-domain-refuses",
    ),
    pytest.param(
        FILE + "[alerts.storage_full]\nmetric = 'storage'\nkind = 'usage'\nthreshold = 1\n",
        "alerts.storage_full.metric: 'storage' is not declared (declare it in [metrics] or"
        " with POST /v1/meters)",
        id="alert-on-an-undeclared-metric",
    ),
    pytest.param(
        FILE + "[mappings.storage]\ncreate_meter = true\n",
        "mappings.storage: metric 'storage' is not declared (declare it in [metrics])",
        id="mapping-of-an-undeclared-metric",
    ),
    pytest.param(
        FILE.replace('late_policy = "carry_forward"', 'late_policy = "drop"'),
        "tenant.late_policy: must be carry_forward or hold",
        id="bad-late-policy",
    ),
    pytest.param(
        FILE + "[mappings.seats]\npush = 'delta'\n",
        None,  # TOML itself refuses a table defined twice
        id="table-twice",
    ),
    pytest.param(
        FILE.replace('name = "Acme Inc"', 'name = "Acme Inc"\ncolour = "red"'),
        "tenant.colour: unknown key (expected one of slug, name, late_policy, ingest_horizon_days)",
        id="unknown-tenant-key",
    ),
    pytest.param(
        FILE.replace("[mappings.seats]", "[mappings.seats]\npush = 'delta'"),
        "mappings.seats.push: a 'max' metric is pushed as 'value' (the push follows the"
        " metric's aggregation: domain/mappings.py)",
        id="push-mode",
    ),
]


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_a_refused_file_names_the_place_and_applies_nothing(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str | None,
) -> None:
    path = write(tmp_path, text)
    start = head(stores)
    code, out, err = apply(capsys, path)
    assert (code, out) == (1, [])
    assert err.startswith(f"stripemeter: {path}: ")
    if message is not None:
        assert err == f"stripemeter: {path}: {message}\n"
    assert head(stores) == start
    assert stripe_env.client().v1.billing.meters.list().data == []


@pytest.mark.usefixtures("cli_env")
def test_the_domain_refusals_come_before_anything_is_applied(
    stores: Stores,
    stripe_env: RunningEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Changing a declared metric, or mapping to a Stripe meter that cannot hold it: the
    domain's own refusal, named at the item, and none of the file's other changes made."""
    acme = tenant_id_for("acme")
    stores.app.register_tenant("acme", "Acme Inc")
    stores.app.declare_metric(acme, MetricDefinition("api_calls", Aggregation.SUM, "request"))
    stripe_env.client().v1.billing.meters.create(
        {
            "display_name": "seats",
            "event_name": "seats_max",
            "default_aggregation": {"formula": "count"},
        }
    )
    before = head(stores)

    # api_calls was declared with another lateness window: the domain refuses the change.
    code, out, err = apply(capsys, write(tmp_path, FILE.replace("7200", "3600")))
    assert (code, out) == (1, [])
    assert err == (
        f"stripemeter: {tmp_path / 'stripemeter.toml'}: metrics.api_calls: metric 'api_calls'"
        " is already declared with other settings (lateness_window_seconds 172800 -> 3600)\n"
    )
    # With api_calls as declared, the next refusal: the seats meter is a Stripe count meter.
    file = FILE.replace("lateness_window_seconds = 7200\n", "")
    code, out, err = apply(capsys, write(tmp_path, file))
    assert (code, out) == (1, [])
    assert err.endswith(
        "mappings.seats.stripe_event_name: is a Stripe 'count' meter: it counts events, not"
        " values, so it cannot take the deltas StripeMeter pushes; use a 'last' meter\n"
    )
    assert head(stores) == before  # neither seats nor the alert nor the late policy
    assert stores.app.tenant(acme).metrics.keys() == {"api_calls"}
    assert [m.event_name for m in stripe_env.client().v1.billing.meters.list().data] == [
        "seats_max"
    ]


def test_a_change_refused_midway_says_what_was_applied(
    stores: Stores, stripe_env: RunningEmulator, tmp_path: Path
) -> None:
    """The plan is checked whole, but another admin may change the tenant before the save:
    the changes before the refused one stay made, and the error says which."""
    acme = tenant_id_for("acme")
    stores.app.register_tenant("acme", "Acme Inc")
    config = read_config(write(tmp_path, FILE))
    gateway = SdkStripeGateway(TEST_API_KEY, stripe_env.url, max_network_retries=0)
    service = StripeMappingService(stores.app, gateway)
    the_plan = plan(stores.app, config, None, lambda: service)
    # Meanwhile, through the API: seats declared as a 'last' metric.
    stores.app.declare_metric(acme, MetricDefinition("seats", Aggregation.LAST))

    with pytest.raises(ApplyError) as refused:
        apply_plan(the_plan)
    assert str(refused.value) == (
        f"{config.path}: metrics.seats: metric 'seats' is already declared with other"
        " settings. Applied before it: metrics.api_calls. Not applied: mappings.api_calls,"
        " mappings.seats, alerts.heavy. Fix the cause and apply the file again: what is"
        " applied stays unchanged"
    )
    assert stores.app.tenant(acme).metrics.keys() == {"api_calls", "seats"}
    with pytest.raises(NotFoundError):
        AlertService(stores.app).rule(acme, alert_id_for(acme, "heavy"))


@pytest.mark.usefixtures("cli_env")
def test_stripe_unreachable_is_named_at_the_mapping_and_nothing_is_applied(
    stores: Stores,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
    path = write(tmp_path, FILE)
    start = head(stores)

    code, out, err = apply(capsys, path)
    assert (code, out) == (1, [])
    assert err.startswith(f"stripemeter: {path}: mappings.api_calls: ")
    assert head(stores) == start  # not even the tenant or the metrics before the mapping
