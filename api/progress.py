"""A progress bar on stderr for the long commands (``import``, ``projections rebuild``).

rich draws it: the bar, how many done (of how many), the rate and the time
left. On a terminal it redraws in place; on anything else (a log file, a
pipe) it prints one line every ``every`` seconds and one at the end, so a
log shows progress too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class CountColumn(ProgressColumn):
    """``12,345/1,000,000 events``, or ``12,345 rows`` when the count has no known total."""

    def render(self, task: Task) -> Text:
        count, of = task.fields["count"], task.fields["of"]
        unit = task.fields["unit"]
        return Text(f"{count:,}/{of:,} {unit}" if of is not None else f"{count:,} {unit}")


class RateColumn(ProgressColumn):
    """``9,870 events/s``: the count over the time since the bar started."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.fields["count"] / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} {task.fields['unit']}/s")


class ProgressBar:
    """``update`` as work is done, ``notice`` for a message, ``finish`` at the end.

    The bar measures ``done`` of ``total`` (events, or bytes of a file) and
    shows ``count`` (rows, events) and its rate; ``total`` None: unknown (a
    stream), no percentage and no time left.
    """

    def __init__(
        self,
        unit: str,
        stream: TextIO | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        stream = sys.stderr if stream is None else stream
        self.console = Console(file=stream, highlight=False)
        self.tty = self.console.is_terminal
        if not self.tty:
            self.console.width = 120
        self.every = every
        self.clock = clock
        self.unit = unit
        self.progress = Progress(
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            CountColumn(),
            RateColumn(),
            "ETA",
            TimeRemainingColumn(),
            console=self.console,
            get_time=clock,
            refresh_per_second=5,
        )
        self.task = self.progress.add_task("", total=None, count=0, of=None, unit=unit)
        self.started = False
        self.printed_at = float("-inf")
        self.printed: tuple[float, int] | None = None

    def update(
        self, done: float, total: float | None, count: int | None = None, of: int | None = None
    ) -> None:
        """``done`` of ``total``; ``count`` of ``of`` is what is shown (default: the same)."""
        if not self.started:
            self.started = True
            if self.tty:
                self.progress.start()
        if count is None:  # what the bar measures is what is shown
            count, of = int(done), None if total is None else int(total)
        shown = count
        self.progress.update(self.task, completed=done, total=total, count=shown, of=of)
        if self.tty:
            return
        now = self.clock()
        finished = total is not None and done >= total
        if (done, shown) == self.printed or (now - self.printed_at < self.every and not finished):
            return
        self._print_line()
        self.printed_at = now

    def _print_line(self) -> None:
        task = self.progress.tasks[0]
        self.printed = (task.completed, task.fields["count"])
        self.console.print(self.progress.make_tasks_table([task]))

    def notice(self, message: str) -> None:
        """A line above the bar (which keeps going)."""
        self.console.print(f"stripemeter: {message}", markup=False)

    def finish(self) -> None:
        """Stop redrawing; the last state stays on screen (or is printed once more)."""
        if not self.started:
            return
        if self.tty:
            self.progress.stop()
        elif self.printed != (
            self.progress.tasks[0].completed,
            self.progress.tasks[0].fields["count"],
        ):
            self._print_line()
        self.started = False
