"""Sends due webhook deliveries: claim, sign, POST, record; retry with backoff, then give up.

Safety, per delivery (domain/deliveries.py): the aggregate is read again
before anything is sent (the view that found it may lag); the attempt is
claimed by saving ``AttemptStarted`` first, so of two senders only the one
whose save wins posts; the answer (status, error, duration, an excerpt of the
body) is saved as ``AttemptRecorded`` with the next attempt's time or the
verdict. A sender that dies after its claim leaves a lease that expires
(twice the timeout plus 30 s), and then the delivery is tried again: webhooks
are at least once, and each carries its event ``id`` for a receiver to
deduplicate.

A delivery whose endpoint was deleted is abandoned, never sent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from adapters.periodic import Periodic
from adapters.webhook_http import WebhookTransport
from domain.application import MeteringApp
from domain.deliveries import Delivery, Outcome, RetryPolicy
from domain.webhook_endpoints import WebhookEndpointsService
from domain.webhook_signing import HEADER, sign
from projections.webhook_deliveries import WebhookDeliveriesProjection

log = logging.getLogger(__name__)

DELETED = "the endpoint was deleted"


class WebhookSender:
    def __init__(
        self,
        app: MeteringApp,
        deliveries: WebhookDeliveriesProjection,
        transport: WebhookTransport,
        policy: RetryPolicy,
        clock: Callable[[], datetime],
        *,
        timeout_seconds: float,
        threads: int = 4,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.deliveries = deliveries
        self.transport = transport
        self.policy = policy
        self.clock = clock
        # Signatures carry the wall clock: the receiver checks them against its own.
        self.wall_clock = wall_clock
        self.lease = timedelta(seconds=2 * timeout_seconds + 30)
        self.threads = threads
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.rng = rng or random.Random()
        self.endpoints = WebhookEndpointsService(app)
        self._thread: Periodic | None = None
        self._pool: ThreadPoolExecutor | None = None

    def send_due(self) -> dict[UUID, Outcome | None]:
        """Attempt every delivery due now (up to a batch); the outcome of each (None: skipped)."""
        due = self.deliveries.due(self.clock(), self.batch_size)
        if not due:
            return {}
        if self._pool is None:
            return {delivery_id: self.deliver(delivery_id) for delivery_id in due}
        return dict(zip(due, self._pool.map(self.deliver, due), strict=True))

    def deliver(self, delivery_id: UUID) -> Outcome | None:
        """One attempt at one delivery, if it is still due; None when not attempted."""
        try:
            delivery: Delivery = self.app.repository.get(delivery_id)
        except AggregateNotFoundError:
            return None
        now = self.clock()
        if not delivery.is_due(now):
            return None  # done, or claimed by another sender: the view lagged
        endpoint = self.endpoints.endpoints(delivery.tenant_id).endpoints.get(delivery.endpoint_id)
        if endpoint is None:
            delivery.abandon(DELETED)
            return Outcome.FAILED if self._save(delivery) else None
        delivery.start_attempt(now, self.lease)
        if not self._save(delivery):
            return None  # another sender claimed it first
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(endpoint.secret, int(self.wall_clock()), body),
        }
        answer = self.transport.post(endpoint.url, body, headers)
        outcome = delivery.record_attempt(
            self.policy,
            self.clock(),
            self.rng.random(),
            status_code=answer.status_code,
            error=answer.error,
            duration_ms=answer.duration_ms,
            response_body=answer.body,
        )
        if not self._save(delivery):
            return None
        if outcome is not Outcome.SUCCEEDED:
            log.info(
                "webhook %s to endpoint %s, attempt %d: %s (%s)",
                delivery.event_type,
                endpoint.id,
                delivery.attempts,
                outcome.value,
                answer.status_code or answer.error,
            )
        return outcome

    def _save(self, delivery: Delivery) -> bool:
        try:
            self.app.save(delivery)
        except IntegrityError:
            return False
        return True

    # -- running --------------------------------------------------------------

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="webhook-send")
        self._thread = Periodic(
            "webhook-sender", self.poll_interval, self._send_all_due, log=log, what="webhook sender"
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.transport.close()

    def _send_all_due(self) -> None:
        thread = self._thread
        while thread is not None and not thread.stopping.is_set():
            results = self.send_due()
            # A full batch that sent something: look again at once.
            if len(results) < self.batch_size or not any(results.values()):
                break
