"""``stripemeter replay``: derive one tenant's counters again from the event log.

The same replay as ``POST /v1/replay`` (see projections/replay.py), every page
to the end: a line per page on stderr, then one JSON document on stdout in
the API's shape (``nextCursor`` is always null). A dry run exits 1 when
something differs, so that a script can tell. Counters that ``--apply``
changed are pushed by the push worker's sweep (this process has no queue).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from adapters.persistence import open_stores
from adapters.settings import Settings
from api.queries.replay import DEFAULT_PAGE, replay_all
from domain.tenancy import tenant_id_for
from projections.replay import ReplayPage


def add_parser(sub: Any) -> None:
    """Add ``replay`` to the ``stripemeter`` command's subcommands."""
    replay = sub.add_parser(
        "replay",
        help="derive counters again from the event log; report (default) or fix (--apply)",
        description="Compare a tenant's counters of the periods overlapping [since, until)"
        " with the counters derived again from the event log; --apply replaces the ones"
        " that differ (their hour buckets too) and leaves their push to the worker's sweep.",
    )
    replay.add_argument("--tenant", required=True, help="tenant slug")
    replay.add_argument("--since", required=True, help="RFC 3339, e.g. 2026-03-01T00:00:00Z")
    replay.add_argument("--until", required=True, help="RFC 3339, exclusive")
    replay.add_argument("--metric", action="append", metavar="M", help="only this metric (repeat)")
    replay.add_argument(
        "--customer", action="append", metavar="C", help="only this customerRef (repeat)"
    )
    replay.add_argument("--apply", action="store_true", help="write the fixes (default: dry run)")
    replay.add_argument(
        "--page-size", type=int, default=DEFAULT_PAGE, metavar="N", help="periods per transaction"
    )
    replay.set_defaults(run=cmd_replay)


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    def report(number: int, page: ReplayPage) -> None:
        done = "applied" if page.applied else "written nothing"
        print(
            f"page {number}: {len(page.counters)} counters, {len(page.changed)} differ;"
            f" {done} (view at log position {page.position:,})",
            file=sys.stderr,
        )

    stores = open_stores(settings)
    try:
        out = replay_all(
            stores,
            stores.app.tenant(tenant_id_for(args.tenant)),
            since=args.since,
            until=args.until,
            apply=args.apply,
            metrics=args.metric,
            customers=args.customer,
            limit=args.page_size,
            on_page=report,
        )
    finally:
        stores.close()
    print(msgspec.json.format(msgspec.json.encode(out)).decode())
    return 1 if out.summary.changed and not args.apply else 0
