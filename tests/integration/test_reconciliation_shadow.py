"""Shadow mode reconciled: the shadow meter (a Stripe test account) against the same counter.

The test account is a second emulator server here, not a second key on the
first one: a shadow read or push that went through the live gateway would
find nothing there (and the live account would change), so each test can
tell the two accounts apart. Each test makes one account disagree in a known
way and checks that the run names the right target, status and cause, and
that a repair touches the target it repairs and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from adapters.metrics import Metrics
from adapters.reconciler import Reconciler, Scope
from adapters.reconciliation_reports import ReportLine
from adapters.stripe_gateway import SdkStripeGateway
from api import cli
from domain.ledger import StripeLedger, ledger_id_for
from domain.mappings import MeterMapping
from domain.pacing import TokenBucket
from domain.pushing import PushOutcome, PushService, Target
from domain.reconciliation import Cause
from stripe_emulator import EmulatorConfig
from stripe_emulator.testing import RunningEmulator, running_emulator
from tests.conftest import EMULATOR_TEST_CONFIG, FakeClock
from tests.integration.test_reconciliation import NO_LAG, outside
from tests.integration.world import World

SHADOW_KEY = "sk_test_shadow_account"


@pytest.fixture(scope="session")
def test_account_server() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(**EMULATOR_TEST_CONFIG)) as server:  # type: ignore[arg-type]
        yield server


@dataclass
class Shadow:
    emulator: RunningEmulator
    gateway: SdkStripeGateway
    meter_id: str
    customer_id: str

    def send_outside(self, value: str) -> None:
        """A meter event sent to the test account by someone else (a developer trying it)."""
        self.emulator.client(SHADOW_KEY).v1.billing.meter_events.create(
            {
                "event_name": "sm_api_calls_shadow",
                "payload": {"stripe_customer_id": self.customer_id, "value": value},
            }
        )


@pytest.fixture
def shadow(world: World, test_account_server: RunningEmulator, clock: FakeClock) -> Shadow:
    """``world`` with api_calls and cus_a mapped in shadow mode too, on the test account."""
    server = test_account_server
    server.reset()
    server.configure(**EMULATOR_TEST_CONFIG)
    server.set_now(int(clock.now.timestamp()), frozen=True)
    gateway = SdkStripeGateway(SHADOW_KEY, server.url, max_network_retries=0, timeout_seconds=5)
    app = world.stores.app
    live = app.tenant(world.tenant).mappings["api_calls"]
    meter = gateway.create_meter("api_calls", "sm_api_calls_shadow", "sum")
    app.map_meter(
        world.tenant,
        MeterMapping(
            live.metric,
            live.stripe_meter_id,
            live.stripe_event_name,
            live.stripe_formula,
            shadow_meter_id=meter.id,
            shadow_event_name=meter.event_name,
        ),
    )
    customer = server.client(SHADOW_KEY).v1.customers.create({"name": "cus_a (test)"})
    live_customer = app.customer(world.tenant, "cus_a")
    assert live_customer is not None
    app.map_customer(
        world.tenant, "cus_a", live_customer.stripe_customer_id, None, str(customer.id)
    )
    world.pusher = PushService(
        app, {Target.LIVE: world.gateway, Target.SHADOW: gateway}, world.clock
    )
    return Shadow(server, gateway, meter.id, str(customer.id))


def reconciler(world: World, shadow: Shadow | None, metrics: Metrics | None = None) -> Reconciler:
    """Without ``shadow``: a process where STRIPE_TEST_SECRET_KEY is not set."""
    return Reconciler(
        world.stores,
        world.gateway,
        world.pusher,
        metrics or Metrics(),
        NO_LAG,
        world.clock,
        shadow_gateway=shadow.gateway if shadow else None,
    )


def reconcile(
    world: World, shadow: Shadow | None, *, repair: bool = False
) -> dict[str, ReportLine]:
    """One run's lines by target (one customer, one metric, one period here)."""
    world.stores.views.runner.catch_up()
    reports = reconciler(world, shadow).run(
        Scope(world.tenant), repair=repair, actor="ops@acme", trigger="test"
    )
    world.stores.views.runner.catch_up()
    lines = [line for report in reports for line in report.lines]
    by_target = {line.target: line for line in lines}
    assert len(by_target) == len(lines), "one line per target"
    return by_target


def numbers(line: ReportLine) -> tuple[str, str, int, int | None]:
    return line.status, line.cause, line.local, line.stripe


def push_both(world: World) -> None:
    period = world.period_id()
    assert world.pusher.push(period, Target.LIVE) is PushOutcome.CONFIRMED
    assert world.pusher.push(period, Target.SHADOW) is PushOutcome.CONFIRMED


def shadow_ledger(world: World) -> StripeLedger:
    return world.stores.app.repository.get(ledger_id_for(world.period_id(), "shadow"))  # type: ignore[no-any-return]


