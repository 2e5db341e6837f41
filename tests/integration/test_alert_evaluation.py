"""Alerts evaluated by the projection runner, on both backends, through the real writer.

Each scenario ingests usage through the application's writer, lets the live
projection runner catch up (which evaluates the rules against the committed
counters), and reads the incidents back from the event store and the view.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from domain.alert_incidents import AlertIncident, IncidentStatus, Reading, Target, incident_id_for
from domain.alerting import AlertService
from domain.alerts import AlertRule
from domain.meters import Aggregation, MetricDefinition
from domain.spend import LineCost
from tests.conftest import FakeClock
from tests.helpers import submission


@dataclass
class Scene:
    stores: Stores
    clock: FakeClock
    tenant: UUID
    service: AlertService
    keys: int = 0

    def rule(self, **fields: Any) -> AlertRule:
        given: dict[str, Any] = {
            "metric": "api_calls",
            "customer_ref": None,
            "kind": "usage",
            "threshold": Decimal(100),
            "basis": None,
            "currency": None,
            "enabled": True,
            "cooldown_seconds": 3600,
        }
        given.update(fields)
        return self.service.create(self.tenant, self.service.spec(self.tenant, **given))

    def ingest(
        self,
        quantity: Any,
        customer: str = "cus_1",
        at: datetime | None = None,
        metric: str = "api_calls",
    ) -> None:
        self.keys += 1
        [result] = self.stores.app.usage.record_usage(
            [
                submission(
                    self.tenant,
                    Decimal(quantity),
                    at or self.clock.now,
                    key=f"k{self.keys}",
                    customer=customer,
                    metric=metric,
                )
            ]
        )
        assert result.outcome.value == "accepted", result

    def settle(self) -> None:
        self.stores.views.runner.catch_up()

    def incident(
        self, rule: AlertRule, customer: str = "cus_1", period: str = "2026-03"
    ) -> AlertIncident:
        found: AlertIncident = self.stores.app.repository.get(
            incident_id_for(rule.id, customer, period)
        )
        return found

    def triggers(
        self, rule: AlertRule, customer: str = "cus_1", period: str = "2026-03"
    ) -> list[Any]:
        """Every trigger and resolve recorded in the incident's log, in order."""
        incident_id = incident_id_for(rule.id, customer, period)
        return [
            (type(e).__name__, getattr(e, "reason", None))
            for e in self.stores.app.events.get(incident_id)
            if isinstance(e, (AlertIncident.Triggered, AlertIncident.Resolved))
        ]


@pytest.fixture
def scene(stores: Stores, clock: FakeClock) -> Scene:
    app = stores.app
    tenant = app.register_tenant("acme", "Acme").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM, allow_negative=True))
    app.declare_metric(tenant, MetricDefinition("seats", Aggregation.MAX))
    return Scene(stores, clock, tenant, AlertService(app))


def test_a_usage_alert_triggers_once_resolves_after_a_correction_and_respects_the_cooldown(
    scene: Scene,
) -> None:
    rule = scene.rule(threshold=Decimal(100), cooldown_seconds=600)
    scene.ingest(60)
    scene.settle()
    assert scene.triggers(rule) == []
    scene.ingest(45)  # 105: reached
    scene.settle()
    scene.ingest(1)  # still above: no second trigger
    scene.settle()
    scene.settle()
    assert scene.triggers(rule) == [("Triggered", None)]
    assert scene.incident(rule).observed == 105
    view = scene.stores.views.alerts.incidents(scene.tenant, rule.id)
    assert [(i.status, i.occurrences, i.observed) for i in view] == [
        (IncidentStatus.TRIGGERED, 1, Decimal(105))
    ]

    scene.ingest(-20)  # a correction: 86, below again
    scene.settle()
    assert scene.triggers(rule) == [("Triggered", None), ("Resolved", "below_threshold")]

    scene.ingest(30)  # 116, but inside the cooldown
    scene.settle()
    assert len(scene.triggers(rule)) == 2
    scene.clock.advance(seconds=599)
    scene.stores.views.alert_evaluator.sweep()
    assert len(scene.triggers(rule)) == 2
    scene.clock.advance(seconds=1)  # the cooldown has passed; the counter stood still
    assert scene.stores.views.alert_evaluator.sweep() == 1
    assert scene.triggers(rule)[-1] == ("Triggered", None)
    assert scene.incident(rule).occurrences == 2


def test_a_threshold_of_zero_triggers_on_the_first_event_and_other_customers_are_apart(
    scene: Scene,
) -> None:
    everyone = scene.rule(threshold=Decimal(0))
    only_two = scene.rule(threshold=Decimal(0), customer_ref="cus_2")
    scene.ingest(0, customer="cus_1")
    scene.settle()
    assert scene.triggers(everyone, "cus_1") == [("Triggered", None)]
    assert scene.triggers(only_two, "cus_1") == []
    assert scene.triggers(only_two, "cus_2") == []
    scene.ingest(3, customer="cus_2")
    scene.settle()
    assert scene.triggers(only_two, "cus_2") == [("Triggered", None)]
    assert scene.triggers(everyone, "cus_2") == [("Triggered", None)]


