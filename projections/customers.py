"""Mapped customers per tenant, for listing (the Customer aggregates hold the truth)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.customers import Customer
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.store import Tx, customer_ref_page

COLUMNS = (
    "customer_id, tenant_id, customer_ref, stripe_customer_id, billing_cycle_anchor,"
    " shadow_stripe_customer_id"
)


@dataclass(frozen=True)
class CustomerRow:
    customer_ref: str
    stripe_customer_id: str
    billing_cycle_anchor: datetime | None
    shadow_stripe_customer_id: str | None


class CustomersProjection(BatchProjection):
    name = "customers"
    # Unmapped customers wait in a table of their own (same columns): the listed
    # table keeps its shape, so an existing deployment needs no view migration.
    tables = ("sm_customers", "sm_customers_unmapped")

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_customers ("
            " customer_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, customer_ref TEXT NOT NULL,"
            " stripe_customer_id TEXT NOT NULL, billing_cycle_anchor {timestamp},"
            " shadow_stripe_customer_id TEXT)",
            "CREATE INDEX IF NOT EXISTS sm_customers_tenant"
            " ON sm_customers (tenant_id, customer_ref)",
            "CREATE TABLE IF NOT EXISTS sm_customers_unmapped ("
            " customer_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, customer_ref TEXT NOT NULL,"
            " stripe_customer_id TEXT NOT NULL, billing_cycle_anchor {timestamp},"
            " shadow_stripe_customer_id TEXT)",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        apply = self.apply  # bound once per batch: binding is the costly part
        for _, event in events:
            apply(event, tx)

    @singledispatchmethod
    def apply(self, event: object, tx: Tx) -> None:
        raise UnhandledEventError(self.name, event)

    @apply.register(Customer.Mapped)
    def _mapped(self, event: Customer.Mapped, tx: Tx) -> None:
        tx.execute(
            "INSERT INTO sm_customers VALUES (?, ?, ?, ?, ?, ?)",
            (
                str(event.originator_id),
                str(event.tenant_id),
                event.customer_ref,
                event.stripe_customer_id,
                self.store.encode_time(event.billing_cycle_anchor),
                event.shadow_stripe_customer_id,
            ),
        )

    @apply.register(Customer.Remapped)
    def _remapped(self, event: Customer.Remapped, tx: Tx) -> None:
        customer_id = str(event.originator_id)
        ids = (event.stripe_customer_id, event.shadow_stripe_customer_id, customer_id)
        tx.execute(
            "UPDATE sm_customers SET stripe_customer_id = ?, shadow_stripe_customer_id = ?"
            " WHERE customer_id = ?",
            ids,
        )
        tx.execute(
            f"INSERT INTO sm_customers ({COLUMNS}) SELECT customer_id, tenant_id,"
            " customer_ref, ?, billing_cycle_anchor, ? FROM sm_customers_unmapped"
            " WHERE customer_id = ?",
            ids,
        )
        tx.execute("DELETE FROM sm_customers_unmapped WHERE customer_id = ?", (customer_id,))

    @apply.register(Customer.CycleChanged)
    def _cycle_changed(self, event: Customer.CycleChanged, tx: Tx) -> None:
        anchor = (self.store.encode_time(event.anchor), str(event.originator_id))
        for table in ("sm_customers", "sm_customers_unmapped"):
            tx.execute(f"UPDATE {table} SET billing_cycle_anchor = ? WHERE customer_id = ?", anchor)

    @apply.register(Customer.Unmapped)
    def _unmapped(self, event: Customer.Unmapped, tx: Tx) -> None:
        # An unmapped customer is not listed and not billed through Stripe: its
        # row waits aside, so that a later Remapped brings it back with its anchor.
        customer_id = str(event.originator_id)
        tx.execute(
            f"INSERT INTO sm_customers_unmapped ({COLUMNS}) SELECT {COLUMNS}"
            " FROM sm_customers WHERE customer_id = ?",
            (customer_id,),
        )
        tx.execute("DELETE FROM sm_customers WHERE customer_id = ?", (customer_id,))

    handles = handled_by(apply)

    def page(
        self, tenant_id: UUID, after: str | None, limit: int, prefix: str = ""
    ) -> list[CustomerRow]:
        """Mapped customers in customerRef order, after a cursor, those starting with
        ``prefix`` only when one is given."""
        page, params = customer_ref_page(after, prefix)
        sql = (
            "SELECT customer_ref, stripe_customer_id, billing_cycle_anchor,"
            " shadow_stripe_customer_id FROM sm_customers WHERE tenant_id = ?" + page
        )
        with self.store.transaction() as tx:
            rows = tx.execute(
                sql + " ORDER BY customer_ref LIMIT ?", [str(tenant_id), *params, limit]
            )
        return [CustomerRow(r[0], r[1], self.store.decode_time(r[2]), r[3]) for r in rows]

    def by_stripe_id(self, stripe_customer_id: str) -> list[tuple[UUID, str]]:
        """(tenant, customer ref) of every customer mapped to this Stripe customer (live)."""
        with self.store.transaction() as tx:
            rows = tx.execute(
                "SELECT tenant_id, customer_ref FROM sm_customers WHERE stripe_customer_id = ?"
                " ORDER BY tenant_id, customer_ref",
                (stripe_customer_id,),
            )
        return [(UUID(r[0]), r[1]) for r in rows]
