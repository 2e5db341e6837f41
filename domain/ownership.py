"""Who owns a Stripe object: at most one tenant per Stripe account, and one mapping of it.

Pushes write onto Stripe objects by their ids — a customer id, and a meter's
event name, which is what meter events are sent with. Two tenants mapped to
one of them would each bill the other's invoice. So binding a mapping to a
Stripe object *claims* it, in the event log: the claim is an aggregate whose
id is derived from (Stripe account, kind, object id), saved in the same
transaction as the mapping it protects. Two tenants racing for one object
write the same aggregate at the same version, and the event store's
uniqueness of (id, version) lets exactly one of them through.

A claim lives on: claimed → released (unmap, or remap to another object) →
claimed again, possibly by another tenant. Each step is a new version, so
each is as race-safe as the first.

The claim also names its *holder*: the metric (meter) or the customer ref
(customer) that maps onto the object. One Stripe object holds one mapping:
reconciliation compares one local counter with Stripe's total for the
object, which two local counters pushing into it would never match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import ConflictError, OwnedElsewhereError
from domain.tenancy import NAMESPACE


class StripeObjectKind(StrEnum):
    CUSTOMER = "customer"
    METER = "meter"  # identified by its event name


@dataclass(frozen=True, order=True)
class StripeObject:
    """One Stripe object as pushes address it, in the account that holds it."""

    account: str
    kind: StripeObjectKind
    object_id: str

    def describe(self) -> str:
        if self.kind is StripeObjectKind.CUSTOMER:
            return f"Stripe customer {self.object_id}"
        return f"the Stripe meter with event name {self.object_id!r}"


def claim_id_for(obj: StripeObject) -> UUID:
    return uuid5(NAMESPACE, f"stripe-object:{obj.account}:{obj.kind.value}:{obj.object_id}")


class StripeClaim(Aggregate):
    """The claim on one Stripe object: which tenant owns it, and which mapping holds it."""

    class Claimed(Aggregate.Created):
        account: str
        kind: str
        object_id: str
        tenant_id: UUID
        holder: str

    class Reclaimed(Aggregate.Event):
        tenant_id: UUID
        holder: str

        def apply(self, aggregate: StripeClaim) -> None:
            aggregate.owner = self.tenant_id
            aggregate.holder = self.holder

    class Released(Aggregate.Event):
        reason: str

        def apply(self, aggregate: StripeClaim) -> None:
            aggregate.owner = None
            aggregate.holder = None

    def __init__(
        self, account: str, kind: str, object_id: str, tenant_id: UUID, holder: str
    ) -> None:
        self.account = account
        self.kind = kind
        self.object_id = object_id
        self.owner: UUID | None = tenant_id
        self.holder: str | None = holder

    @property
    def object(self) -> StripeObject:
        return StripeObject(self.account, StripeObjectKind(self.kind), self.object_id)

    @classmethod
    def claim(cls, obj: StripeObject, tenant_id: UUID, holder: str) -> StripeClaim:
        return cls._create(
            cls.Claimed,
            id=claim_id_for(obj),
            account=obj.account,
            kind=obj.kind.value,
            object_id=obj.object_id,
            tenant_id=tenant_id,
            holder=holder,
        )

    def take(self, tenant_id: UUID, holder: str) -> bool:
        """Claim it again for ``holder``; False when it already holds it.

        Another tenant's object is refused without naming that tenant; the
        tenant's own object held by another of its mappings is refused naming
        that mapping (the tenant may know its own).
        """
        if self.owner is None:
            self.trigger_event(self.Reclaimed, tenant_id=tenant_id, holder=holder)
            return True
        if self.owner != tenant_id:
            raise OwnedElsewhereError(f"{self.object.describe()} belongs to another tenant")
        if self.holder != holder:
            what = "customer" if self.kind == StripeObjectKind.CUSTOMER else "metric"
            raise ConflictError(
                f"{self.object.describe()} is already mapped to {what} {self.holder!r};"
                " unmap that first"
            )
        return False

    def release(self, tenant_id: UUID, holder: str, reason: str) -> bool:
        """Give it up; False when this tenant's ``holder`` does not hold it (nothing to do)."""
        if self.owner != tenant_id or self.holder != holder:
            return False
        self.trigger_event(self.Released, reason=reason)
        return True


ClaimLoader = Callable[[UUID], "StripeClaim | None"]


class ClaimChanges:
    """The claims one mapping change takes and gives up, decided on fresh copies.

    Collect them, then save ``aggregates`` in the same transaction as the
    mapping; on a concurrency error start again with a new ``ClaimChanges``.
    """

    def __init__(self, load: ClaimLoader, tenant_id: UUID, holder: str) -> None:
        self.load = load
        self.tenant_id = tenant_id
        self.holder = holder
        self.aggregates: list[StripeClaim] = []

    def move(self, old: Iterable[StripeObject], new: Iterable[StripeObject], reason: str) -> None:
        """Give up what ``old`` has and ``new`` has not; take everything in ``new``.

        Taking what the mapping already holds changes nothing, and takes an
        object the mapping had from before claims existed (a legacy mapping).
        """
        wanted = sorted(set(new))
        for obj in sorted(set(old) - set(wanted)):
            self.give_up(obj, reason)
        for obj in wanted:
            self.take(obj)

    def take(self, obj: StripeObject) -> None:
        claim = self.load(claim_id_for(obj))
        if claim is None:
            self.aggregates.append(StripeClaim.claim(obj, self.tenant_id, self.holder))
        elif claim.take(self.tenant_id, self.holder):
            self.aggregates.append(claim)

    def give_up(self, obj: StripeObject, reason: str) -> None:
        claim = self.load(claim_id_for(obj))
        if claim is not None and claim.release(self.tenant_id, self.holder, reason):
            self.aggregates.append(claim)
