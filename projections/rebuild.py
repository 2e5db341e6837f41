"""Rebuild views from the event log into a shadow copy, then compare or swap them in.

The live views keep serving while a rebuild runs: the same projection
classes write into a shadow store (``ViewStore.shadow``: a schema of its own
on PostgreSQL, a file of its own on SQLite) with its own tracking positions,
a batch per transaction, so an interrupted rebuild resumes where it stopped.
Memory stays flat: the log is read a batch at a time, and the comparison and
the swap are SQL statements that the database runs over both copies.

Once the shadow has caught up:

- a dry run compares it with the live views at the *same* log position (the
  live views may be behind the log, or moving while a worker runs), table by
  table, then drops it;
- otherwise one transaction replaces the live rows of each chosen projection
  with the shadow's and sets its live tracking position to the shadow's; the
  live views are then caught up with the normal runner. A runner working
  meanwhile (``stripemeter worker``) is not stopped: its next batch fails the
  tracking compare-and-set (``TrackingConflictError``), is rolled back, and it
  carries on from the swapped-in position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import ApplicationRecorder, Mapper

from projections.base import BatchProjection
from projections.runner import BatchProjectionRunner, TrackingConflictError
from projections.shadow_diff import TableDiff, diff_table
from projections.store import SHADOW, Tx, ViewStore

COMPARE_ATTEMPTS = 20


class RebuildError(RuntimeError):
    """A rebuild cannot go on as asked; the message says why and what to do."""


class UnknownProjectionError(RebuildError):
    """A projection name that none of the views has."""


@dataclass(frozen=True)
class Progress:
    done: int  # log positions behind us since this run started
    total: int  # log positions this run has to pass
    elapsed: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None


@dataclass
class RebuildReport:
    projections: list[str]
    dry_run: bool
    complete: bool  # False when stopped early (``max_batches``): the shadow is kept
    resumed_from: int | None  # the shadow's lowest position when a previous run left one
    positions: dict[str, int]  # where the rebuilt (and compared or swapped) views stand
    events: int  # log positions passed by this run
    seconds: float
    tables: list[TableDiff] = field(default_factory=list)
    swapped: bool = False
    live_caught_up: int = 0  # log entries the live views moved past after the swap

    @property
    def differences(self) -> int:
        return sum(t.differences for t in self.tables)


def choose(projections: Sequence[BatchProjection], names: Sequence[str]) -> list[BatchProjection]:
    """The projections named (all when none is), in the views' own order."""
    known = [p.name for p in projections]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UnknownProjectionError(
            f"unknown projection {', '.join(unknown)}; the projections are: {', '.join(known)}"
        )
    return [p for p in projections if not names or p.name in names]


def with_dependencies(
    projections: Sequence[BatchProjection], chosen: Sequence[BatchProjection]
) -> list[BatchProjection]:
    """``chosen`` plus every projection they read (held as attributes), in the views' order.

    The counters and the usage events look periods up in the directory inside
    their own transaction: rebuilt into a shadow, they need the shadow's
    directory, rebuilt up to their position at least (the live one may lag).
    """
    wanted = {p.name for p in chosen}
    pending = list(chosen)
    while pending:
        for used in vars(pending.pop()).values():
            if isinstance(used, BatchProjection) and used.name not in wanted:
                wanted.add(used.name)
                pending.append(used)
    return [p for p in projections if p.name in wanted]