def test_a_rule_created_after_the_usage_sees_it_and_a_disabled_rule_never_triggers(
    scene: Scene,
) -> None:
    scene.ingest(500)
    scene.settle()
    disabled = scene.rule(threshold=Decimal(10), enabled=False)
    late_rule = scene.rule(threshold=Decimal(400))
    scene.settle()  # the runner sees the new rules and evaluates them on what is counted
    assert scene.triggers(late_rule) == [("Triggered", None)]
    assert scene.triggers(disabled) == []

    # Disabling (a whole replacement) resolves its open incident at the next sweep.
    spec = scene.service.spec(
        scene.tenant,
        metric="api_calls",
        customer_ref=None,
        kind="usage",
        threshold=Decimal(400),
        basis=None,
        currency=None,
        enabled=False,
        cooldown_seconds=3600,
    )
    scene.service.replace(scene.tenant, late_rule.id, spec)
    scene.settle()  # the runner sees the replacement: no sweep needed
    assert scene.triggers(late_rule)[-1] == ("Resolved", "alert_disabled")
    assert scene.stores.views.alert_evaluator.sweep() == 0


def test_deleting_or_pointing_an_alert_elsewhere_resolves_its_open_incidents(
    scene: Scene,
) -> None:
    moved = scene.rule(threshold=Decimal(10))
    deleted = scene.rule(threshold=Decimal(10))
    scene.ingest(20, customer="cus_1")
    scene.settle()
    assert scene.triggers(moved) == scene.triggers(deleted) == [("Triggered", None)]
    spec = scene.service.spec(
        scene.tenant,
        metric="api_calls",
        customer_ref="cus_2",
        kind="usage",
        threshold=Decimal(10),
        basis=None,
        currency=None,
        enabled=True,
        cooldown_seconds=3600,
    )
    scene.service.replace(scene.tenant, moved.id, spec)
    scene.service.delete(scene.tenant, deleted.id)
    scene.settle()
    assert scene.triggers(moved)[-1] == ("Resolved", "alert_changed")
    assert scene.triggers(deleted)[-1] == ("Resolved", "alert_deleted")
    assert scene.stores.views.alert_evaluator.sweep() == 0


def test_a_new_period_resolves_the_incident_and_the_alert_recurs_there(scene: Scene) -> None:
    rule = scene.rule(threshold=Decimal(10))
    scene.ingest(12)
    scene.settle()
    assert scene.triggers(rule) == [("Triggered", None)]
    scene.clock.now = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    scene.stores.views.alert_evaluator.sweep()
    assert scene.triggers(rule) == [("Triggered", None), ("Resolved", "period_ended")]
    scene.ingest(11)
    scene.settle()
    assert scene.triggers(rule, period="2026-04") == [("Triggered", None)]
    # The sweep again changes nothing: each breach is one trigger.
    scene.stores.views.alert_evaluator.sweep()
    assert len(scene.triggers(rule)) == 2
    assert len(scene.triggers(rule, period="2026-04")) == 1


def test_a_spike_compares_with_the_previous_period_at_the_same_elapsed_point(
    scene: Scene,
) -> None:
    rule = scene.rule(kind="spike", threshold=Decimal(2))
    # February: 40 by the 15th at 12:00 (30 of it a minute before), and 1,000 more later.
    now = scene.clock.now
    for quantity, at in [
        (10, datetime(2026, 2, 3, tzinfo=UTC)),
        (30, datetime(2026, 2, 15, 11, 59, tzinfo=UTC)),
        (1_000, datetime(2026, 2, 15, 12, 0, tzinfo=UTC)),
    ]:
        scene.clock.now = at
        scene.ingest(quantity)
    scene.clock.now = now
    scene.ingest(79, at=datetime(2026, 3, 2, tzinfo=UTC))  # March so far (now: the 15th, 12:00)
    scene.settle()
    assert scene.triggers(rule) == []  # 79 < 2 × 40
    scene.ingest(1)  # 80 = 2 × 40
    scene.settle()
    assert scene.triggers(rule) == [("Triggered", None)]
    incident_events = list(scene.stores.app.events.get(scene.incident(rule).id))
    triggered = [e for e in incident_events if isinstance(e, AlertIncident.Triggered)]
    assert (triggered[0].observed, triggered[0].baseline) == (80, 40)


