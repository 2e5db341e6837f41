"""The Stripe ledger of one usage period: every push, from intent to outcome.

One ``StripeLedger`` per usage period and target (``live``, or ``shadow``
for a Stripe test account). It is a separate aggregate from the
``UsagePeriod`` it pushes so that pushing never contends with ingest for
the period's next version.

A push is three steps, each recorded (see DESIGN.md, "The delta push,
safely"): the *intent* (value, the usage versions it covers, a deterministic
identifier), the Stripe call, then *confirmation* or *abandonment*. While
an intent is pending nothing new is planned: it is resent with the same
identifier and value until it is settled.

Reconciliation can find that Stripe holds another total than the confirmed
pushes add up to (usage sent to Stripe by something else, or a push Stripe
lost). Repairing it records ``DriftRecorded`` — what Stripe held, what the
ledger expected, who decided and why — and the next push, through the same
intent path, brings Stripe to the local counter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Transcoding

from domain.tenancy import NAMESPACE

MAX_IDENTIFIER = 100


def ledger_id_for(usage_period_id: UUID, target: str) -> UUID:
    return uuid5(NAMESPACE, f"stripe-ledger:{usage_period_id}:{target}")


def push_identifier(ledger_id: UUID, number: int, covers_from: int, covers_to: int) -> str:
    """Stable for one push, different for every push: ``sm1-<ledger>-<n>-<from>-<to>``."""
    identifier = f"sm1-{ledger_id.hex}-{number}-{covers_from}-{covers_to}"
    assert len(identifier) <= MAX_IDENTIFIER
    return identifier


def stripe_expected(
    mode: str, confirmed_total: int, external_total: int, confirmed_value: int | None
) -> int:
    """What Stripe should hold if every confirmed push is there, plus accepted drift.

    ``delta`` pushes add up (with what a repair found Stripe holding beyond
    them); a ``value`` meter holds the last value confirmed (none: 0).
    """
    if mode == "delta":
        return confirmed_total + external_total
    return confirmed_value if confirmed_value is not None else 0


@dataclass(frozen=True)
class Intent:
    number: int
    identifier: str
    value: int
    mode: str
    covers_from: int
    covers_to: int
    stripe_timestamp: datetime
    event_name: str
    stripe_customer_id: str
    recorded_at: datetime


class IntentAsDict(Transcoding):
    """Lets a ledger snapshot hold its pending intent."""

    type = Intent
    name = "stripemeter_intent"

    def encode(self, obj: Intent) -> dict[str, Any]:
        return dataclasses.asdict(obj)

    def decode(self, data: dict[str, Any]) -> Intent:
        return Intent(**data)


class StripeLedger(Aggregate):
    # v2 added external_total, repair_pending and last_confirmed_at (for snapshots of v1).
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("external_total", 0)
        state.setdefault("repair_pending", False)
        state.setdefault("last_confirmed_at", None)

    class Opened(Aggregate.Created):
        tenant_id: UUID
        usage_period_id: UUID
        target: str

    class PushIntended(Aggregate.Event):
        number: int
        identifier: str
        value: int
        mode: str
        covers_from: int
        covers_to: int
        stripe_timestamp: datetime
        event_name: str
        stripe_customer_id: str
        reason: str
        recorded_at: datetime  # the service's clock, which decides when to stop resending

        def apply(self, aggregate: StripeLedger) -> None:
            aggregate.pending = Intent(
                self.number,
                self.identifier,
                self.value,
                self.mode,
                self.covers_from,
                self.covers_to,
                self.stripe_timestamp,
                self.event_name,
                self.stripe_customer_id,
                self.recorded_at,
            )
            aggregate.pushes = self.number

    class PushConfirmed(Aggregate.Event):
        """Stripe holds the push. ``how``: response, duplicate (resend) or summary (v2).

        v2 adds ``confirmed_at``, the service's clock at confirmation: how long
        ago Stripe took a push decides whether a lower summary is still lag.
        """

        class_version = 2

        number: int
        how: str
        confirmed_at: datetime | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["confirmed_at"] = None  # unknown for v1: the intent's time stands in

        def apply(self, aggregate: StripeLedger) -> None:
            intent = aggregate.pending
            assert intent is not None and intent.number == self.number
            if intent.mode == "delta":
                aggregate.confirmed_total += intent.value
            aggregate.confirmed_value = intent.value
            aggregate.last_stripe_timestamp = intent.stripe_timestamp
            aggregate.covered_version = intent.covers_to
            aggregate.pending = None
            aggregate.blocked_reason = None
            aggregate.repair_pending = False
            # The service's clock, not the event's wall time.
            aggregate.last_confirmed_at = self.confirmed_at or intent.recorded_at

    class DriftRecorded(Aggregate.Event):
        """An operator accepted that Stripe holds ``stripe_total``, not the expected total (v1).

        Only the ledger learns it: the local counter stays the truth, and the
        next push carries the difference to Stripe.
        """

        stripe_total: int
        expected_total: int
        mode: str
        actor: str
        reason: str

        def apply(self, aggregate: StripeLedger) -> None:
            if self.mode == "delta":
                aggregate.external_total += self.stripe_total - self.expected_total
            else:
                aggregate.confirmed_value = self.stripe_total
            aggregate.repair_pending = True

    class PushAbandoned(Aggregate.Event):
        """Stripe did not and will not take it; its usage stays unpushed, visibly."""

        number: int
        reason: str
        permanent: bool

        def apply(self, aggregate: StripeLedger) -> None:
            intent = aggregate.pending
            assert intent is not None and intent.number == self.number
            aggregate.pending = None
            aggregate.blocked_reason = self.reason if self.permanent else None
            aggregate.blocked_at_version = intent.covers_to if self.permanent else 0

    def __init__(self, tenant_id: UUID, usage_period_id: UUID, target: str) -> None:
        self.tenant_id = tenant_id
        self.usage_period_id = usage_period_id
        self.target = target
        self.pushes = 0
        self.confirmed_total = 0
        self.confirmed_value: int | None = None
        self.last_stripe_timestamp: datetime | None = None
        self.covered_version = 0
        self.pending: Intent | None = None
        self.blocked_reason: str | None = None
        self.blocked_at_version = 0
        # What Stripe holds beyond (or short of) our confirmed deltas, learned by a repair.
        self.external_total = 0
        self.repair_pending = False
        self.last_confirmed_at: datetime | None = None

    def stripe_expected(self, mode: str) -> int:
        """What Stripe should hold for this period if every confirmed push is there."""
        return stripe_expected(
            mode, self.confirmed_total, self.external_total, self.confirmed_value
        )

    @classmethod
    def open(cls, tenant_id: UUID, usage_period_id: UUID, target: str) -> StripeLedger:
        return cls._create(
            cls.Opened,
            id=ledger_id_for(usage_period_id, target),
            tenant_id=tenant_id,
            usage_period_id=usage_period_id,
            target=target,
        )

    def intend(
        self,
        value: int,
        mode: str,
        covers_to: int,
        stripe_timestamp: datetime,
        event_name: str,
        stripe_customer_id: str,
        reason: str,
        now: datetime,
    ) -> Intent:
        assert self.pending is None, "a pending intent must be settled first"
        number = self.pushes + 1
        covers_from = self.covered_version + 1
        self.trigger_event(
            self.PushIntended,
            number=number,
            identifier=push_identifier(self.id, number, covers_from, covers_to),
            value=value,
            mode=mode,
            covers_from=covers_from,
            covers_to=covers_to,
            stripe_timestamp=stripe_timestamp,
            event_name=event_name,
            stripe_customer_id=stripe_customer_id,
            reason=reason,
            recorded_at=now,
        )
        assert self.pending is not None
        return self.pending

    def record_drift(
        self, stripe_total: int, expected_total: int, mode: str, actor: str, reason: str
    ) -> None:
        assert self.pending is None, "a pending intent must be settled first"
        self.trigger_event(
            self.DriftRecorded,
            stripe_total=stripe_total,
            expected_total=expected_total,
            mode=mode,
            actor=actor,
            reason=reason,
        )

    def confirm(self, number: int, how: str, now: datetime) -> None:
        self.trigger_event(self.PushConfirmed, number=number, how=how, confirmed_at=now)

    def abandon(self, number: int, reason: str, *, permanent: bool) -> None:
        self.trigger_event(self.PushAbandoned, number=number, reason=reason, permanent=permanent)
