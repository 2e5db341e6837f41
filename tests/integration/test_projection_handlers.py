"""Each view has one handler per event type, and an event it has no handler for fails loudly.

The ledger once sent any event it did not recognise to its "abandoned" branch;
now an unknown type raises before anything is written, and the batch's
transaction rolls back, on both backends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from adapters.persistence import Stores
from domain.adjustments import Adjustment
from domain.customers import Customer
from domain.ledger import StripeLedger
from domain.usage import UsagePeriod
from projections.base import BatchProjection, UnhandledEventError

TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")
PERIOD = uuid.UUID("00000000-0000-4000-8000-000000000002")


def views(stores: Stores) -> list[BatchProjection]:
    v = stores.views
    return [v.directory, v.counters, v.events, v.ledger, v.customers, v.adjustments]


def event_classes(aggregate: type[Aggregate]) -> set[type[Any]]:
    """The events an aggregate stores (not the library's ``Event``/``Created`` bases it adds)."""
    return {
        value
        for value in vars(aggregate).values()
        if isinstance(value, type) and issubclass(value, Aggregate.Event)
    } - {aggregate.Event, aggregate.Created}


def a_customer_mapped() -> Customer.Mapped:
    customer = Customer.map(TENANT, "cus_1", "cus_stripe1", datetime(2026, 3, 1, tzinfo=UTC))
    (mapped,) = customer.collect_events()
    assert isinstance(mapped, Customer.Mapped)
    return mapped


def test_every_stored_event_type_has_a_view_that_handles_it(stores: Stores) -> None:
    # Events no view reads, on purpose: CapReached is for the operator (a log line, a metric)
    # and for outbound webhooks (cap.reached); no counter or ledger changes with it.
    ignored: set[type[Any]] = {UsagePeriod.CapReached}
    handled = {cls for view in views(stores) for cls in view.handles}
    for aggregate in (UsagePeriod, StripeLedger, Customer, Adjustment):
        assert event_classes(aggregate) - ignored <= handled, aggregate.__name__
    assert set(stores.views.ledger.handles) == event_classes(StripeLedger)
    assert set(stores.views.customers.handles) == event_classes(Customer)
    assert set(stores.views.adjustments.handles) == event_classes(Adjustment)


def test_the_ledger_refuses_an_event_it_has_no_handler_for(stores: Stores) -> None:
    ledger = StripeLedger.open(TENANT, PERIOD, "live")
    (opened,) = ledger.collect_events()
    store = stores.views.store
    with store.transaction() as tx:
        stores.views.ledger.process(tx, [(1, opened)])

    with pytest.raises(UnhandledEventError) as raised, store.transaction() as tx:
        tx.execute("UPDATE sm_ledgers SET pending_number = 7")  # rolled back with the batch
        stores.views.ledger.process(tx, [(2, a_customer_mapped())])

    assert str(raised.value) == "the ledger view has no handler for Customer.Mapped"
    assert [row.pending_number for row in stores.views.ledger.ledgers()] == [None]


@pytest.mark.parametrize(
    "name", ["usage_periods", "counters", "usage_events", "ledger", "customers", "adjustments"]
)
def test_every_view_refuses_an_event_type_it_does_not_handle(stores: Stores, name: str) -> None:
    view = next(v for v in views(stores) if v.name == name)
    stranger = (
        a_customer_mapped()
        if Customer.Mapped not in view.handles
        else StripeLedger.open(TENANT, PERIOD, "live").collect_events()[0]
    )
    refused = pytest.raises(UnhandledEventError, match=f"^the {name} view has no handler for ")
    with refused, stores.views.store.transaction() as tx:
        view.process(tx, [(1, stranger)])