def test_a_spike_without_usage_in_the_previous_period_never_triggers(scene: Scene) -> None:
    rule = scene.rule(kind="spike", threshold=Decimal(1))
    scene.ingest(1_000)
    scene.settle()
    assert scene.triggers(rule) == []


class FixedPrice:
    """A ``SpendSource`` that bills every unit at one price (cents of USD)."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def line_cost(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        quantity: Decimal,
        period_start: datetime,
        period_end: datetime,
        now: datetime,
    ) -> LineCost | None:
        elapsed = (now - period_start) / (period_end - period_start)
        forecast = quantity / Decimal(elapsed) if elapsed > 0 else quantity
        return LineCost(
            "usd",
            "price_fixed",
            int(quantity) * self.cents,
            forecast,
            int(forecast * self.cents),
            "run_rate",
        )


def test_spend_alerts_compare_the_amount_so_far_or_the_forecast(scene: Scene) -> None:
    scene.stores.views.alert_evaluator.spend = FixedPrice(cents=5)
    so_far = scene.rule(
        kind="spend", basis="amount_so_far", currency="usd", threshold=Decimal(1_000)
    )
    forecast = scene.rule(kind="spend", basis="forecast", currency="usd", threshold=Decimal(1_000))
    in_euros = scene.rule(kind="spend", basis="amount_so_far", currency="eur", threshold=Decimal(0))
    scene.ingest(120)  # 600 cents so far; about twice that by the end of March
    scene.settle()
    assert scene.triggers(so_far) == []
    assert scene.triggers(forecast) == [("Triggered", None)]
    assert scene.triggers(in_euros) == []  # the line is billed in USD
    scene.ingest(80)  # 1,000 cents
    scene.settle()
    assert scene.triggers(so_far) == [("Triggered", None)]
    assert scene.incident(so_far).observed == 1_000


def test_a_tenant_without_rules_costs_the_evaluator_nothing(scene: Scene) -> None:
    evaluator = scene.stores.views.alert_evaluator
    scene.ingest(5)
    scene.settle()
    assert evaluator.rules() == {}
    assert evaluator._pending == set()  # nothing kept, nothing read


def test_two_evaluators_racing_on_one_breach_trigger_it_once(
    scene: Scene, settings: Settings, clock: FakeClock
) -> None:
    rule = scene.rule(threshold=Decimal(1))
    target = Target(
        rule.id, scene.tenant, "cus_1", "api_calls", "2026-03",
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), "usage",
    )  # fmt: skip
    other: Stores = open_stores(settings, clock)
    try:

        class Stale(AlertService):
            """Reads no incident the first time, as if it had read just before the other saved."""

            stale = True

            def _incident(self, incident_id: UUID) -> AlertIncident | None:
                if self.stale:
                    self.stale = False
                    return None
                return super()._incident(incident_id)

        first = scene.service.evaluate(target, Decimal(1), 0, Reading(Decimal(5), True), clock.now)
        second = Stale(other.app).evaluate(
            target, Decimal(1), 0, Reading(Decimal(5), True), clock.now
        )
    finally:
        other.close()
    assert len(first.events) == 1 and second.events == ()
    assert scene.triggers(rule) == [("Triggered", None)]


@pytest.fixture
def stores(settings: Settings, clock: FakeClock) -> Iterator[Stores]:
    opened = open_stores(settings, clock)
    try:
        yield opened
    finally:
        opened.close()


class Unreachable:
    """A ``SpendSource`` whose prices cannot be read right now."""

    def line_cost(self, *args: Any) -> LineCost | None:
        raise ConnectionError("prices unavailable")


def test_unreadable_prices_leave_spend_alerts_undecided_and_the_others_evaluated(
    scene: Scene,
) -> None:
    scene.stores.views.alert_evaluator.spend = Unreachable()
    spend = scene.rule(kind="spend", basis="amount_so_far", currency="usd", threshold=Decimal(0))
    usage = scene.rule(threshold=Decimal(1))
    scene.ingest(5)
    scene.settle()
    assert scene.triggers(spend) == []
    assert scene.triggers(usage) == [("Triggered", None)]
    scene.stores.views.alert_evaluator.spend = None  # no pricing at all: the same
    assert scene.stores.views.alert_evaluator.sweep() == 0


def test_a_backlog_is_judged_once_caught_up_not_half_way(scene: Scene) -> None:
    """Batches of one event: half-way, the counter was 20 (over the threshold), but what
    stands once the runner has caught up is 5: nothing triggers, nothing resolves."""
    rule = scene.rule(threshold=Decimal(10))
    scene.settle()
    scene.stores.views.runner.batch_size = 1
    scene.ingest(20)
    scene.ingest(-15)
    scene.settle()
    assert scene.triggers(rule) == []
    scene.ingest(7)  # 12, in a last batch that is full (one event) and reaches the head
    scene.settle()
    assert scene.triggers(rule) == [("Triggered", None)]
