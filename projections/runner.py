"""Follows the event log and keeps projections up to date, a batch at a time.

Each batch is one transaction: every projection's rows and its tracking
position are written together, so a crash at any point either keeps the
whole batch or none of it, and a restart resumes from the stored position
without counting anything twice.

How the runner learns that the log grew:
- an in-process writer calls ``wake()`` after each commit;
- a ``WakeSource`` (PostgreSQL's LISTEN, adapters/log_listener.py) calls it
  after each commit of any process;
- otherwise it polls every ``poll_interval`` (SQLite's recorder has no
  subscription). While a wake source is connected the poll slows to
  ``safety_interval``: it is only there for a notification that was missed.

Wakes are coalesced: a woken runner starts its next batch no sooner than
``min_batch_interval`` after the end of the last batch that found anything.
With the default (the poll interval) a busy log costs what polling cost (a
batch, then a pause), however many commits wake it; a commit after a quiet
spell starts a batch at once.

One runner at a time follows the log for a set of projections: the
background thread first takes the store's cross-process lock named after
them (``ViewStore.exclusive``: a PostgreSQL advisory lock on a connection of
its own, a lock file on SQLite). Several workers then do not race for the
same batches (each losing one would throw it away and log a conflict); the
others stand by, trying the lock every ``standby_interval``, and one takes
over when the owner stops or dies (its connection closes, its file is shut).
Should two run anyway (the lock's connection lost), the tracking check still
keeps every count exact.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from eventsourcing.persistence import ApplicationRecorder, Mapper

from projections.base import BatchProjection, Positioned
from projections.decoding import EventDecoder
from projections.log_rows import LogRow, log_reader
from projections.store import StoreBusyError, Tx, ViewStore

log = logging.getLogger(__name__)


BatchListener = Callable[[Mapping[str, Sequence[Positioned]], bool], None]
"""Told after each batch commits: every projection's events of the batch (by projection
name), and whether more of the log was waiting (the batch was full, short of the head)."""


class TrackingConflictError(RuntimeError):
    """Another runner moved a projection's position while this one was working."""


