"""``stripemeter import FILE|-``: usage history from CSV or JSONL, through the ingest API.

Rows go to a running service as ``POST /v1/events/ingest`` batches with an
API key, exactly as any client sends them (``api/importing/senders.py``):
each event gets the route's own result, and an event sent twice counts
once. A checkpoint saved after each batch the service answered lets an
interrupted import resume; see docs/import.md. Progress goes to stderr, the
summary to stdout as JSON, like every other command.

Exit status: 0 every row counted (accepted, or a duplicate of one counted
before); 1 some rows were not (refused, or a conflict: the errors file lists
them); 2 the import cannot start (arguments, the file, its header, its
checkpoint); 3 the service refused the key or kept failing (the checkpoint
stands: run the same command again); 130 stopped by Ctrl-C or SIGTERM after
the batch in flight (the checkpoint stands).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from adapters.settings import Settings
from api.importing.checkpoint import CheckpointFile, Tally
from api.importing.rows import FORMATS, ImportFileError, Position, format_of, rows
from api.importing.runner import ErrorsFile, Importer, Run
from api.importing.senders import DryRunSender, HttpSender, ImportAbortedError, Sender
from api.progress import ProgressBar

MAX_BATCH = 10_000
IN_FLIGHT = 1


def add_parser(sub: Any) -> None:
    """Add ``import`` to the ``stripemeter`` command's subcommands."""
    command = sub.add_parser(
        "import",
        help="import usage history from CSV or JSONL through the ingest API (resumable)",
        description="Send usage events from a CSV or JSONL file (or - for stdin) to a running"
        " service's ingest API, in batches, each counted once; resumable from a checkpoint."
        " Exit 0: every row counted; 1: some rows refused or in conflict (see the errors"
        " file); 2: cannot start; 3: the service refused the key or kept failing; 130:"
        " interrupted. See docs/import.md.",
    )
    command.add_argument("file", help="a .csv or .jsonl file, or - to read stdin (no resume)")
    command.add_argument("--format", choices=FORMATS, help="default: the file's extension")
    command.add_argument(
        "--url", help="the service (default $STRIPEMETER_API_URL, else this host's port)"
    )
    command.add_argument(
        "--api-key", help="a key with scope ingest (default $STRIPEMETER_API_KEY, preferred)"
    )
    command.add_argument(
        "--batch-size",
        type=_batch_size,
        default=1_000,
        metavar="N",
        help="events per request and per checkpoint (default 1000; the service's"
        " STRIPEMETER_MAX_BATCH_EVENTS is the most it takes)",
    )
    command.add_argument(
        "--in-flight",
        type=_in_flight,
        default=IN_FLIGHT,
        metavar="N",
        help=f"requests sent at once (default {IN_FLIGHT}); batches are still checkpointed"
        " in file order",
    )
    command.add_argument("--checkpoint", type=Path, help="default: FILE.checkpoint")
    command.add_argument(
        "--restart", action="store_true", help="ignore a checkpoint: import from the first row"
    )
    command.add_argument(
        "--errors", type=Path, help="rows not counted, as JSON lines (default FILE.errors.jsonl)"
    )
    command.add_argument(
        "--dry-run",
        action="store_true",
        help="read and check every row with the ingest route's field rules; send nothing",
    )
    command.add_argument(
        "--tenant", help="dry run: the tenant (slug) that a row's own tenantId must name"
    )
    command.add_argument(
        "--history",
        action="store_true",
        help="import rows older than the ingest horizon as history: counted in their own"
        " ended periods, never pushed to Stripe (needs a key with scope admin)",
    )
    command.set_defaults(run=cmd_import)


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH}")
    return value


