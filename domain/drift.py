"""A drift a reconciliation run found, recorded once as an event (``drift.detected``).

Reports are views, rewritten by every run; a webhook needs an event in the
log. A run records a ``DriftFinding`` for each line it classifies ``drift``.
Its id is derived from the period, the target and the two numbers that differ
(local and Stripe), so the same drift seen by every scheduled run is one
finding, and a drift that changes (Stripe or the counter moved) is a new one.
"""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.tenancy import NAMESPACE


def drift_finding_id(usage_period_id: UUID, target: str, local: int, stripe: int) -> UUID:
    return uuid5(NAMESPACE, f"drift:{usage_period_id}:{target}:{local}:{stripe}")


class DriftFinding(Aggregate):
    """Stripe's number for a period differs from ours, and nothing in flight explains it."""

    class Detected(Aggregate.Created):
        """Found by a reconciliation run (v1); ``cause`` is the probable one, as reported."""

        tenant_id: UUID
        usage_period_id: UUID
        customer_ref: str
        metric: str
        period: str
        target: str
        stripe_customer_id: str
        meter_id: str
        local: int
        stripe: int
        expected: int
        cause: str
        closed: bool
        actor: str

        def apply(self, aggregate: DriftFinding) -> None:
            aggregate._found(self)

    @classmethod
    def detect(
        cls,
        tenant_id: UUID,
        usage_period_id: UUID,
        *,
        customer_ref: str,
        metric: str,
        period: str,
        target: str,
        stripe_customer_id: str,
        meter_id: str,
        local: int,
        stripe: int,
        expected: int,
        cause: str,
        closed: bool,
        actor: str,
    ) -> DriftFinding:
        return cls._create(
            cls.Detected,
            id=drift_finding_id(usage_period_id, target, local, stripe),
            tenant_id=tenant_id,
            usage_period_id=usage_period_id,
            customer_ref=customer_ref,
            metric=metric,
            period=period,
            target=target,
            stripe_customer_id=stripe_customer_id,
            meter_id=meter_id,
            local=local,
            stripe=stripe,
            expected=expected,
            cause=cause,
            closed=closed,
            actor=actor,
        )

    def _found(self, event: DriftFinding.Detected) -> None:
        # What was found, as recorded: a finding has no other event, it never changes.
        self.detected = event