class Rebuild:
    def __init__(
        self,
        recorder: ApplicationRecorder,
        mapper: Mapper,  # type: ignore[type-arg]
        live: ViewStore,
        projections: Sequence[BatchProjection],
        build: Callable[[ViewStore], Sequence[BatchProjection]],
        names: Sequence[str] = (),
        batch_size: int = 50_000,
        progress: Callable[[Progress], None] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        """``projections`` are the live views; ``build`` makes the same ones over another store."""
        self.recorder = recorder
        self.mapper = mapper
        self.live = live
        self.projections = list(projections)
        self.build = build
        self.chosen = choose(self.projections, names)
        self.batch_size = batch_size
        self.progress = progress or (lambda _: None)
        self.notice = notice or (lambda _: None)

    def run(
        self, *, dry_run: bool = False, restart: bool = False, max_batches: int | None = None
    ) -> RebuildReport:
        """Rebuild the chosen views; compare them (dry run) or swap them in.

        ``max_batches`` stops after that many batches and keeps the shadow, as
        an interruption would (for tests).
        """
        with self.live.exclusive("projection-rebuild"):
            if restart:
                self.live.drop_shadow()
                self.notice("discarded any previous partial rebuild")
            shadow = self.live.shadow()
            try:
                report = self._run(shadow, dry_run, max_batches)
            finally:
                shadow.close()
            if report.complete:
                self.live.drop_shadow()
            return report

    def _run(self, shadow: ViewStore, dry_run: bool, max_batches: int | None) -> RebuildReport:
        names = [p.name for p in self.chosen]
        built = {p.name: p for p in self.build(shadow)}
        needed = with_dependencies(list(built.values()), [built[name] for name in names])
        runner = BatchProjectionRunner(
            self.recorder, self.mapper, shadow, needed, batch_size=self.batch_size
        )
        start = runner.positions()
        first = min(start.values())
        if max(start.values()) > self._head():
            raise RebuildError(
                f"the partial rebuild found is at log position {max(start.values()):,}, past"
                f" the end of this event log ({self._head():,}): it is not this log's; --restart"
            )
        if dry_run:
            target = self._bounds(needed, self._live_positions(names))
            if max(target.values()) < self._head():
                self.notice(
                    f"the live views stand at log position {max(target.values()):,}, the log"
                    f" ends at {self._head():,}: comparing where they stand"
                )
        else:
            target = dict.fromkeys(start, self._head())
        resumed = any(start.values())
        if resumed:
            where = (
                f"log position {first:,}"
                if len(set(start.values())) == 1
                else ", ".join(f"{name} at {position:,}" for name, position in start.items())
            )
            self.notice(
                f"resuming a previous rebuild from {where} of {max(target.values()):,}"
                " (--restart to start over)"
            )
        started = time.monotonic()
        report = RebuildReport(names, dry_run, False, first if resumed else None, {}, 0, 0.0)
        report.complete = self._follow(runner, target, max_batches)
        if report.complete and dry_run:
            report.positions, report.tables = self._compare(runner, shadow, needed)
        elif report.complete:
            # Events written while the bulk ran: a short second pass, so that
            # the swap moves the live views back as little as possible.
            self._follow(runner, dict.fromkeys(start, self._head()))
            report.positions = self._swap(shadow, names)
            report.swapped = True
            report.live_caught_up = self._catch_up_live(names)
        else:
            report.positions = {n: p for n, p in runner.positions().items() if n in names}
        report.events = max(runner.positions().values()) - first
        report.seconds = time.monotonic() - started
        return report

    def _head(self) -> int:
        return self.recorder.max_notification_id() or 0

    # -- following the log into the shadow -------------------------------------

    def _follow(
        self,
        runner: BatchProjectionRunner,
        until: Mapping[str, int],
        max_batches: int | None = None,
    ) -> bool:
        """Run the shadow up to ``until``; False when ``max_batches`` stopped it first."""
        started = time.monotonic()
        first = min(runner.positions().values())
        last = max(until.values())
        total = max(last - first, 0)
        if total:
            self.progress(Progress(0, total, 0.0))
        batches = 0
        while reached := runner.run_until(until):
            batches += 1
            self.progress(Progress(min(reached, last) - first, total, time.monotonic() - started))
            if max_batches is not None and batches >= max_batches:
                positions = runner.positions()
                return all(positions[name] >= bound for name, bound in until.items())
        return True

    def _live_positions(self, names: Sequence[str]) -> dict[str, int]:
        with self.live.transaction() as tx:
            return _tracking(tx, "sm_tracking", names)

    @staticmethod
    def _bounds(needed: Sequence[BatchProjection], chosen: Mapping[str, int]) -> dict[str, int]:
        """Each chosen projection's bound; the ones they read go as far as the furthest."""
        furthest = max(chosen.values(), default=0)
        return {p.name: chosen.get(p.name, furthest) for p in needed}

    # -- dry run ---------------------------------------------------------------

    def _compare(
        self,
        runner: BatchProjectionRunner,
        shadow: ViewStore,
        needed: Sequence[BatchProjection],
    ) -> tuple[dict[str, int], list[TableDiff]]:
        """Compare at one log position: the shadow follows the live views until they agree."""
        names = [p.name for p in self.chosen]
        for _ in range(COMPARE_ATTEMPTS):
            with self.live.beside(shadow, write=False) as tx:
                live = _tracking(tx, "sm_tracking", names)
                rebuilt = _tracking(tx, f"{SHADOW}.sm_tracking", names)
                if live == rebuilt:
                    tables = [t for p in self.chosen for t in p.tables]
                    for table in tables:
                        _columns(self.live, tx, table)
                    return live, [diff_table(self.live, tx, table) for table in tables]
            ahead = [n for n in names if rebuilt[n] > live[n]]
            if ahead:
                raise RebuildError(
                    f"the rebuilt {', '.join(ahead)} went past the live views"
                    f" (log position {max(rebuilt[n] for n in ahead):,} >"
                    f" {min(live[n] for n in ahead):,}): catch the live views up (start the"
                    " worker) and run the dry run again, or --restart it"
                )
            # The live views moved on (a worker is running): follow them.
            self._follow(runner, self._bounds(needed, live))
        raise RebuildError("the live views kept moving; try the dry run again")

    # -- swap ------------------------------------------------------------------

    def _swap(self, shadow: ViewStore, names: Sequence[str]) -> dict[str, int]:
        """Replace the chosen live views and their positions with the shadow's, atomically."""
        with self.live.beside(shadow, write=True) as tx:
            positions = _tracking(tx, f"{SHADOW}.sm_tracking", names)
            # Tracking rows first, in the runner's order: a concurrent runner
            # takes them before it writes any row, so neither waits for a lock
            # the other holds (no deadlock), and it then fails its compare-and-set.
            for name in names:
                tx.execute(
                    "INSERT INTO sm_tracking VALUES (?, ?) ON CONFLICT (projection)"
                    " DO UPDATE SET position = excluded.position",
                    (name, positions[name]),
                )
            for projection in self.chosen:
                for table in projection.tables:
                    columns = ", ".join(_columns(self.live, tx, table))
                    tx.execute(f"DELETE FROM {table}")
                    tx.execute(
                        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {SHADOW}.{table}"
                    )
        self.notice(f"swapped in {', '.join(names)} at log position {max(positions.values()):,}")
        return positions

    def _catch_up_live(self, names: Sequence[str]) -> int:
        live = {p.name: p for p in self.projections}
        runner = BatchProjectionRunner(
            self.recorder,
            self.mapper,
            self.live,
            with_dependencies(self.projections, [live[n] for n in names]),
            batch_size=self.batch_size,
        )
        try:
            return runner.catch_up()
        except TrackingConflictError:
            self.notice("another runner (a worker) is catching the live views up")
            return 0


def _tracking(tx: Tx, table: str, names: Sequence[str]) -> dict[str, int]:
    rows = tx.execute(f"SELECT projection, position FROM {table}")
    stored = {row[0]: int(row[1]) for row in rows}
    return {name: stored.get(name, 0) for name in names}


def _columns(store: ViewStore, tx: Tx, table: str) -> list[str]:
    rebuilt = [c.name for c in store.shadow_columns(tx, table)]
    live = store.live_columns(tx, table)
    if sorted(rebuilt) != sorted(live):
        raise RebuildError(
            f"{table} has other columns live ({', '.join(live)}) than rebuilt"
            f" ({', '.join(rebuilt)}): run `stripemeter db migrate` with this version first"
        )
    return rebuilt
