"""``stripemeter stripe ownership``: the upgrade report on who owns which Stripe object.

Mappings made before ownership claims existed have none. The report lists
every Stripe object mapped by more than one tenant or mapping, or claimed
by another than its mapping (naming them: this is the operator's tool), and
every mapping whose claim is missing;
``--apply`` records the missing claims of the unconflicted ones. A conflict
is never resolved here: unmap the wrong mapping, then apply again. The exit
status is 1 while any conflict remains, so a deploy script can stop on it.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from adapters.persistence import open_stores
from adapters.settings import Settings
from api.cli_reconcile import cli_gateways
from domain.ownership_report import (
    ObjectStanding,
    OwnershipReport,
    claim_unconflicted,
    ownership_report,
)
from domain.pushing import Target
from domain.stripe_mapping import StripeMappingService


def standing_out(standing: ObjectStanding) -> dict[str, Any]:
    return {
        "account": standing.obj.account,
        "kind": standing.obj.kind.value,
        "stripeId": standing.obj.object_id,
        "mappedBy": [
            {"tenant": h.tenant_slug, "tenantId": str(h.tenant_id), "holder": h.holder}
            for h in standing.holdings
        ],
        "claimedBy": None
        if standing.claim_owner is None
        else {"tenantId": str(standing.claim_owner), "holder": standing.claim_holder},
    }


def report_out(report: OwnershipReport, recorded: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "objects": len(report.objects),
        "conflicts": [standing_out(s) for s in report.conflicts],
        "unclaimed": [standing_out(s) for s in report.unclaimed],
    }
    if recorded is not None:
        out["claimsRecorded"] = recorded
    return out


def cmd_ownership(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when no Stripe object has two mappings; 1 while one has."""
    gateways = cli_gateways(settings)
    stores = open_stores(settings)
    try:
        service = StripeMappingService(
            stores.app, gateways[Target.LIVE], gateways.get(Target.SHADOW)
        )
        report = ownership_report(service)
        recorded = None
        if args.apply:
            recorded = claim_unconflicted(service, report)
            report = ownership_report(service)
        print(msgspec.json.format(msgspec.json.encode(report_out(report, recorded))).decode())
    finally:
        stores.close()
    return 1 if report.conflicts else 0


def add_parser(sub: Any) -> None:
    stripe = sub.add_parser("stripe", help="Stripe objects and who owns them")
    commands = stripe.add_subparsers(dest="stripe", required=True)
    ownership = commands.add_parser(
        "ownership",
        help="report Stripe objects mapped by several tenants and mappings without a claim",
    )
    ownership.add_argument(
        "--apply", action="store_true", help="record the missing claims of unconflicted mappings"
    )
    ownership.set_defaults(run=cmd_ownership)