def _in_flight(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError("must be between 1 and 8")
    return value


class StopFlag:
    """Ctrl-C (or SIGTERM) once: stop after the batch in flight. Twice: stop now."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.bar.notice(
            "stopping after the batches in flight (Ctrl-C again to stop now; the checkpoint"
            " of the last batch answered stands either way)"
        )


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    try:
        return _import(settings, args)
    except ImportFileError as error:
        print(f"stripemeter: {error}", file=sys.stderr)
        return 2
    except ImportAbortedError as error:
        print(
            f"stripemeter: import stopped: {error}; the checkpoint stands: run the same"
            " command again to resume",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:  # Ctrl-C twice
        print(
            "stripemeter: stopped at once; the checkpoint of the last batch answered stands",
            file=sys.stderr,
        )
        return 130


def _import(settings: Settings, args: argparse.Namespace) -> int:
    stdin = args.file == "-"
    fmt = format_of("stdin" if stdin else args.file, args.format)
    source = Path(args.file).resolve() if not stdin else None
    if stdin and args.checkpoint is not None:
        raise ImportFileError("stdin cannot be resumed: --checkpoint needs a file")
    if source is not None and not source.is_file():
        raise ImportFileError(f"no such file: {args.file}")
    checkpoint = None
    if source is not None and not args.dry_run:
        default = source.with_name(source.name + ".checkpoint")
        checkpoint = CheckpointFile(args.checkpoint or default)
    saved = None
    if checkpoint is not None and not args.restart and source is not None:
        saved = checkpoint.load(source, fmt, args.history)
    # A dry run's list has a name of its own: it must not replace a real import's.
    suffix = ".dry-run.errors.jsonl" if args.dry_run else ".errors.jsonl"
    name = (source.name if source else "stdin") + suffix
    errors_path = args.errors or (source.with_name(name) if source else Path(name))
    sender = _sender(settings, args)
    bar = ProgressBar("rows")
    stop = StopFlag(bar)
    start = saved.position if saved is not None else Position()
    total = source.stat().st_size if source is not None else None

    def progress(position: Position, tally: Tally) -> None:
        done = position.offset - start.offset
        bar.update(done, None if total is None else total - start.offset, tally.rows)

    with ExitStack() as stack:
        stack.callback(sender.close)
        errors = ErrorsFile(errors_path, saved.errors_size if saved is not None else None)
        stack.callback(errors.close)
        stream: BinaryIO = (
            stack.enter_context(open(source, "rb")) if source is not None else sys.stdin.buffer
        )
        if saved is not None:
            bar.notice(
                f"resuming after row {saved.rows:,} (byte {saved.offset:,}) of {source}: the"
                " rows before it were answered in an earlier run (--restart to start over)"
            )
        importer = Importer(
            sender,
            errors,
            args.batch_size,
            checkpoint,
            in_flight=args.in_flight,
            source=str(source) if source else "-",
            format=fmt,
            history=args.history,
            before=saved.tally if saved is not None else None,
            progress=progress,
            stop_requested=lambda: stop.requested,
        )
        previous = [signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)]
        stack.callback(signal.signal, signal.SIGTERM, previous[1])
        stack.callback(signal.signal, signal.SIGINT, previous[0])
        stack.callback(bar.finish)
        run = importer.run(rows(stream, fmt, start), start)
    if run.complete and checkpoint is not None:
        checkpoint.remove()  # done: the same command imports the file again (all duplicates)
    everything = Tally()
    if saved is not None:
        everything.add(saved.tally)
    everything.add(run.tally)
    out = summary(run, args, fmt, saved is not None, start, everything, errors_path, errors.size)
    _explain(out, args.dry_run, checkpoint is not None)
    print(json.dumps(out, indent=2))
    if not run.complete:
        return 130
    return 1 if everything.rejected or everything.conflicts else 0


def _sender(settings: Settings, args: argparse.Namespace) -> Sender:
    if args.dry_run:
        return DryRunSender(args.tenant, MAX_BATCH)
    key = args.api_key or settings.api_key
    if not key:
        raise ImportFileError("no API key: set STRIPEMETER_API_KEY (or pass --api-key)")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = args.url or settings.api_url or f"http://{host}:{settings.port}"
    return HttpSender(url, key, history=args.history)


def summary(
    run: Run,
    args: argparse.Namespace,
    fmt: str,
    resumed: bool,
    start: Position,
    everything: Tally,
    errors_path: Path,
    errors_size: int,
) -> dict[str, Any]:
    """The command's JSON output: this run's counts, and the whole file's when resumed."""
    tally = run.tally
    out: dict[str, Any] = {
        "source": args.file,
        "format": fmt,
        "dryRun": args.dry_run,
        "complete": run.complete,
        "resumedFrom": {"row": start.rows, "offset": start.offset} if resumed else None,
        "rowsRead": tally.rows,
    }
    if args.dry_run:
        out["valid"] = tally.rows - tally.rejected
    else:
        out |= {
            "accepted": tally.accepted,
            "duplicates": tally.duplicates,
            "conflicts": tally.conflicts,
            "history": tally.history,
        }
    out |= {
        "rejected": tally.rejected,
        "late": tally.late,
        "seconds": round(run.seconds, 3),
        "rowsPerSecond": round(tally.rows / run.seconds, 1) if run.seconds else None,
        "errorsFile": str(errors_path) if errors_size else None,
    }
    if resumed:
        out["wholeFile"] = {
            "rows": everything.rows,
            "accepted": everything.accepted,
            "duplicates": everything.duplicates,
            "conflicts": everything.conflicts,
            "history": everything.history,
            "rejected": everything.rejected,
        }
    return out


def _explain(out: dict[str, Any], dry_run: bool, resumable: bool) -> None:
    counts = (
        f"{out['valid']:,} valid"
        if dry_run
        else f"{out['accepted']:,} accepted ({out['history']:,} as history),"
        f" {out['duplicates']:,} duplicate,"
        f" {out['conflicts']:,} in conflict"
    )
    rate = f" ({out['rowsPerSecond']:,.0f} rows/s)" if out["rowsPerSecond"] else ""
    where = f" (listed in {out['errorsFile']})" if out["errorsFile"] else ""
    verb = "checked" if dry_run else "imported"
    print(
        f"stripemeter: {verb} {out['rowsRead']:,} rows in {out['seconds']:,.1f} s{rate}:"
        f" {counts}, {out['rejected']:,} rejected{where}",
        file=sys.stderr,
    )
    if not out["complete"]:
        then = (
            "run the same command again to resume from the checkpoint"
            if resumable
            else "nothing to resume from (a dry run or stdin keeps no checkpoint)"
        )
        print(f"stripemeter: interrupted; {then}", file=sys.stderr)