def test_shadow_in_parity_is_a_line_of_its_own_beside_the_live_one(
    world: World, shadow: Shadow
) -> None:
    world.ingest(7, "a")
    push_both(world)
    lines = reconcile(world, shadow)
    assert numbers(lines["live"]) == ("ok", "", 7, 7)
    assert numbers(lines["shadow"]) == ("ok", "", 7, 7)
    # The shadow line names the test account's objects, not the live ones.
    assert (lines["shadow"].meter_id, lines["shadow"].stripe_customer_id) == (
        shadow.meter_id,
        shadow.customer_id,
    )
    assert lines["live"].meter_id != shadow.meter_id
    # The stored report keeps both lines and their targets, live first.
    report = world.stores.views.reports.latest(world.tenant, world.clock.now.strftime("%Y-%m"))
    assert report is not None
    assert [(line.target, line.status, line.stripe) for line in report.lines] == [
        ("live", "ok", 7),
        ("shadow", "ok", 7),
    ]
    assert report.stripe_calls == 2


def test_shadow_drift_is_found_with_its_cause_while_live_is_in_parity(
    world: World, shadow: Shadow
) -> None:
    world.ingest(10, "a")
    push_both(world)
    shadow.send_outside("4")
    metrics = Metrics()
    world.stores.views.runner.catch_up()
    [report] = reconciler(world, shadow, metrics).run(Scope(), actor="system", trigger="test")
    lines = {line.target: line for line in report.lines}
    assert numbers(lines["live"]) == ("ok", "", 10, 10)
    assert numbers(lines["shadow"]) == (
        "drift",
        "events sent to Stripe outside StripeMeter",
        10,
        14,
    )
    # The gauges say which account drifts: the live alerts stay quiet.
    sample = metrics.registry.get_sample_value
    assert sample("stripemeter_reconciliation_max_drift_units", {"target": "shadow"}) == 4
    assert sample("stripemeter_reconciliation_max_drift_units", {"target": "live"}) == 0
    assert sample("stripemeter_reconciliation_lines", {"target": "live", "status": "ok"}) == 1


def test_the_shadow_ledger_decides_pending_causes_not_the_live_one(
    world: World, shadow: Shadow
) -> None:
    world.ingest(10, "a")
    push_both(world)
    world.ingest(5, "b")
    world.push()  # live only: the shadow push loop is behind
    lines = reconcile(world, shadow)
    assert numbers(lines["live"]) == ("ok", "", 15, 15)
    assert numbers(lines["shadow"]) == ("pending", "events after the last push", 15, 10)
    # A shadow push Stripe lost (cancelled on the test account) is drift there alone.
    [event] = shadow.emulator.meter_events()
    shadow.emulator.client(SHADOW_KEY).v1.billing.meter_event_adjustments.create(
        {
            "event_name": "sm_api_calls_shadow",
            "type": "cancel",
            "cancel": {"identifier": event["identifier"]},
        }
    )
    lines = reconcile(world, shadow)
    assert numbers(lines["live"]) == ("ok", "", 15, 15)
    assert numbers(lines["shadow"]) == (
        "drift",
        "Stripe lacks confirmed pushes (lost, or cancelled in Stripe)",
        15,
        0,
    )


def test_repairing_a_shadow_line_pushes_to_the_test_account_only(
    world: World, shadow: Shadow, emulator: RunningEmulator
) -> None:
    world.ingest(10, "a")
    push_both(world)
    shadow.send_outside("4")
    live_events = emulator.meter_events()
    live_pushes = world.ledger().pushes
    lines = reconcile(world, shadow, repair=True)
    assert (lines["live"].status, lines["shadow"].status) == ("ok", "repaired")
    lines = reconcile(world, shadow)
    assert numbers(lines["shadow"]) == ("ok", "", 10, 10)
    # The repair is on the shadow ledger's record; the live account and ledger are untouched.
    ledger = shadow_ledger(world)
    assert (ledger.external_total, ledger.pushes) == (4, 2)
    [repair] = [
        r
        for r in world.stores.views.ledger.repairs(world.period_id())
        if r.target == Target.SHADOW.value
    ]
    assert (repair.stripe_total, repair.expected_total, repair.actor) == (14, 10, "ops@acme")
    assert emulator.meter_events() == live_events
    assert world.ledger().pushes == live_pushes
    assert [e["value"] for e in shadow.emulator.meter_events()] == [10, 4, -4]


def test_live_drift_repaired_leaves_the_test_account_alone(
    world: World, shadow: Shadow, emulator: RunningEmulator
) -> None:
    world.ingest(10, "a")
    push_both(world)
    outside(world, emulator, "3")
    shadow_events = shadow.emulator.meter_events()
    lines = reconcile(world, shadow, repair=True)
    assert (lines["live"].status, lines["shadow"].status) == ("repaired", "ok")
    assert shadow.emulator.meter_events() == shadow_events
    assert shadow_ledger(world).external_total == 0