class WakeSource(Protocol):
    """Something that calls ``wake`` whenever another process commits to the log."""

    @property
    def connected(self) -> bool:
        """True while every commit is expected to wake the runner (the poll can be slow)."""

    def start(self, wake: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Lag:
    head: int
    positions: dict[str, int]

    @property
    def events(self) -> int:
        return max((self.head - p for p in self.positions.values()), default=0)


class BatchProjectionRunner:
    """Keeps several batch projections over one store up to date (see projections/base.py
    for why this is not eventsourcing's ``ProjectionRunner``)."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        mapper: Mapper,  # type: ignore[type-arg]
        store: ViewStore,
        projections: Sequence[BatchProjection],
        batch_size: int = 2_000,
        poll_interval: float = 0.05,
        *,
        safety_interval: float = 1.0,
        min_batch_interval: float = 0.05,
        wake_source: WakeSource | None = None,
        standby_interval: float = 1.0,
    ) -> None:
        self.recorder = recorder
        self.mapper = mapper
        self.store = store
        self.projections = list(projections)
        self._topics = {
            p.name: frozenset(f"{cls.__module__}:{cls.__qualname__}" for cls in p.handles)
            for p in self.projections
        }
        # The mapper's events, decoded with msgspec where it can (projections/decoding.py).
        self.decoder = EventDecoder(mapper, {c for p in self.projections for c in p.handles})
        self.reader = log_reader(recorder)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.safety_interval = safety_interval
        self.min_batch_interval = min_batch_interval
        self.wake_source = wake_source
        self.standby_interval = standby_interval
        names = ",".join(sorted(p.name for p in self.projections))
        self.lock_name = (
            "projection-runner-" + hashlib.blake2b(names.encode(), digest_size=6).hexdigest()
        )
        # True while this runner's thread holds the lock and follows the log.
        self.owning = False
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        # This runner's view of the tracking positions; re-read after any failure.
        self._positions: dict[str, int] | None = None
        # Told after each committed batch of the live views (alert evaluation); a
        # rebuild, which passes through history, tells no one.
        self.listeners: list[BatchListener] = []
        self._listening = True

    def create_tables(self) -> None:
        with self.store.transaction() as tx:
            tx.execute(
                "CREATE TABLE IF NOT EXISTS sm_tracking"
                " (projection TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            )
        for projection in self.projections:
            projection.create_tables()

    def positions(self) -> dict[str, int]:
        with self.store.transaction() as tx:
            rows = tx.execute("SELECT projection, position FROM sm_tracking")
        stored = {name: int(position) for name, position in rows}
        return {p.name: stored.get(p.name, 0) for p in self.projections}

    def lag(self) -> Lag:
        return Lag(head=self.recorder.max_notification_id() or 0, positions=self.positions())

    def run_once(self) -> int:
        """Process one batch; the number of log entries it moved past (0 when caught up)."""
        positions = self._positions if self._positions is not None else self.positions()
        start = min(positions.values())
        # Every entry up to the head read here is committed (the recorders number
        # them in commit order), so the entries no projection reads are passed too.
        head = self.recorder.max_notification_id() or 0
        self._positions = positions
        if head <= start:
            return 0
        reached = self.run_until(dict.fromkeys(positions, head))
        return reached - start if reached else 0

    def run_until(self, until: Mapping[str, int]) -> int:
        """Process one batch, no projection past its bound; the position reached (0: all there).

        Only the topics these projections handle are read, so the entries
        none of them reads (a key's claim, half the log) cost nothing here,
        and a projection whose bound is reached stops there (a rebuild's
        bounds may differ).
        """
        positions = self._positions if self._positions is not None else self.positions()
        self._positions = None
        behind = [p.name for p in self.projections if positions[p.name] < until[p.name]]
        if not behind:
            self._positions = positions
            return 0
        stop = max(until[name] for name in behind)
        topics = sorted(set().union(*(self._topics[name] for name in behind)))
        rows = self._page(min(positions[name] for name in behind), stop, topics)
        # A short page read every entry up to ``stop`` that these projections
        # handle: they are all done up to there, not just to the last one read.
        head = rows[-1][0] if len(rows) == self.batch_size else stop
        self._apply(positions, rows, head, until)
        return head

    def _page(self, after: int, stop: int, topics: Sequence[str]) -> Sequence[LogRow]:
        if self.reader is not None:
            return self.reader.page(after, stop, topics, self.batch_size)
        notes = self.recorder.select_notifications(
            start=after + 1, limit=self.batch_size, stop=stop, topics=topics
        )
        return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]

    def _apply(
        self,
        positions: dict[str, int],
        rows: Sequence[LogRow],
        head: int,
        until: Mapping[str, int],
    ) -> None:
        """Hand each projection its events in (its position, its end]; move it to its end."""
        ends = {name: min(head, until[name]) for name in self._topics}
        decode = self.decoder.decode
        per_projection: dict[str, list[Positioned]] = {name: [] for name in self._topics}
        wanted = [
            (topics, positions[name], ends[name], per_projection[name])
            for name, topics in self._topics.items()
            if positions[name] < ends[name]
        ]
        for position, originator_id, version, topic, state in rows:
            event = None
            for topics, after, end, events in wanted:
                if after < position <= end and topic in topics:
                    if event is None:
                        event = decode(topic, originator_id, version, state)
                    events.append((position, event))
        with self.store.transaction() as tx:
            for projection in self.projections:
                name = projection.name
                if positions[name] >= ends[name]:
                    continue
                self._advance(tx, name, positions[name], ends[name])
                projection.process(tx, per_projection[name])
        self._positions = {name: max(positions[name], ends[name]) for name in positions}
        if self.listeners and self._listening:
            # More to read: the batch stopped short of the log head it was asked to reach.
            self._tell(per_projection, more=head < max(until.values()))

    def _tell(self, batch: Mapping[str, Sequence[Positioned]], more: bool) -> None:
        """Hand a committed batch to the listeners; a listener's failure never stops the views
        (they are committed: the listener has its own way to catch up)."""
        for listener in self.listeners:
            try:
                listener(batch, more)
            except Exception:
                log.exception("a listener of the projection runner failed on a batch")

    @staticmethod
    def _advance(tx: Tx, name: str, expected: int, position: int) -> None:
        if expected == 0:
            # A concurrent first insert (or a rebuild's swap) wins; this one conflicts.
            rows = tx.execute(
                "INSERT INTO sm_tracking VALUES (?, ?) ON CONFLICT (projection) DO NOTHING"
                " RETURNING position",
                (name, position),
            )
            if not rows:
                raise TrackingConflictError(name)
            return
        rows = tx.execute(
            "UPDATE sm_tracking SET position = ? WHERE projection = ? AND position = ?"
            " RETURNING position",
            (position, name, expected),
        )
        if not rows:
            raise TrackingConflictError(name)

    def catch_up(self) -> int:
        """Process batches until the log has nothing new; the number of entries passed."""
        total = 0
        conflicts = 0
        while True:
            try:
                moved = self.run_once()
            except TrackingConflictError:
                # Another runner or a rebuild's swap moved a position after this runner
                # last read it: run_once forgot the positions, so the retry reads them.
                conflicts += 1
                if conflicts > 3:
                    raise
                continue
            if not moved:
                return total
            total += moved

    def rebuild(self) -> int:
        """Drop every row of these projections and derive them again from the whole log."""
        self._positions = None
        with self.store.transaction() as tx:
            for projection in self.projections:
                projection.clear(tx)
                tx.execute("DELETE FROM sm_tracking WHERE projection = ?", (projection.name,))
        self._listening = False
        try:
            return self.catch_up()
        finally:
            self._listening = True

    # -- background thread ---------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._stop.clear()
        if self.wake_source is not None:
            self.wake_source.start(self.wake)
        self._thread = threading.Thread(target=self._loop, name="projection-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.wake_source is not None:
            self.wake_source.stop()

    def idle_wait(self) -> float:
        """How long to wait for a wake when caught up, before looking at the log anyway."""
        source = self.wake_source
        return (
            self.safety_interval if source is not None and source.connected else self.poll_interval
        )

    def _loop(self) -> None:
        """Own the projections (or stand by until they are free), then follow the log."""
        names = ", ".join(p.name for p in self.projections)
        standing_by = False
        failing = _Failures(names)
        while not self._stop.is_set():
            try:
                with self.store.exclusive(self.lock_name) as held:
                    failing.over()
                    log.info(
                        "projections %s: %s",
                        names,
                        "taken over by this process" if standing_by else "run by this process",
                    )
                    self.owning = True
                    try:
                        self._follow(held)
                    finally:
                        self.owning = False
                if self._stop.is_set():
                    return
                log.warning(
                    "projections %s: the connection that held their lock was cut; standing by",
                    names,
                )
                standing_by = True
                continue
            except StoreBusyError:
                self.last_error = None
                failing.over()
                if not standing_by:
                    log.info("projections %s are run by another process; standing by", names)
                standing_by = True
            except Exception as error:  # the lock's database is unreachable
                self.last_error = error
                failing.seen(error)
            self._stop.wait(self.standby_interval)

    def _follow(self, held: Callable[[], bool]) -> None:
        """Follow the log until stopped, or until the lock is found lost (another runner
        may have it now: two would move the same positions)."""
        worked = 0.0  # when the last batch that moved ended (an empty poll does not count)
        checked = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - checked >= self.standby_interval:
                if not held():
                    return
                checked = time.monotonic()
            try:
                moved = self.run_once()
                self.last_error = None
            except TrackingConflictError as conflict:
                log.warning("projection %s was advanced by another runner; retrying", conflict)
                moved = 0
            except Exception as error:
                # Keep following the log: the error is shown by /health/ready
                # and the batch is retried from the stored position.
                self.last_error = error
                log.exception("projection batch failed; retrying from the stored position")
                self._stop.wait(1.0)
                continue
            if moved:
                worked = time.monotonic()
            if moved < self.batch_size and self._wakeup.wait(self.idle_wait()):
                # Woken: let the commits that follow this one join the same batch. Under
                # load this is polling's pace (a batch, then a pause), so it costs no more.
                rest = worked + self.min_batch_interval - time.monotonic()
                if rest > 0:
                    self._stop.wait(rest)
            # Cleared before the batch: a commit after this point wakes the next one.
            self._wakeup.clear()


class _Failures:
    """The runner's failures to take its lock or follow the log, logged without a storm.

    A new failure is logged with its traceback; the same one again (the database
    still down, tried every second) only once a minute, then a line when it is over.
    """

    REMINDER_SECONDS = 60.0

    def __init__(self, names: str) -> None:
        self.names = names
        self.last: str | None = None
        self.logged_at = 0.0
        self.repeats = 0

    def seen(self, error: Exception) -> None:
        now = time.monotonic()
        if repr(error) != self.last:
            log.exception("projections %s: could not take the runner's lock", self.names)
            self.last, self.logged_at, self.repeats = repr(error), now, 0
            return
        self.repeats += 1
        if now - self.logged_at >= self.REMINDER_SECONDS:
            log.error(
                "projections %s: still cannot take the runner's lock (%d more tries): %s",
                self.names,
                self.repeats,
                error,
            )
            self.logged_at = now

    def over(self) -> None:
        if self.last is not None:
            log.info("projections %s: the runner's lock can be taken again", self.names)
            self.last = None
