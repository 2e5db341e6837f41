"""The rebuild's msgspec decoder gives the mapper's events, field for field, type for type.

Stored states are written here by the application's own mapper (eventsourcing's
JSONTranscoder with the project's transcodings), then decoded both ways. The
whole-log comparison over every event type is in tests/integration/test_rebuild.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from domain.application import MeteringApp
from domain.meters import Aggregation
from domain.periods import BillingPeriod
from domain.usage import UsagePeriod
from projections.counters import CountersProjection
from projections.decoding import EventDecoder
from projections.usage_events import UsageEventsProjection
from projections.usage_periods import UsagePeriodDirectory


def exactly(event: Any) -> dict[str, tuple[type[Any], str]]:
    return {name: (type(value), repr(value)) for name, value in vars(event).items()}


@pytest.fixture
def app() -> MeteringApp:
    return MeteringApp()


def decoder_for(app: MeteringApp) -> EventDecoder:
    classes = {
        cls
        for projection in (CountersProjection, UsageEventsProjection, UsagePeriodDirectory)
        for cls in projection.handles
    }
    return EventDecoder(app.mapper, classes)


def both_ways(app: MeteringApp, stored: StoredEvent, originator_id: Any = None) -> tuple[Any, Any]:
    decoder = decoder_for(app)
    fast = decoder.decode(
        stored.topic,
        stored.originator_id if originator_id is None else originator_id,
        stored.originator_version,
        stored.state,
    )
    return fast, app.mapper.to_domain_event(stored)


def recorded(quantity: str, occurred_at: datetime, key: str = "k") -> UsagePeriod.UsageRecorded:
    return UsagePeriod.UsageRecorded(  # type: ignore[call-arg]
        originator_id=uuid4(),
        originator_version=7,
        timestamp=datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=UTC),
        idempotency_key=key,
        quantity=Decimal(quantity),
        occurred_at=occurred_at,
        meta='{"région":"eu","n":[1,2]}',
        late=False,
    )


@pytest.mark.parametrize(
    "quantity", ["4", "0.25", "1E+2", "-0.000", "-3.5", "123456789012345678901234567890.123456789"]
)
@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime(2026, 11, 30, 8, 33, 45, tzinfo=UTC),
        datetime(2026, 11, 30, 8, 33, 45, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 11, 30, 8, 33, 45),  # naive: stored without an offset
    ],
)
def test_usage_recorded_decodes_as_the_mapper_does(
    app: MeteringApp, quantity: str, occurred_at: datetime
) -> None:
    stored = app.mapper.to_stored_event(recorded(quantity, occurred_at, key='k"é\\'))
    fast, expected = both_ways(app, stored)
    assert type(fast) is UsagePeriod.UsageRecorded
    assert exactly(fast) == exactly(expected)


def test_an_originator_id_stored_as_text_becomes_the_uuid(app: MeteringApp) -> None:
    stored = app.mapper.to_stored_event(recorded("1", datetime(2026, 1, 1, tzinfo=UTC)))
    fast, expected = both_ways(app, stored, originator_id=str(stored.originator_id))
    assert isinstance(fast.originator_id, UUID)
    assert exactly(fast) == exactly(expected)


def test_period_opened_with_its_tenant_uuid(app: MeteringApp) -> None:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    billing = BillingPeriod(start, end)
    period = UsagePeriod.open(uuid4(), "cus_1", "api_calls", Aggregation.MAX, billing)
    stored = app.mapper.to_stored_event(period.collect_events()[0])
    fast, expected = both_ways(app, stored)
    assert exactly(fast) == exactly(expected)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"late":false', b'"late":false,"class_version":1'),  # a field the struct lacks
        (b',"late":false', b""),  # a field missing
        (b'"_type_":"decimal_str"', b'"_type_":"decimal_other"'),  # another transcoding
        (b'"late":false', b'"late":0'),  # an int where a bool is declared
    ],
)
def test_a_state_that_does_not_fit_is_left_to_the_mapper(
    app: MeteringApp, old: bytes, new: bytes
) -> None:
    stored = app.mapper.to_stored_event(recorded("2", datetime(2026, 1, 1, tzinfo=UTC)))
    assert old in stored.state
    odd = StoredEvent(
        stored.originator_id,
        stored.originator_version,
        stored.topic,
        stored.state.replace(old, new),
    )
    decoder = decoder_for(app)
    try:
        expected = app.mapper.to_domain_event(odd)
    except Exception as error:  # the mapper refuses it: so must the decoder
        with pytest.raises(type(error)):
            decoder.decode(odd.topic, odd.originator_id, odd.originator_version, odd.state)
        assert decoder.fallbacks == 1
        return
    fast = decoder.decode(odd.topic, odd.originator_id, odd.originator_version, odd.state)
    assert decoder.fallbacks == 1
    assert exactly(fast) == exactly(expected)
