"""``stripemeter reconcile``, ``adjustments``, ``tenants late-policy`` and ``tenants horizon``.

Like the API, these act for one tenant (``--tenant SLUG``) and record who
acted (``--actor``, default ``cli:<login name>``). Output is JSON (a
reconciliation can also print CSV).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from typing import Any
from uuid import UUID

import msgspec

from adapters.metrics import Metrics
from adapters.persistence import open_stores
from adapters.push_worker import build_gateways, builtin_emulator_url
from adapters.reconciler import Reconciliation, Scope
from adapters.settings import Settings
from adapters.stripe_target import check_stripe_command
from api.queries.adjustments import adjustment_out
from api.queries.reconciliation import month_of, report_out, write_csv
from api.schemas import FieldError
from domain import fields
from domain.adjusting import AdjustmentService
from domain.application import utc_now
from domain.pushing import PushService, Target
from domain.stripe_port import StripeGateway
from domain.tenancy import tenant_id_for

log = logging.getLogger("stripemeter")


def cli_gateways(settings: Settings) -> dict[Target, StripeGateway]:
    """Stripe as configured; with no key, the built-in emulator of the running service
    (on PostgreSQL only when STRIPEMETER_STRIPE_EMULATOR asks for it)."""
    check_stripe_command(settings)
    emulator_url = builtin_emulator_url(settings)
    if emulator_url is not None:
        log.warning("STRIPE_SECRET_KEY is not set: using the emulator at %s", emulator_url)
    return build_gateways(settings, emulator_url)


def _print_json(data: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(data)).decode())


def _actor(args: argparse.Namespace) -> str:
    return fields.actor(args.actor) if args.actor else f"cli:{getpass.getuser()}"


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when nothing is left in drift (ok, pending, repaired or skipped), 1 otherwise."""
    month = month_of("--period", args.period) if args.period else None
    stores = open_stores(settings)
    try:
        gateways = cli_gateways(settings)
        reconciliation = Reconciliation.build(
            stores,
            settings.reconcile,
            gateways[Target.LIVE],
            # The shadow gateway too, if configured: shadow lines are read and repaired there.
            PushService(stores.app, gateways, locks=stores.push_locks),
            Metrics(),
            utc_now,
        )
        tenant_id = tenant_id_for(args.tenant)
        stores.app.tenant(tenant_id)  # a clear error for an unknown slug
        stores.views.runner.catch_up()
        reports = reconciliation.reconciler.run(
            Scope(tenant_id, month), repair=args.repair, actor=_actor(args), trigger="cli"
        )
        outs = [report_out(r) for r in reports]
        if args.format == "csv":
            write_csv(outs, sys.stdout)
        else:
            _print_json({"data": outs})
    finally:
        stores.close()
    drift = [line for r in reports for line in r.lines if line.status == "drift"]
    if drift:
        # Shadow drift fails the command too (its lines say so): a team runs shadow mode
        # to learn whether the pushes hold, and a script gating on this must hear it.
        shadow = sum(1 for line in drift if line.target == Target.SHADOW.value)
        on_test = f" ({shadow} on the shadow test account)" if shadow else ""
        print(
            f"stripemeter: {len(drift)} line(s) in drift{on_test}; see docs/RECONCILIATION.md",
            file=sys.stderr,
        )
    skipped = sum(r.count("skipped") for r in reports)
    if skipped:
        print(
            f"stripemeter: {skipped} shadow line(s) skipped: STRIPE_TEST_SECRET_KEY is not set",
            file=sys.stderr,
        )
    return 1 if drift else 0


