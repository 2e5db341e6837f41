"""``stripemeter config apply FILE``: a tenant's metrics, mappings and alerts from a TOML file.

The whole file is read and checked first, then compared with what the
tenant has (api/config_plan.py); the diff is printed, one line per item (or,
with ``--json``, as JSON), and applied unless ``--dry-run``. Exit 0 when the
tenant now says what the file says, 1 when the file or a change is refused
(the message names the file, the table and the key). docs/config-file.md
describes every key.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adapters.persistence import open_stores
from adapters.settings import Settings
from api.cli_reconcile import cli_gateways
from api.config_file import read_config
from api.config_plan import mapping_service_for, run_config


def cmd_config_apply(settings: Settings, args: argparse.Namespace) -> int:
    config = read_config(Path(args.file))
    stores = open_stores(settings)
    try:
        service = mapping_service_for(stores, lambda: cli_gateways(settings))
        say = (lambda _: None) if args.json else print
        the_plan, made = run_config(
            stores.app, config, args.tenant, service, say, dry_run=args.dry_run
        )
        if args.json:
            items = [
                {"place": s.place, "action": s.action, "detail": s.detail} for s in the_plan.steps
            ]
            out = {"file": config.path, "tenant": the_plan.slug, "dryRun": args.dry_run}
            print(json.dumps({**out, "items": items, "applied": [s.place for s in made]}, indent=2))
    finally:
        stores.close()
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
    apply.add_argument(
        "--json", action="store_true", help="print the diff and what was applied as JSON"
    )
    apply.set_defaults(run=cmd_config_apply)
