"""The webhook outbox: follows the log and turns each source event into deliveries.

For every event class in ``WEBHOOK_SOURCES`` (domain/webhook_sources.py) it
creates one ``Delivery`` per endpoint of that tenant subscribed to the type
*at that point of the log*: it follows the endpoints' own events in the same
pass, in log order, keeping who is subscribed in a table written in the same
transaction as its tracking position. So a replay from any position decides
exactly as the first pass did: an endpoint gets the events recorded after it
was created and before it was deleted, never the ones before.

Why no delivery is lost or made twice: a batch's deliveries are saved to the
event store before the batch's transaction (subscribers and position)
commits. A crash in between replays the batch; each delivery's id is
``uuid5(endpoint, source event)``, so the second save of one collides with
the first (the event store's version check) and is skipped. A delivery
exists only for an event in the log: nothing is made up.

It runs on a runner of its own, beside the views' (``WebhookOutbox``): it
writes to the event store, so a projection rebuild or dry run must never run
it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import IntegrityError

from domain.application import MeteringApp
from domain.deliveries import Delivery
from domain.webhook_endpoints import ALL_TYPES, WebhookEndpoints
from domain.webhook_sources import (
    WEBHOOK_SOURCES,
    payload,
    source_event_id,
    webhook_event_id,
)
from projections.base import BatchProjection, Positioned, UnhandledEventError
from projections.runner import BatchProjectionRunner
from projections.store import Tx, ViewStore

log = logging.getLogger(__name__)

Subscriber = tuple[UUID, frozenset[str]]  # (tenant, the types it wants)
# Delivery.create's arguments: tenant, endpoint, source event, event id, type, payload, due.
DeliverySpec = tuple[UUID, UUID, UUID, str, str, str, datetime]


class OutboxProjection(BatchProjection):
    name = "webhook_outbox"
    tables = ("sm_webhook_subscribers",)
    handles = (
        WebhookEndpoints.EndpointAdded,
        WebhookEndpoints.EndpointDeleted,
        *WEBHOOK_SOURCES,
    )

    def __init__(self, store: ViewStore, app: MeteringApp, clock: Callable[[], datetime]) -> None:
        super().__init__(store)
        self.app = app
        self.clock = clock
        self.created = 0  # deliveries this process saved (a replay's collisions not counted)

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_webhook_subscribers ("
            " endpoint_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, event_types TEXT NOT NULL)"
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        rows = tx.execute("SELECT endpoint_id, tenant_id, event_types FROM sm_webhook_subscribers")
        subscribers = {UUID(e): (UUID(t), frozenset(types.split(","))) for e, t, types in rows}
        deliveries: list[DeliverySpec] = []
        for _, event in events:
            self.apply(event, tx, subscribers, deliveries)
        self._save(deliveries)

    @singledispatchmethod
    def apply(
        self, event: object, tx: Tx, subscribers: dict[UUID, Subscriber], out: list[DeliverySpec]
    ) -> None:
        source = WEBHOOK_SOURCES.get(type(event))
        if source is None:
            raise UnhandledEventError(self.name, event)
        if not subscribers:
            return  # nobody listens: not even the aggregate is read
        originator_id: UUID = event.originator_id  # type: ignore[attr-defined]
        version: int = event.originator_version  # type: ignore[attr-defined]
        aggregate: object = self.app.repository.get(originator_id, version=version)
        tenant_id, data = source.describe(event, aggregate)
        wanting = [
            endpoint_id
            for endpoint_id, (tenant, types) in subscribers.items()
            if tenant == tenant_id and (source.type in types or ALL_TYPES in types)
        ]
        if not wanting:
            return
        source_id = source_event_id(originator_id, version)
        event_id = webhook_event_id(source_id)
        created: datetime = event.timestamp  # type: ignore[attr-defined]
        body = payload(event_id, source.type, created, data)
        now = self.clock()
        for endpoint_id in sorted(wanting):
            out.append((tenant_id, endpoint_id, source_id, event_id, source.type, body, now))

    @apply.register(WebhookEndpoints.EndpointAdded)
    def _added(
        self,
        event: WebhookEndpoints.EndpointAdded,
        tx: Tx,
        subscribers: dict[UUID, Subscriber],
        out: list[DeliverySpec],
    ) -> None:
        if not event.enabled:
            return
        tenant_id = event.tenant_id
        tx.execute(
            "INSERT INTO sm_webhook_subscribers VALUES (?, ?, ?)"
            " ON CONFLICT (endpoint_id) DO NOTHING",
            (str(event.endpoint_id), str(tenant_id), ",".join(event.event_types)),
        )
        subscribers[event.endpoint_id] = (tenant_id, frozenset(event.event_types))

    @apply.register(WebhookEndpoints.EndpointDeleted)
    def _deleted(
        self,
        event: WebhookEndpoints.EndpointDeleted,
        tx: Tx,
        subscribers: dict[UUID, Subscriber],
        out: list[DeliverySpec],
    ) -> None:
        tx.execute(
            "DELETE FROM sm_webhook_subscribers WHERE endpoint_id = ?", (str(event.endpoint_id),)
        )
        subscribers.pop(event.endpoint_id, None)

    def _save(self, specs: list[DeliverySpec]) -> None:
        """Save them all at once; after a crash some exist already: then one at a time.

        Each is made anew for its own save: a failed save has taken the
        aggregates' pending events with it.
        """
        if not specs:
            return
        try:
            self.app.save(*[Delivery.create(*spec) for spec in specs])
        except IntegrityError:
            saved = 0
            for spec in specs:
                with contextlib.suppress(IntegrityError):  # made before a crash: kept as it was
                    self.app.save(Delivery.create(*spec))
                    saved += 1
            self.created += saved
            log.info(
                "webhook outbox replayed a batch: %d of %d deliveries existed already",
                len(specs) - saved,
                len(specs),
            )
            return
        self.created += len(specs)


class WebhookOutbox:
    """The outbox on a runner of its own (see the module docstring)."""

    def __init__(
        self,
        app: MeteringApp,
        store: ViewStore,
        clock: Callable[[], datetime],
        poll_interval: float = 1.0,
    ) -> None:
        self.projection = OutboxProjection(store, app, clock)
        self.runner = BatchProjectionRunner(
            app.recorder,
            app.mapper,
            store,
            [self.projection],
            batch_size=500,
            poll_interval=poll_interval,
        )
        self.runner.create_tables()
        self._forget_orphans(store)

    def _forget_orphans(self, store: ViewStore) -> None:
        """Subscribers without a tracking position (dropped with the views' schema) are
        from another position of the log: start over from the first entry, as a replay."""
        if self.runner.positions()[self.projection.name] == 0:
            with store.transaction() as tx:
                self.projection.clear(tx)

    def catch_up(self) -> int:
        return self.runner.catch_up()

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()
