"""The key the Python SDK computes is the key the server derives from what the SDK sends.

Events with Python's own values (ints past 2^64, floats such as 1.0, any text,
aware datetimes in any offset) go through ``UsageEvent.create`` and the SDK's
own body encoder; the server reads those bytes through its ingest path.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.routes.ingest import read_batch
from domain.tenancy import Principal, Scope
from stripemeter import UsageEvent
from stripemeter._base import encode
from tests.sdk import strategies

PRINCIPAL = Principal(
    tenant_id=uuid4(), tenant_slug="acme", key_id=uuid4(), scopes=frozenset({Scope.INGEST})
)

names = strategies.names
metas = strategies.metas(2**70)  # past 2^64: Python's ints are unbounded
quantities = strategies.quantities(
    strategies.decimal_texts, st.sampled_from([Decimal("1.000"), Decimal("-0")])
)
moments = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric=names, customer=names, quantity=quantities, ts=moments, meta=st.none() | metas)
def test_the_sdks_key_is_the_servers_key_for_the_bytes_it_sends(
    metric: str, customer: str, quantity: Any, ts: datetime, meta: dict[str, Any] | None
) -> None:
    try:
        event = UsageEvent.create(metric, customer, quantity, ts=ts, meta=meta)
    except ValueError:
        return  # refused before sending (a quantity past the server's limits)
    results, submissions = read_batch(encode({"events": [event.to_wire()]}), PRINCIPAL, None, 10)
    if results != [None]:
        # Rules the SDK leaves to the server (meta's size, text it forbids) are per-event errors.
        assert results[0] is not None
        assert results[0].field in ("metric", "customerRef", "meta"), results[0]
        return
    assert submissions[0].idempotency_key == event.idempotency_key
    assert json.loads(encode(event.to_wire())).get("idempotencyKey") is None
