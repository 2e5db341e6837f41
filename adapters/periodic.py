"""The background threads: one named daemon thread that runs until ``stop()``.

``StoppableThread`` owns the start/stop/join handshake every background loop had
written out for itself; ``Periodic`` adds the usual body on top of it: call one
function every ``interval`` seconds, and when a run raises, log it with its
traceback and try again at the next tick (a failing database or Stripe must not
end the loop for good).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class StoppableThread:
    """Runs ``body(stopping)`` on a daemon thread; ``stop()`` sets ``stopping`` and joins."""

    def __init__(
        self, name: str, body: Callable[[threading.Event], None], *, join_timeout: float = 30.0
    ) -> None:
        self.name = name
        self.body = body
        self.join_timeout = join_timeout
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self.body, args=(self.stopping,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class Periodic(StoppableThread):
    """Calls ``run`` every ``interval`` seconds (first after one interval) until stopped.

    An exception from one run is logged on ``log`` as "<what> failed; trying again
    in <interval> s" and the loop goes on.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        run: Callable[[], object],
        *,
        log: logging.Logger,
        what: str,
        join_timeout: float = 30.0,
    ) -> None:
        super().__init__(name, self._loop, join_timeout=join_timeout)
        self.interval = interval
        self.run = run
        self.log = log
        self.what = what

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.interval):
            try:
                self.run()
            except Exception:
                self.log.exception("%s failed; trying again in %g s", self.what, self.interval)
