"""One webhook delivery: one source event, to one endpoint, until it succeeds or gives up.

Its id is ``delivery_id_for(endpoint, source event)``: the outbox follower
(adapters/webhook_outbox.py) may create it any number of times after a crash,
and the event store keeps the first (the others collide on version 1). The
payload is fixed when it is created: every attempt sends the same bytes.

An attempt is two events: ``AttemptStarted`` (the claim, saved before the
request, so two senders never post the same attempt: the second one's save
collides) and ``AttemptRecorded`` (its outcome). A sender that dies between
them leaves the claim; once its lease has passed the delivery is due again,
and the listing shows that attempt without an outcome.

Status: ``pending`` until an attempt answers 2xx (``succeeded``) or the
retry policy gives up, or the endpoint is deleted (``failed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # failed; tried again at ``next_attempt_at``
    FAILED = "failed"  # failed; no attempt follows


def delivery_id_for(endpoint_id: UUID, source_event_id: UUID) -> UUID:
    return uuid5(endpoint_id, str(source_event_id))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, until ``give_up_after`` from the delivery's creation.

    Attempt n (n ≥ 1) failed: the next one waits ``base × 2^(n-1)``, at most
    ``max_delay``, times a factor in [0.8, 1.2) from ``jitter`` in [0, 1). The
    default is Stripe's horizon: about three days (docs/webhooks.md lists it).
    """

    base: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=6)
    give_up_after: timedelta = timedelta(days=3)

    def delay(self, attempts: int, jitter: float) -> timedelta:
        exponent = min(max(attempts - 1, 0), 40)
        plain: timedelta = min(self.max_delay, self.base * (2**exponent))
        return plain * (0.8 + 0.4 * jitter)

    def next_attempt(
        self, created_at: datetime, attempts: int, now: datetime, jitter: float
    ) -> datetime | None:
        """When to try again after ``attempts`` failed ones; None: give up."""
        at = now + self.delay(attempts, jitter)
        return at if at <= created_at + self.give_up_after else None


class Delivery(Aggregate):
    """One source event's delivery to one endpoint, and every attempt at it."""

    class Created(Aggregate.Created):
        """The outbox found an event the endpoint subscribes to (v1)."""

        tenant_id: UUID
        endpoint_id: UUID
        event_id: str
        event_type: str
        payload: str
        due_at: datetime

    class AttemptStarted(Aggregate.Event):
        """A sender claimed attempt ``number``; another may take it after ``lease_until`` (v1)."""

        number: int
        started_at: datetime
        lease_until: datetime

        def apply(self, aggregate: Delivery) -> None:
            aggregate.attempts = self.number
            aggregate.due_at = self.lease_until

    class AttemptRecorded(Aggregate.Event):
        """What attempt ``number`` got: an HTTP status or an error, and what follows (v1)."""

        number: int
        finished_at: datetime
        status_code: int | None
        error: str
        duration_ms: int
        response_body: str
        outcome: str
        next_attempt_at: datetime | None

        def apply(self, aggregate: Delivery) -> None:
            if self.outcome == Outcome.SUCCEEDED:
                aggregate.status = DeliveryStatus.SUCCEEDED
            elif self.outcome == Outcome.FAILED:
                aggregate.status = DeliveryStatus.FAILED
            aggregate.due_at = self.next_attempt_at

    class Abandoned(Aggregate.Event):
        """No more attempts, for ``reason`` (the endpoint was deleted) (v1)."""

        reason: str

        def apply(self, aggregate: Delivery) -> None:
            aggregate.status = DeliveryStatus.FAILED
            aggregate.due_at = None

    def __init__(
        self,
        tenant_id: UUID,
        endpoint_id: UUID,
        event_id: str,
        event_type: str,
        payload: str,
        due_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.endpoint_id = endpoint_id
        self.event_id = event_id
        self.event_type = event_type
        self.payload = payload
        self.due_at: datetime | None = due_at
        # When the outbox made it, by the service's clock: the retry horizon counts from here.
        self.created_at = due_at
        self.attempts = 0
        self.status = DeliveryStatus.PENDING

    @classmethod
    def create(
        cls,
        tenant_id: UUID,
        endpoint_id: UUID,
        source_event_id: UUID,
        event_id: str,
        event_type: str,
        payload: str,
        due_at: datetime,
    ) -> Delivery:
        return cls._create(
            cls.Created,
            id=delivery_id_for(endpoint_id, source_event_id),
            tenant_id=tenant_id,
            endpoint_id=endpoint_id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            due_at=due_at,
        )

    def is_due(self, now: datetime) -> bool:
        return (
            self.status is DeliveryStatus.PENDING and self.due_at is not None and self.due_at <= now
        )

    def start_attempt(self, now: datetime, lease: timedelta) -> int:
        assert self.is_due(now), "only a due delivery is attempted"
        self.trigger_event(
            self.AttemptStarted, number=self.attempts + 1, started_at=now, lease_until=now + lease
        )
        return self.attempts

    def record_attempt(
        self,
        policy: RetryPolicy,
        now: datetime,
        jitter: float,
        *,
        status_code: int | None,
        error: str,
        duration_ms: int,
        response_body: str,
    ) -> Outcome:
        """Record the claimed attempt's answer: 2xx succeeds; anything else retries or gives up."""
        if status_code is not None and 200 <= status_code < 300:
            outcome, at = Outcome.SUCCEEDED, None
        else:
            at = policy.next_attempt(self.created_at, self.attempts, now, jitter)
            outcome = Outcome.FAILED if at is None else Outcome.RETRYING
        self.trigger_event(
            self.AttemptRecorded,
            number=self.attempts,
            finished_at=now,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            response_body=response_body,
            outcome=outcome.value,
            next_attempt_at=at,
        )
        return outcome

    def abandon(self, reason: str) -> bool:
        if self.status is not DeliveryStatus.PENDING:
            return False
        self.trigger_event(self.Abandoned, reason=reason)
        return True
