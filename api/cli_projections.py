"""``stripemeter projections rebuild``: derive the views again from the event log.

The rebuild fills a shadow copy while the live views keep serving, then swaps
it in (or, with ``--dry-run``, compares it with them and drops it); see
``projections/rebuild.py`` and docs/operations.md. Progress goes to stderr,
the summary to stdout as JSON, like every other command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from adapters.persistence import build_views, open_stores
from adapters.settings import Settings
from api.progress import ProgressBar
from projections.base import BatchProjection
from projections.rebuild import (
    Rebuild,
    RebuildError,
    RebuildReport,
    UnknownProjectionError,
)
from projections.store import StoreBusyError, ViewStore

SAMPLES_SHOWN = 20


def add_parser(sub: Any) -> None:
    """Add ``projections rebuild`` to the ``stripemeter`` command's subcommands."""
    group = sub.add_parser("projections", help="the views derived from the event log")
    commands = group.add_subparsers(dest="projections", required=True)
    rebuild = commands.add_parser(
        "rebuild",
        help="rebuild views from the event log beside the live ones, then swap them in",
        description="Rebuild views from the event log into a shadow copy while the live"
        " views keep serving, then swap it in (one transaction) or, with --dry-run,"
        " compare it with them. Interrupted, it resumes where it stopped.",
    )
    rebuild.add_argument(
        "--projection",
        action="append",
        default=[],
        metavar="NAME",
        help="rebuild only this projection (repeatable; default: all)",
    )
    rebuild.add_argument(
        "--dry-run",
        action="store_true",
        help="compare with the live views and change nothing (exit 1 when they differ)",
    )
    rebuild.add_argument(
        "--batch-size",
        type=_positive,
        default=50_000,
        metavar="N",
        help="log entries per transaction (default 50000); memory grows with it,"
        " the round trips per event shrink",
    )
    rebuild.add_argument(
        "--restart",
        action="store_true",
        help="discard what an interrupted rebuild left instead of resuming it",
    )
    rebuild.set_defaults(run=cmd_projections_rebuild)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_projections_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_stores(settings)
    bar = ProgressBar("events")

    def build(store: ViewStore) -> list[BatchProjection]:
        return build_views(stores.app, store).runner.projections

    try:
        rebuild = Rebuild(
            stores.app.recorder,
            stores.app.mapper,
            stores.views.store,
            stores.views.runner.projections,
            build,
            names=args.projection,
            batch_size=args.batch_size,
            progress=lambda p: bar.update(p.done, p.total),
            notice=bar.notice,
        )
        report = rebuild.run(dry_run=args.dry_run, restart=args.restart)
    except UnknownProjectionError as error:
        print(f"stripemeter: {error}", file=sys.stderr)
        return 2
    except (RebuildError, StoreBusyError) as error:
        bar.finish()
        print(f"stripemeter: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.finish()
        print(
            "stripemeter: interrupted; the batches done are kept: run the same command"
            " again to resume (--restart to start over)",
            file=sys.stderr,
        )
        return 130
    finally:
        stores.close()
    bar.finish()
    _explain(report, sys.stderr)
    print(json.dumps(summary(report), indent=2, default=str))
    return 1 if report.dry_run and report.differences else 0


def summary(report: RebuildReport) -> dict[str, Any]:
    """The command's JSON output."""
    out: dict[str, Any] = {
        "projections": report.projections,
        "dryRun": report.dry_run,
        "complete": report.complete,
        "resumedFrom": report.resumed_from,
        "positions": report.positions,
        "events": report.events,
        "seconds": round(report.seconds, 3),
        "eventsPerSecond": round(report.events / report.seconds, 1) if report.seconds else None,
    }
    if report.dry_run:
        out["tables"] = [
            {
                "table": t.table,
                "liveRows": t.live_rows,
                "shadowRows": t.shadow_rows,
                "onlyLive": t.only_live,
                "onlyShadow": t.only_shadow,
                "differing": t.differing,
                "ignoredColumns": t.ignored_columns,
                "samples": t.samples,
            }
            for t in report.tables
        ]
        out["differences"] = report.differences
    else:
        out["swapped"] = report.swapped
        out["liveCaughtUp"] = report.live_caught_up
    return out


def _explain(report: RebuildReport, stream: TextIO) -> None:
    if not report.dry_run:
        return
    for table in report.tables:
        print(
            f"{table.table}: {table.live_rows:,} rows live, {table.shadow_rows:,} rebuilt;"
            f" {table.only_live:,} only live, {table.only_shadow:,} only rebuilt,"
            f" {table.differing:,} differing",
            file=stream,
        )
    samples = [(t.table, s) for t in report.tables for s in t.samples]
    for name, sample in samples[:SAMPLES_SHOWN]:
        print(f"  {name} {json.dumps(sample, default=str)}", file=stream)
    if len(samples) > SAMPLES_SHOWN:
        print(f"  … {len(samples) - SAMPLES_SHOWN} more samples in the JSON", file=stream)
    where = ", ".join(f"{name} {position:,}" for name, position in report.positions.items())
    verdict = (
        f"{report.differences:,} rows differ" if report.differences else "the views are identical"
    )
    print(f"compared at log position {where}: {verdict}", file=stream)
