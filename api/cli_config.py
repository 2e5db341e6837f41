"""``stripemeter config apply FILE``: a tenant's metrics, mappings and alerts from a TOML file.

The whole file is read and checked first, then compared with what the
tenant has (api/config_plan.py); the diff is printed, one line per item, and
applied unless ``--dry-run``. Exit 0 when the tenant now says what the file
says, 1 when the file or a change is refused (the message names the file, the
table and the key). docs/config-file.md describes every key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adapters.persistence import open_stores
from adapters.settings import Settings
from api.cli_reconcile import cli_gateways
from api.config_file import read_config
from api.config_plan import apply_plan, plan
from domain.pushing import Target
from domain.stripe_mapping import StripeMappingService


def apply_config_file(settings: Settings, path: Path, slug: str | None, dry_run: bool) -> None:
    """Read, check, diff and (unless ``dry_run``) apply ``path``, printing what it does.

    Raises ``ConfigError`` (the file, or a change the domain refuses: nothing
    applied) or ``ApplyError`` (refused midway: it says what was applied).
    """
    config = read_config(path)
    stores = open_stores(settings)
    try:

        def mapping_service() -> StripeMappingService:
            gateways = cli_gateways(settings)
            return StripeMappingService(
                stores.app,
                gateways[Target.LIVE],
                gateways.get(Target.SHADOW),
                pushed_open=stores.views.ledger,
            )

        the_plan = plan(stores.app, config, slug, mapping_service)
        print(f"{config.path} for tenant {the_plan.slug}:")
        for step in the_plan.steps:
            print(step.line())
        print(the_plan.summary())
        if dry_run:
            print("dry run: nothing changed")
            return
        if not the_plan.changes:
            print("nothing to change")
            return
        made = apply_plan(the_plan)
        print(f"applied {len(made)} changes")
    finally:
        stores.close()


def cmd_config_apply(settings: Settings, args: argparse.Namespace) -> int:
    apply_config_file(settings, Path(args.file), args.tenant, args.dry_run)
    return 0


def add_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="declarative configuration").add_subparsers(
        dest="config", required=True
    )
    apply = config.add_parser(
        "apply",
        help="make a tenant's metrics, Stripe mappings and alerts what a TOML file says",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("file", help="the TOML file (see docs/config-file.md)")
    apply.add_argument("--tenant", help="tenant slug (default: the file's [tenant] slug)")
    apply.add_argument("--dry-run", action="store_true", help="print the diff and change nothing")
    apply.set_defaults(run=cmd_config_apply)
