"""Usage caps: the rules (domain/caps.py) and the recorder enforcing them, in memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import msgspec
import pytest

from adapters.writer_wire import HEADER, REQUESTS, RESPONSES, WriteRequest, WriteResponse, frame
from domain.application import MeteringApp
from domain.caps import Cap, CapMode, MetricCaps, check_limit, decide, parse_mode
from domain.errors import InvalidInputError, NotFoundError
from domain.ingest import IngestResult, Lateness, Outcome
from domain.meters import Aggregation, MetricDefinition
from domain.periods import period_of
from domain.usage import UsagePeriod
from tests.conftest import FakeClock
from tests.helpers import submission

TENANT = uuid4()
HARD = CapMode.HARD
SOFT = CapMode.SOFT


@pytest.fixture
def app(clock: FakeClock) -> Iterator[MeteringApp]:
    application = MeteringApp(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    tenant = application.register_tenant("acme", "Acme")
    for name, aggregation in (
        ("api_calls", Aggregation.SUM),
        ("requests", Aggregation.COUNT),
        ("seats", Aggregation.MAX),
        ("storage", Aggregation.LAST),
    ):
        application.declare_metric(
            tenant.id, MetricDefinition(name, aggregation, allow_negative=name == "api_calls")
        )
    yield application
    application.close()


def cap(
    limit: int | str, mode: CapMode = HARD, metric: str = "api_calls", customer: str | None = None
) -> Cap:
    return Cap(metric, customer, Decimal(limit), mode)


# -- the rules --------------------------------------------------------------


def test_limit_and_mode_are_checked_by_field() -> None:
    with pytest.raises(InvalidInputError) as negative:
        check_limit(Decimal(-1))
    assert negative.value.field == "limit"
    with pytest.raises(InvalidInputError) as infinite:
        check_limit(Decimal("Infinity"))
    assert infinite.value.field == "limit"
    with pytest.raises(InvalidInputError) as places:
        check_limit(Decimal("0.0000000000001"))
    assert places.value.field == "limit"
    assert check_limit(Decimal(0)) == 0
    with pytest.raises(InvalidInputError) as mode:
        parse_mode("strict")
    assert mode.value.field == "mode"


def test_a_customers_own_cap_overrides_the_metric_wide_one() -> None:
    caps = MetricCaps().with_cap(cap(100)).with_cap(cap(5, customer="cus_vip"))
    assert caps.for_customer("cus_vip") == cap(5, customer="cus_vip")
    assert caps.for_customer("cus_other") == cap(100)
    assert caps.without(None).for_customer("cus_other") is None
    assert caps.without("cus_vip").for_customer("cus_vip") == cap(100)


@pytest.mark.parametrize(
    ("aggregation", "events", "quantity", "expected"),
    [
        (Aggregation.SUM, [3, 4], "5", "12"),
        (Aggregation.SUM, [3, 4], "-2", "5"),
        (Aggregation.COUNT, [3, 4], "-2", "3"),
        (Aggregation.MAX, [3, 9], "5", "9"),
        (Aggregation.MAX, [3, 9], "12", "12"),
        (Aggregation.LAST, [3, 9], "5", "5"),
    ],
)
def test_value_after_follows_the_aggregation(
    clock: FakeClock, aggregation: Aggregation, events: list[int], quantity: str, expected: str
) -> None:
    p = UsagePeriod.open(TENANT, "cus_1", "m", aggregation, period_of(clock.now))
    for q in events:
        p.count_usage(Decimal(q), clock.now)
    after = p.value_after(Decimal(quantity), clock.now)
    assert after == Decimal(expected)
    p.count_usage(Decimal(quantity), clock.now)
    assert p.value == after  # the prediction is what counting then gives


def test_a_last_event_older_than_the_latest_leaves_the_value(clock: FakeClock) -> None:
    p = UsagePeriod.open(TENANT, "cus_1", "m", Aggregation.LAST, period_of(clock.now))
    p.count_usage(Decimal(7), clock.now)
    assert p.value_after(Decimal(100), clock.now - timedelta(hours=1)) == Decimal(7)
    assert decide(cap(1, metric="m"), p, Decimal(100), clock.now - timedelta(hours=1)) is None


def test_hard_cap_refuses_passing_the_limit_and_names_it(clock: FakeClock) -> None:
    p = UsagePeriod.open(TENANT, "cus_1", "api_calls", Aggregation.SUM, period_of(clock.now))
    p.count_usage(Decimal(1000), clock.now)
    decision = decide(cap(1000), p, Decimal(1), clock.now)
    assert decision is not None
    assert decision.refused == (
        "would exceed the hard cap of 1000 api_calls for this period (1000 counted)"
    )
    assert decision.reached_value == Decimal(1000)
    # A correction that lowers usage is never refused, even past the cap.
    assert decide(cap(500), p, Decimal(-1), clock.now) is None
    assert decide(cap(500), p, Decimal(0), clock.now) is None
    assert decide(cap(1002), p, Decimal(1), clock.now) is None  # below the limit: nothing


def test_hard_cap_takes_an_event_that_lands_exactly_on_it(clock: FakeClock) -> None:
    p = UsagePeriod.open(TENANT, "cus_1", "api_calls", Aggregation.SUM, period_of(clock.now))
    p.count_usage(Decimal(990), clock.now)
    decision = decide(cap(1000), p, Decimal(10), clock.now)
    assert decision is not None and decision.refused is None
    assert decision.reached_value == Decimal(1000)


def test_soft_cap_marks_past_the_limit_and_is_reached_once_per_limit(clock: FakeClock) -> None:
    p = UsagePeriod.open(TENANT, "cus_1", "api_calls", Aggregation.SUM, period_of(clock.now))
    p.count_usage(Decimal(10), clock.now)
    assert decide(cap(10, SOFT), p, Decimal(0), clock.now) is None  # at the limit, not past
    crossing = decide(cap(10, SOFT), p, Decimal(1), clock.now)
    assert crossing is not None and crossing.past_soft and crossing.reached_value == Decimal(11)
    p.record_cap_reached("soft", Decimal(10), Decimal(11))
    p.count_usage(Decimal(1), clock.now)
    again = decide(cap(10, SOFT), p, Decimal(1), clock.now)
    assert again is not None and again.past_soft and again.reached_value is None
    # Raised since: reached anew when crossed again.
    raised = decide(cap(11, SOFT), p, Decimal(1), clock.now)
    assert raised is not None and raised.past_soft and raised.reached_value == Decimal(12)


# -- the recorder -------------------------------------------------------------


def test_hard_cap_refuses_only_the_event_that_passes_it(app: MeteringApp, clock: FakeClock) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_cap(tenant, cap(10))
    results = app.usage.record_usage(
        [
            submission(tenant, 6, clock.now, key="a"),
            submission(tenant, 5, clock.now, key="b"),
            submission(tenant, 4, clock.now, key="c"),
            submission(tenant, 50, clock.now, key="d", customer="cus_2"),
        ]
    )
    assert [r.outcome for r in results] == [
        Outcome.ACCEPTED,
        Outcome.ERROR,
        Outcome.ACCEPTED,
        Outcome.ERROR,
    ]
    refused = results[1]
    assert refused.field == "quantity"
    assert refused.reason == (
        "would exceed the hard cap of 10 api_calls for this period (6 counted)"
    )
    assert refused.cap is HARD and refused.cap_reached is HARD
    assert results[2].cap is None and results[2].cap_reached is None  # reached already
    held = app.usage_period(tenant, "cus_1", "api_calls", "2026-03")
    assert held.total == Decimal(10)
    log = [e for e in app.events.get(held.id) if isinstance(e, UsagePeriod.CapReached)]
    assert [(e.mode, e.limit, e.value) for e in log] == [("hard", Decimal(10), Decimal(6))]


def test_a_refused_key_is_not_claimed_and_passes_once_the_cap_is_raised(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_cap(tenant, cap(5))
    [refused] = app.usage.record_usage([submission(tenant, 6, clock.now, key="big")])
    assert refused.outcome is Outcome.ERROR
    # The same event twice in one batch is refused twice, not "duplicate".
    twice = app.usage.record_usage([submission(tenant, 6, clock.now, key="big")] * 2)
    assert [r.outcome for r in twice] == [Outcome.ERROR, Outcome.ERROR]
    app.set_cap(tenant, cap(6))
    [taken] = app.usage.record_usage([submission(tenant, 6, clock.now, key="big")])
    assert taken.outcome is Outcome.ACCEPTED
    # Raised and reached again: a second CapReached under the new limit.
    log = [
        (e.limit, e.value)
        for e in app.events.get(app.usage_period(tenant, "cus_1", "api_calls", "2026-03").id)
        if isinstance(e, UsagePeriod.CapReached)
    ]
    assert log == [(Decimal(5), Decimal(0)), (Decimal(6), Decimal(6))]


def test_a_new_period_lifts_a_hard_cap(app: MeteringApp, clock: FakeClock) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_cap(tenant, cap(3))
    app.usage.record_usage([submission(tenant, 3, clock.now, key="march")])
    [refused] = app.usage.record_usage([submission(tenant, 1, clock.now, key="more")])
    assert refused.outcome is Outcome.ERROR
    clock.advance(days=20)  # April
    [april] = app.usage.record_usage([submission(tenant, 3, clock.now, key="april")])
    assert april.outcome is Outcome.ACCEPTED


def test_soft_cap_marks_results_past_it_and_records_reached_once(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_cap(tenant, cap(10, SOFT))
    results = app.usage.record_usage(
        [
            submission(tenant, 10, clock.now, key=f"k{n}")
            if n == 0
            else submission(tenant, 1, clock.now, key=f"k{n}")
            for n in range(4)
        ]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 4
    assert [r.cap for r in results] == [None, SOFT, SOFT, SOFT]
    assert [r.cap_reached for r in results] == [None, SOFT, None, None]
    held = app.usage_period(tenant, "cus_1", "api_calls", "2026-03")
    assert held.total == Decimal(13)
    log = [e for e in app.events.get(held.id) if isinstance(e, UsagePeriod.CapReached)]
    assert [(e.mode, e.limit, e.value) for e in log] == [("soft", Decimal(10), Decimal(11))]


def test_customer_cap_overrides_metric_wide_in_the_writer(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_cap(tenant, cap(2))
    app.set_cap(tenant, cap(100, customer="cus_vip"))
    results = app.usage.record_usage(
        [
            submission(tenant, 50, clock.now, key="v", customer="cus_vip"),
            submission(tenant, 50, clock.now, key="o", customer="cus_other"),
        ]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ERROR]


def test_count_max_last_caps_follow_their_aggregation(app: MeteringApp, clock: FakeClock) -> None:
    tenant = app.tenant_by_slug("acme").id
    for metric in ("requests", "seats", "storage"):
        app.set_cap(tenant, cap(2, metric=metric))
    results = app.usage.record_usage(
        [
            submission(tenant, 100, clock.now, key="r1", metric="requests"),  # count 1
            submission(tenant, 100, clock.now, key="r2", metric="requests"),  # count 2
            submission(tenant, 1, clock.now, key="r3", metric="requests"),  # count 3: no
            submission(tenant, 2, clock.now, key="s1", metric="seats"),
            submission(tenant, 3, clock.now, key="s2", metric="seats"),  # max 3: no
            submission(tenant, 1, clock.now, key="s3", metric="seats"),  # max stays 2
            submission(tenant, 3, clock.now, key="l1", metric="storage"),  # last 3: no
            submission(tenant, 1, clock.now, key="l2", metric="storage"),
            # older than the latest: the value stays 1, so it is taken
            submission(tenant, 9, clock.now - timedelta(hours=1), key="l3", metric="storage"),
        ]
    )
    assert [r.outcome is Outcome.ACCEPTED for r in results] == [
        True,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
        True,
    ]


def test_a_negative_correction_past_a_hard_cap_is_taken(app: MeteringApp, clock: FakeClock) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.usage.record_usage([submission(tenant, 20, clock.now, key="before")])
    app.set_cap(tenant, cap(10))  # set below what is counted already
    results = app.usage.record_usage(
        [submission(tenant, -5, clock.now, key="fix"), submission(tenant, 1, clock.now, key="up")]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ERROR]


def test_usage_past_the_lateness_window_is_carried_not_refused(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    march = clock.now
    app.set_cap(tenant, cap(0))  # nothing may count on time
    clock.advance(days=20)  # April, past March's 48 h lateness window
    [late] = app.usage.record_usage([submission(tenant, 5, march, key="late")])
    assert late.outcome is Outcome.ACCEPTED and late.late is Lateness.CARRIED


def test_late_usage_inside_the_window_is_capped_in_its_own_period(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_cap(tenant, cap(5))
    march = clock.now
    app.usage.record_usage([submission(tenant, 5, march, key="march")])
    clock.now = march.replace(day=31, hour=23) + timedelta(hours=2)  # April 1, in the window
    [late] = app.usage.record_usage([submission(tenant, 1, march, key="late")])
    assert late.outcome is Outcome.ERROR and late.cap is HARD


def test_caps_are_set_listed_and_removed_on_the_tenant(app: MeteringApp) -> None:
    tenant = app.tenant_by_slug("acme").id
    assert app.set_cap(tenant, cap(5, customer="cus_b"))
    assert app.set_cap(tenant, cap(7))
    assert not app.set_cap(tenant, cap(7))  # the same again changes nothing
    assert app.set_cap(tenant, cap(9, SOFT))  # replaces the metric-wide one
    assert app.caps(tenant) == [cap(9, SOFT), cap(5, customer="cus_b")]
    assert app.remove_cap(tenant, "api_calls", "cus_b") == cap(5, customer="cus_b")
    assert app.caps(tenant) == [cap(9, SOFT)]
    with pytest.raises(NotFoundError):
        app.remove_cap(tenant, "api_calls", "cus_b")
    with pytest.raises(NotFoundError):
        app.set_cap(tenant, cap(1, metric="nope"))


def test_the_cap_marker_crosses_the_writer_process_wire() -> None:
    results = [
        IngestResult(Outcome.ACCEPTED, "a", cap=SOFT, cap_reached=SOFT, late=Lateness.IN_WINDOW),
        IngestResult(Outcome.ERROR, "b", "quantity", "would exceed", cap=HARD, cap_reached=HARD),
        IngestResult(Outcome.ACCEPTED, "c"),
    ]
    sent = RESPONSES.decode(frame(WriteResponse(7, results))[HEADER.size :])
    assert sent.results == results


def test_a_tenant_change_crosses_the_wire_and_an_older_frame_still_reads() -> None:
    tenant = uuid4()
    changed = REQUESTS.decode(frame(WriteRequest(3, [], [tenant]))[HEADER.size :])
    assert changed.tenants_changed == [tenant]
    # A frame without the field (as before it existed) still reads.
    assert REQUESTS.decode(msgspec.msgpack.encode([4, []])).tenants_changed == []
