"""Wakes the projection runner when PostgreSQL says the event log grew (LISTEN/NOTIFY).

eventsourcing's PostgreSQL recorder sends ``NOTIFY <channel>`` inside every
insert transaction (adapters/pg_recorder.py keeps that), and PostgreSQL
delivers it when that transaction commits: a runner woken by it reads the
new rows at once, whichever process wrote them.

The library's own ``recorder.subscribe()`` is not used: it hands out single
notifications from reads of its own (500 at a time, on a connection of the
recorder's pool held for its lifetime) and ends for good on the first
connection error, whereas the runner reads its own batches from its own
tracked positions and must outlive a restarted server. Only the wake-up is
taken from PostgreSQL here; what to read is still the runner's business.

A notification can be missed (the connection drops, the server restarts):
while this listener is not connected the runner polls at its normal
interval, while it is, at its slow safety interval; every (re)connection
wakes the runner once to pick up whatever came in between.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from adapters.periodic import StoppableThread

log = logging.getLogger("stripemeter.projections")

# Find a connection that died without a word (a host gone, a firewall's idle
# timeout) within about half a minute instead of the kernel's two hours.
KEEPALIVES = "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3"


class PostgresLogListener:
    """LISTENs on the event store's channel on a connection of its own; a thread wakes the
    runner once per notification (the runner coalesces them)."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        where: str,
        *,
        check_interval: float = 0.25,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
    ) -> None:
        self.conninfo = f"{conninfo} {KEEPALIVES}"
        self.channel = channel
        self.where = where  # for log lines: host:port/dbname, never the password
        self.check_interval = check_interval
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.backend_pid: int | None = None  # the LISTEN connection's server process
        self._connected = False
        self._thread: StoppableThread | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self, wake: Callable[[], None]) -> None:
        self._thread = StoppableThread(
            "log-listener", lambda stopping: self._run(wake, stopping), join_timeout=10
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def _run(self, wake: Callable[[], None], stopping: threading.Event) -> None:
        delay = self.reconnect_delay
        failures = 0
        while not stopping.is_set():
            try:
                self._listen(wake, failures, stopping)
                return  # stopped
            except Exception as error:
                self._connected = False
                wake()  # the runner goes back to its normal poll at once
                failures += 1
                (log.error if failures == 1 else log.warning)(
                    "projections: the LISTEN connection to PostgreSQL (%s, channel %s) failed"
                    " (%s: %s); the views are kept current by polling the event log until it"
                    " is back (attempt %d, next in %.0f s). If this lasts, check that"
                    " PostgreSQL is up and reachable from this process and that"
                    " max_connections leaves room for it",
                    self.where,
                    self.channel,
                    type(error).__name__,
                    str(error).strip(),
                    failures,
                    delay,
                )
                stopping.wait(delay)
                delay = min(delay * 2, self.max_reconnect_delay)

    def _listen(self, wake: Callable[[], None], failures: int, stopping: threading.Event) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.backend_pid = conn.info.backend_pid
            self._connected = True
            # Whatever was committed while not listening is read now, not at the next poll.
            wake()
            if failures:
                log.warning(
                    "projections: listening to PostgreSQL again (%s, channel %s) after %d"
                    " failed attempts; the views follow every commit again",
                    self.where,
                    self.channel,
                    failures,
                )
            try:
                while not stopping.is_set():
                    for _ in conn.notifies(timeout=self.check_interval):
                        wake()
            finally:
                self._connected = False
