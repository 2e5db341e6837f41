"""The ``stripemeter`` command: run the service and the worker, administer tenants.

Every subcommand reads settings from the environment once (see
docs/configuration.md) and prints JSON, so that scripts can use the output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec

import stripe_emulator
from adapters.build_info import version
from adapters.persistence import Stores, open_stores
from adapters.settings import Settings, SettingsError
from api.cli_config import add_parser as add_config_parser
from api.cli_import import add_parser as add_import_parser
from api.cli_ownership import add_parser as add_ownership_parser
from api.cli_projections import add_parser as add_projections_parser
from api.cli_reconcile import add_parsers as add_reconcile_parsers
from api.cli_reconcile import cli_gateways
from api.cli_replay import add_parser as add_replay_parser
from api.queries.audit import build_audit
from api.queries.mappings import customer_out, mapping_out
from api.queries.meters import declare_meter, list_meters
from api.schemas import FieldError, parse_time
from api.serving import cmd_serve, cmd_worker, cmd_writer
from domain.errors import StripeMeterError
from domain.meters import DEFAULT_LATENESS_SECONDS
from domain.pushing import Target
from domain.stripe_mapping import StripeMappingService
from domain.stripe_port import StripeError
from domain.tenancy import parse_scopes, tenant_id_for

log = logging.getLogger("stripemeter")


def _print_json(data: Any) -> None:
    """API shapes (msgspec Structs), printed as the API would send them."""
    print(msgspec.json.format(msgspec.json.encode(data)).decode())


def _print_with(shape: Any, **extra: Any) -> None:
    """An API shape (a msgspec Struct) with what the command adds, e.g. ``changed``."""
    _print_json({**msgspec.to_builtins(shape), **extra})


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)  # creates every missing table
    stores.close()
    _print({"status": "migrated", "backend": settings.backend})
    return 0


def cmd_tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        tenant = stores.app.register_tenant(args.slug, args.name or args.slug)
        _print({"id": str(tenant.id), "slug": tenant.slug, "name": tenant.display_name})
    finally:
        stores.close()
    return 0


def cmd_tenants_show(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        tenant = stores.app.tenant_by_slug(args.slug)
        _print(
            {
                "id": str(tenant.id),
                "slug": tenant.slug,
                "name": tenant.display_name,
                "metrics": sorted(tenant.metrics),
                "latePolicy": tenant.late_policy,
                "ingestHorizonDays": tenant.ingest_horizon_days,
                "keys": [str(k) for k in tenant.key_ids],
            }
        )
    finally:
        stores.close()
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        scopes = parse_scopes([s.strip() for s in args.scopes.split(",") if s.strip()])
        issued = stores.app.issue_api_key(tenant_id_for(args.tenant), scopes)
        _print(
            {
                "id": str(issued.key_id),
                "key": issued.secret,
                "scopes": sorted(s.value for s in issued.scopes),
                "note": "store this key now: it is kept only as a hash and cannot be shown again",
            }
        )
    finally:
        stores.close()
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        try:
            key_id = UUID(args.key_id)
        except ValueError:
            raise StripeMeterError(f"{args.key_id!r} is not a key id") from None
        stores.app.revoke_api_key(tenant_id_for(args.tenant), key_id, args.reason)
        _print({"id": str(key_id), "revoked": True})
    finally:
        stores.close()
    return 0


def cmd_meters_create(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        meter, created = declare_meter(
            stores.app,
            tenant_id_for(args.tenant),
            name=args.name,
            aggregation=args.aggregation,
            unit=args.unit,
            lateness_window_seconds=args.lateness_window_seconds,
            stripe_event_name=args.stripe_event_name,
            allow_negative=args.allow_negative,
        )
        _print({"name": meter.name, "created": created})
    finally:
        stores.close()
    return 0


def cmd_meters_list(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        _print_json(list_meters(stores.app, tenant_id_for(args.tenant)))
    finally:
        stores.close()
    return 0


def _mapping_service(settings: Settings, stores: Stores) -> StripeMappingService:
    gateways = cli_gateways(settings)
    return StripeMappingService(
        stores.app,
        gateways[Target.LIVE],
        gateways.get(Target.SHADOW),
        pushed_open=stores.views.ledger,
    )


def cmd_mappings_create(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        mapping, changed = _mapping_service(settings, stores).map_meter(
            tenant_id_for(args.tenant),
            args.metric,
            stripe_meter_id=args.stripe_meter_id,
            stripe_event_name=args.stripe_event_name,
            create_meter=args.create_meter,
            shadow_event_name=args.shadow_event_name,
        )
        metric = stores.app.metric(tenant_id_for(args.tenant), args.metric)
        _print_with(mapping_out(mapping, metric), changed=changed)
    finally:
        stores.close()
    return 0


def cmd_mappings_list(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        tenant = stores.app.tenant_by_slug(args.tenant)
        _print_json(
            [mapping_out(m, tenant.metrics[m.metric]) for _, m in sorted(tenant.mappings.items())]
        )
    finally:
        stores.close()
    return 0


def cmd_mappings_delete(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        tenant_id = tenant_id_for(args.tenant)
        mapping = _mapping_service(settings, stores).unmap_meter(tenant_id, args.metric)
        _print_with(mapping_out(mapping, stores.app.metric(tenant_id, args.metric)), unmapped=True)
    finally:
        stores.close()
    return 0


def cmd_customers_unmap(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        customer = _mapping_service(settings, stores).unmap_customer(
            tenant_id_for(args.tenant), args.customer_ref
        )
        _print_with(customer_out(customer), unmapped=True)
    finally:
        stores.close()
    return 0


def cmd_customers_map(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        anchor = parse_time("--anchor", args.anchor) if args.anchor else None
        customer, changed = _mapping_service(settings, stores).map_customer(
            tenant_id_for(args.tenant),
            args.customer_ref,
            args.stripe_customer_id,
            anchor,
            args.shadow_stripe_customer_id,
        )
        _print_with(customer_out(customer), changed=changed)
    finally:
        stores.close()
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    try:
        audit = build_audit(
            stores,
            tenant_id_for(args.tenant),
            args.customer_ref,
            args.metric,
            args.period,
            args.push,
            args.cursor,
        )
        _print_json(audit)
    finally:
        stores.close()
    return 0


def cmd_demo_parity(settings: Settings, args: argparse.Namespace) -> int:
    """The demo is a tool beside the service (tools/demo): loaded only when it runs."""
    from tools.demo.command import run_parity  # noqa: PLC0415 - the service never imports it

    return run_parity(settings, drift=args.drift, keep=args.keep, as_json=args.json)


def add_demo_parser(sub: Any) -> None:
    demos = sub.add_parser("demo", help="runnable demonstrations").add_subparsers(
        dest="demo", required=True
    )
    parity = demos.add_parser(
        "parity",
        help="one billing cycle against the Stripe emulator: local total vs Stripe's invoice",
        description="One billing cycle on a test clock, end to end: usage over HTTP (a retried"
        " duplicate, an operator credit, a late event, one after the close), Stripe's signed"
        " invoice webhooks, and StripeMeter's recorded parity beside Stripe's finalised invoice."
        " Exit 0 on parity, 1 on a mismatch, 2 when the demo cannot set up or finish.",
    )
    parity.add_argument(
        "--drift",
        action="store_true",
        help="also send Stripe a meter event behind StripeMeter's back (a mismatch, exit 1)",
    )
    parity.add_argument("--keep", action="store_true", help="keep the data folder; print where")
    parity.add_argument("--json", action="store_true", help="print the final block as JSON")
    parity.set_defaults(run=cmd_demo_parity)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="stripemeter", description=__doc__)
    root.add_argument("--version", action="version", version=f"stripemeter {version()}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (and, embedded, the worker)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=cmd_serve)

    writer = sub.add_parser("writer", help="the writer process that `serve` starts beside it")
    writer.add_argument("--socket", required=True)
    writer.add_argument("--parent", type=int, help="exit when this process (serve) dies")
    writer.set_defaults(run=cmd_writer)

    worker = sub.add_parser("worker", help="projections and Stripe pushes (production)")
    worker.add_argument(
        "--no-projections", action="store_true", help="only push (another worker projects)"
    )
    worker.add_argument(
        "--no-pushes", action="store_true", help="only project (another worker pushes)"
    )
    worker.set_defaults(run=cmd_worker)

    # Handled before parsing (see main): its flags belong to the emulator.
    sub.add_parser(
        "emulator", help="run the local Stripe emulator (e.g. --port 12111; --help for its flags)"
    )

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("migrate", help="create every missing table").set_defaults(run=cmd_db_migrate)

    tenants = sub.add_parser("tenants").add_subparsers(dest="tenants", required=True)
    create = tenants.add_parser("create", help="register a tenant under a unique slug")
    create.add_argument("slug")
    create.add_argument("--name")
    create.set_defaults(run=cmd_tenants_create)
    show = tenants.add_parser("show")
    show.add_argument("slug")
    show.set_defaults(run=cmd_tenants_show)

    keys = sub.add_parser("keys").add_subparsers(dest="keys", required=True)
    kcreate = keys.add_parser("create", help="issue an API key (shown once)")
    kcreate.add_argument("--tenant", required=True, help="tenant slug")
    kcreate.add_argument(
        "--scopes", default="ingest,read", help="comma-separated: ingest,read,admin,widget:mint"
    )
    kcreate.set_defaults(run=cmd_keys_create)
    krevoke = keys.add_parser("revoke")
    krevoke.add_argument("key_id")
    krevoke.add_argument("--tenant", required=True, help="tenant slug")
    krevoke.add_argument("--reason", default="revoked by operator")
    krevoke.set_defaults(run=cmd_keys_revoke)

    meters = sub.add_parser("meters").add_subparsers(dest="meters", required=True)
    mcreate = meters.add_parser("create", help="declare a metric")
    mcreate.add_argument("--tenant", required=True, help="tenant slug")
    mcreate.add_argument("--name", required=True)
    mcreate.add_argument("--aggregation", required=True, help="sum, count, max or last")
    mcreate.add_argument("--unit", default="unit")
    mcreate.add_argument("--lateness-window-seconds", type=int, default=DEFAULT_LATENESS_SECONDS)
    mcreate.add_argument("--stripe-event-name")
    mcreate.add_argument("--allow-negative", action="store_true")
    mcreate.set_defaults(run=cmd_meters_create)
    mlist = meters.add_parser("list")
    mlist.add_argument("--tenant", required=True, help="tenant slug")
    mlist.set_defaults(run=cmd_meters_list)
    mappings = sub.add_parser("mappings").add_subparsers(dest="mappings", required=True)
    mapc = mappings.add_parser("create", help="map a metric to a Stripe meter (checked)")
    mapc.add_argument("--tenant", required=True, help="tenant slug")
    mapc.add_argument("--metric", required=True)
    mapc.add_argument("--stripe-meter-id")
    mapc.add_argument("--stripe-event-name")
    mapc.add_argument("--create-meter", action="store_true", help="create it when missing")
    mapc.add_argument("--shadow-event-name", help="shadow mode: the test account's meter")
    mapc.set_defaults(run=cmd_mappings_create)
    mapd = mappings.add_parser("delete", help="unmap a metric: stop pushing it, release its meter")
    mapd.add_argument("--tenant", required=True, help="tenant slug")
    mapd.add_argument("--metric", required=True)
    mapd.set_defaults(run=cmd_mappings_delete)
    mapl = mappings.add_parser("list")
    mapl.add_argument("--tenant", required=True, help="tenant slug")
    mapl.set_defaults(run=cmd_mappings_list)

    customers = sub.add_parser("customers").add_subparsers(dest="customers", required=True)
    cmap = customers.add_parser("map", help="map a customer to a Stripe customer (checked)")
    cmap.add_argument("--tenant", required=True, help="tenant slug")
    cmap.add_argument("--customer-ref", required=True)
    cmap.add_argument("--stripe-customer-id", required=True)
    cmap.add_argument("--anchor", help="billing cycle anchor (RFC 3339); default: Stripe's")
    cmap.add_argument("--shadow-stripe-customer-id")
    cmap.set_defaults(run=cmd_customers_map)
    cunmap = customers.add_parser(
        "unmap", help="unmap a customer: stop pushing it, release its Stripe customer"
    )
    cunmap.add_argument("--tenant", required=True, help="tenant slug")
    cunmap.add_argument("--customer-ref", required=True)
    cunmap.set_defaults(run=cmd_customers_unmap)

    audit = sub.add_parser("audit", help="trace one invoice line: counter, pushes, events")
    audit.add_argument("--tenant", required=True, help="tenant slug")
    audit.add_argument("--customer-ref", required=True)
    audit.add_argument("--metric", required=True)
    audit.add_argument(
        "--period",
        help="the period as the API names it: YYYY-MM (calendar customer) or its start"
        " YYYY-MM-DDTHH:MM:SSZ (anchored customer); default: now",
    )
    audit.add_argument("--push", help="<target>:<number> or 'unpushed', to page its events")
    audit.add_argument("--cursor")
    audit.set_defaults(run=cmd_audit)
    add_config_parser(sub)
    add_import_parser(sub)
    add_ownership_parser(sub)
    add_projections_parser(sub)
    add_reconcile_parsers(sub, tenants)
    add_replay_parser(sub)
    add_demo_parser(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        return stripe_emulator.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"stripemeter: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The SDK logs every request at INFO; our own push log lines say what matters.
    logging.getLogger("stripe").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )
    try:
        code: int = args.run(settings, args)
    except (StripeMeterError, SettingsError, FieldError, StripeError) as error:
        print(f"stripemeter: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