def cmd_adjustments_list(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        stores.views.runner.catch_up()
        rows = stores.views.adjustments.page(tenant_id_for(args.tenant), args.status, None, 1000)
        _print_json({"data": [adjustment_out(r) for r in rows]})
    finally:
        stores.close()
    return 0


def cmd_adjustments_propose(settings: Settings, args: argparse.Namespace) -> int:
    quantity = fields.quantity(args.quantity, "--quantity")
    stores = open_stores(settings)
    try:
        adjustment, _ = AdjustmentService(stores.app).propose(
            tenant_id_for(args.tenant),
            args.customer_ref,
            args.metric,
            quantity,
            actor=_actor(args),
            reason=args.reason,
            key=args.key,
        )
        _print_json(adjustment_out(adjustment))
    finally:
        stores.close()
    return 0


def cmd_adjustments_decide(settings: Settings, args: argparse.Namespace) -> int:
    try:
        adjustment_id = UUID(args.id)
    except ValueError:
        raise FieldError("id", "must be an adjustment id (a UUID)") from None
    stores = open_stores(settings)
    try:
        adjustment = AdjustmentService(stores.app).decide(
            args.decision, tenant_id_for(args.tenant), adjustment_id, _actor(args), args.reason
        )
        _print_json(adjustment_out(adjustment))
    finally:
        stores.close()
    return 0


def cmd_late_policy(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        changed = stores.app.set_late_policy(tenant_id_for(args.slug), args.policy)
        _print_json({"tenant": args.slug, "latePolicy": args.policy, "changed": changed})
    finally:
        stores.close()
    return 0


def cmd_ingest_horizon(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        changed = stores.app.set_ingest_horizon(tenant_id_for(args.tenant), args.days)
        _print_json({"tenant": args.tenant, "ingestHorizonDays": args.days, "changed": changed})
    finally:
        stores.close()
    return 0


def add_parsers(sub: Any, tenants: Any) -> None:
    rec = sub.add_parser(
        "reconcile", help="compare local totals with Stripe's; --repair pushes the difference"
    )
    rec.add_argument("--tenant", required=True, help="tenant slug")
    rec.add_argument("--period", help="YYYY-MM: periods starting that month (default: recent)")
    rec.add_argument("--repair", action="store_true", help="push what Stripe lacks or has extra")
    rec.add_argument("--actor", help="who runs it, for the audit trail (default: cli:<user>)")
    rec.add_argument("--format", choices=("json", "csv"), default="json")
    rec.set_defaults(run=cmd_reconcile)

    adj = sub.add_parser("adjustments", help="corrections for closed periods")
    adjs = adj.add_subparsers(dest="adjustments", required=True)
    lst = adjs.add_parser("list")
    lst.add_argument("--tenant", required=True)
    lst.add_argument("--status", choices=("pending", "applied", "rejected", "reverted"))
    lst.set_defaults(run=cmd_adjustments_list)
    prop = adjs.add_parser("propose", help="propose an adjustment (counts once approved)")
    prop.add_argument("--tenant", required=True)
    prop.add_argument("--customer-ref", required=True)
    prop.add_argument("--metric", required=True)
    prop.add_argument("--quantity", required=True, help="added to the sum (or events, for count)")
    prop.add_argument("--reason", required=True)
    prop.add_argument("--key", help="idempotency key: the same key proposes once")
    prop.add_argument("--actor")
    prop.set_defaults(run=cmd_adjustments_propose)
    for decision in ("approve", "reject", "revert"):
        dec = adjs.add_parser(decision, help=f"{decision} an adjustment")
        dec.add_argument("id")
        dec.add_argument("--tenant", required=True)
        dec.add_argument("--reason", required=True)
        dec.add_argument("--actor")
        dec.set_defaults(run=cmd_adjustments_decide, decision=decision)

    policy = tenants.add_parser(
        "late-policy", help="what happens to usage for a closed period: carry_forward or hold"
    )
    policy.add_argument("slug")
    policy.add_argument("policy", choices=("carry_forward", "hold"))
    policy.set_defaults(run=cmd_late_policy)

    horizon = tenants.add_parser(
        "horizon",
        help="how many days before now an event may be timestamped (default 35); older: refused",
    )
    horizon.add_argument("--tenant", required=True, help="tenant slug")
    horizon.add_argument("--days", required=True, type=int)
    horizon.set_defaults(run=cmd_ingest_horizon)
