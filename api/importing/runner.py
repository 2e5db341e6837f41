"""The import loop: read a batch of rows, send it, record what became of it, checkpoint.

The order of one step is what makes an import resumable and exactly-once:

1. the batch is sent and the service answers each event (committed before
   it answers: nothing acknowledged is lost);
2. its conflicts and errors are appended to the errors file, flushed to disk;
3. the checkpoint moves past the batch (with the errors file's new size).

With ``in_flight`` above 1 the next batches are sent while one waits for its
answer, and the steps 2 and 3 of each still happen in file order.

A crash before 3 leaves the checkpoint before the batch: the resumed import
cuts the errors file back to the size the checkpoint recorded and sends the
batch again, and the service answers its events ``duplicate``. A stop asked
for (Ctrl-C, SIGTERM) sends no new batch and records those in flight.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from api.importing.checkpoint import VERSION, Checkpoint, CheckpointFile, Tally
from api.importing.rows import Position, Row
from api.importing.senders import Result, Sender

OUTCOMES = {"accepted": "accepted", "duplicate": "duplicates", "conflict": "conflicts"}


class ErrorsFile:
    """One JSON line per row not counted: its place, the row, the status, field and reason."""

    def __init__(self, path: Path, keep: int | None) -> None:
        """``keep``: the bytes to keep of an earlier run's file (resumed); None: start it anew."""
        self.path = path
        self.out: BinaryIO | None = None
        self.size = 0
        if keep is not None and path.exists():
            with open(path, "r+b") as existing:
                self.size = min(keep, existing.seek(0, os.SEEK_END))
                existing.truncate(self.size)
        elif path.exists():
            path.unlink()

    def write(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        if self.out is None:
            self.out = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        data = b"".join(msgspec.json.encode(e) + b"\n" for e in entries)
        self.out.write(data)
        self.out.flush()
        os.fsync(self.out.fileno())
        self.size += len(data)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


@dataclass
class Run:
    """What one run of ``import`` did (``tally``) and where it stopped."""

    tally: Tally
    position: Position
    seconds: float
    complete: bool  # the end of the input was reached


@dataclass
class Importer:
    sender: Sender
    errors: ErrorsFile
    batch_size: int
    checkpoint: CheckpointFile | None = None
    in_flight: int = 1  # requests sent at once
    source: str = ""
    format: str = ""
    history: bool = False  # sent with --history (the checkpoint says so, for a resume)
    before: Tally | None = None  # what earlier runs of a resumed import did
    progress: Callable[[Position, Tally], None] = lambda position, tally: None
    stop_requested: Callable[[], bool] = lambda: False

    def run(self, rows: Iterator[Row], start: Position) -> Run:
        """Send ``rows`` in batches, ``in_flight`` requests at a time, each recorded in order.

        Batches are answered in any order but recorded (errors file, then
        checkpoint) in file order, so the checkpoint never passes a batch
        that has no answer yet. A stop asked for sends no new batch and
        records those in flight.
        """
        tally = Tally()
        position = start
        started = time.perf_counter()
        pending: deque[tuple[list[Row], Future[list[Result]]]] = deque()
        reading = True
        pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="import-send")
        try:
            while True:
                while reading and len(pending) < self.in_flight and not self.stop_requested():
                    batch = list(islice(rows, self.batch_size))
                    if not batch:
                        reading = False
                        break
                    pending.append((batch, pool.submit(self._send, batch)))
                if not pending:
                    break
                batch, answer = pending.popleft()
                self._record(batch, answer.result(), tally)
                position = batch[-1].after
                self._save(position, tally)
                self.progress(position, tally)
        finally:
            # Stopping early (an error, Ctrl-C twice): what is in flight is answered and
            # dropped; the service counted it, a resumed import is told ``duplicate``.
            pool.shutdown(wait=True, cancel_futures=True)
        complete = not reading or next(rows, None) is None
        return Run(tally, position, time.perf_counter() - started, complete)

    def _send(self, batch: list[Row]) -> list[Result]:
        events = [row.event for row in batch if row.event is not None]
        return self.sender.send(events) if events else []

    def _record(self, batch: list[Row], results: list[Result], tally: Tally) -> None:
        sendable = [row for row in batch if row.event is not None]
        answered = dict(zip((row.number for row in sendable), results, strict=True))
        entries = []
        for row in batch:
            tally.rows += 1
            result = answered.get(row.number)
            if result is None:  # refused here: not sendable
                assert row.problem is not None
                result = {"status": "error", "field": row.problem.field}
                result["reason"] = row.problem.reason
            status = result["status"]
            if status in OUTCOMES:
                setattr(tally, OUTCOMES[status], getattr(tally, OUTCOMES[status]) + 1)
            elif status != "valid":  # a dry run's verdict
                tally.rejected += 1
            if status == "accepted" and (late := result.get("late")) == "history":
                tally.history += 1  # counted in its own period as history, not late usage
            elif status == "accepted" and late:
                tally.late[late] = tally.late.get(late, 0) + 1
            if status in ("conflict", "error"):
                entries.append(_entry(row, result))
        self.errors.write(entries)

    def _save(self, position: Position, tally: Tally) -> None:
        if self.checkpoint is None:
            return
        total = Tally()
        if self.before is not None:
            total.add(self.before)
        total.add(tally)
        self.checkpoint.save(
            Checkpoint(
                version=VERSION,
                source=self.source,
                format=self.format,
                offset=position.offset,
                rows=position.rows,
                lines=position.lines,
                errors_size=self.errors.size,
                tally=total,
                history=self.history,
            )
        )


def _entry(row: Row, result: Result) -> dict[str, Any]:
    entry: dict[str, Any] = {"row": row.number, "line": row.line, "status": result["status"]}
    for name in ("field", "reason", "idempotencyKey"):
        if result.get(name) is not None:
            entry[name] = result[name]
    entry["input"] = row.source
    return entry