def test_without_the_test_key_shadow_lines_are_skipped_and_say_why(
    world: World, shadow: Shadow
) -> None:
    world.ingest(6, "a")
    push_both(world)
    shadow.send_outside("2")
    world.pusher = PushService(world.stores.app, {Target.LIVE: world.gateway}, world.clock)
    metrics = Metrics()
    world.stores.views.runner.catch_up()
    [report] = reconciler(world, None, metrics).run(
        Scope(), repair=True, actor="ops@acme", trigger="test"
    )
    lines = {line.target: line for line in report.lines}
    assert numbers(lines["live"]) == ("ok", "", 6, 6)
    assert numbers(lines["shadow"]) == ("skipped", Cause.NO_TEST_ACCOUNT.value, 6, None)
    assert "STRIPE_TEST_SECRET_KEY" in lines["shadow"].cause
    assert lines["shadow"].difference is None
    assert report.stripe_calls == 1  # the live read; the test account was not asked
    sample = metrics.registry.get_sample_value
    assert sample("stripemeter_reconciliation_lines", {"target": "shadow", "status": "skipped"})
    # The repair run did nothing to the test account it could not read.
    assert shadow_ledger(world).external_total == 0
    assert [e["value"] for e in shadow.emulator.meter_events()] == [6, 2]


def test_a_customer_without_a_shadow_id_has_no_shadow_line(world: World, shadow: Shadow) -> None:
    world.map_customer("cus_b")  # live only
    world.ingest(3, "a", customer="cus_b")
    world.push("cus_b")
    world.stores.views.runner.catch_up()
    [report] = reconciler(world, shadow).run(Scope(world.tenant), actor="ops", trigger="test")
    assert [(line.customer_ref, line.target) for line in report.lines] == [("cus_b", "live")]


def test_each_account_is_read_through_its_own_pace(world: World, shadow: Shadow) -> None:
    for ref in ("cus_b", "cus_c"):
        live_id = world.map_customer(ref)
        test_id = shadow.emulator.client(SHADOW_KEY).v1.customers.create({"name": ref}).id
        world.stores.app.map_customer(world.tenant, ref, live_id, None, str(test_id))
    for ref in ("cus_a", "cus_b", "cus_c"):
        world.ingest(2, f"{ref}-1", customer=ref)
        world.pusher.push(world.period_id(ref), Target.LIVE)
        world.pusher.push(world.period_id(ref), Target.SHADOW)
    world.stores.views.runner.catch_up()
    # Buckets on a clock that stands still, one token each: every read after the
    # first waits (a recorded sleep), so the sleeps count each bucket's reads.
    waits: dict[str, list[float]] = {"live": [], "shadow": []}
    live_pace = TokenBucket(1, clock=lambda: 0.0, sleep=waits["live"].append)
    shadow_pace = TokenBucket(1, clock=lambda: 0.0, sleep=waits["shadow"].append)
    paced = Reconciler(
        world.stores,
        world.gateway,
        world.pusher,
        Metrics(),
        NO_LAG,
        world.clock,
        pace=live_pace,
        shadow_gateway=shadow.gateway,
        shadow_pace=shadow_pace,
    )
    [report] = paced.run(Scope(world.tenant), actor="ops", trigger="test")
    assert sorted((line.target, line.status) for line in report.lines) == [
        ("live", "ok"),
        ("live", "ok"),
        ("live", "ok"),
        ("shadow", "ok"),
        ("shadow", "ok"),
        ("shadow", "ok"),
    ]
    assert (len(waits["live"]), len(waits["shadow"])) == (2, 2)  # 3 reads each


@pytest.mark.usefixtures("cli_env")
def test_the_command_reports_shadow_lines_and_fails_on_their_drift(
    world: World,
    shadow: Shadow,
    emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.ingest(5, "a")
    push_both(world)
    shadow.send_outside("1")
    world.stores.views.runner.catch_up()
    for name, value in (
        ("STRIPE_SECRET_KEY", "sk_test_emulator"),
        ("STRIPE_API_BASE", emulator.url),
        ("STRIPE_TEST_SECRET_KEY", SHADOW_KEY),
        ("STRIPE_TEST_API_BASE", shadow.emulator.url),
    ):
        monkeypatch.setenv(name, value)
    month = world.clock.now.strftime("%Y-%m")
    code = cli.main(["reconcile", "--tenant", "acme", "--period", month])
    out, err = capsys.readouterr()
    lines = {line["target"]: line for line in json.loads(out)["data"][0]["lines"]}
    assert (lines["live"]["status"], lines["shadow"]["status"]) == ("ok", "drift")
    assert (code, err) == (
        1,
        "stripemeter: 1 line(s) in drift (1 on the shadow test account);"
        " see docs/RECONCILIATION.md\n",
    )
    # Without the test key: skipped, said on stderr, and no drift left to fail on.
    monkeypatch.delenv("STRIPE_TEST_SECRET_KEY")
    code = cli.main(["reconcile", "--tenant", "acme", "--period", month])
    out, err = capsys.readouterr()
    [live, skipped] = json.loads(out)["data"][0]["lines"]
    assert (live["status"], skipped["target"], skipped["status"]) == ("ok", "shadow", "skipped")
    assert (code, err) == (
        0,
        "stripemeter: 1 shadow line(s) skipped: STRIPE_TEST_SECRET_KEY is not set\n",
    )
