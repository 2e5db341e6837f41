"""What every projection is: a named view, its tables, one handler per event type.

Why these are not eventsourcing's own ``Projection`` and ``ProjectionRunner``
(``eventsourcing.projection``): the library's projection takes one event at a
time, each written with its own tracking record through a tracking recorder
of its own. Ours take a *batch* of events in one transaction and write it
set-wise (one ``executemany`` per table), and several views share one store,
one transaction and one tracking table (projections/runner.py): one
transaction per event tops out near a thousand events per second, a batch
per transaction is what lets a rebuild go an order of magnitude faster
(docs/benchmarks.md, section 6). Hence the names ``BatchProjection`` and
``BatchProjectionRunner``.

Handlers follow the library's idiom all the same: one method per event type,
registered on a ``singledispatchmethod`` (or, where a handler is pure and runs
for every usage event, a ``functools.singledispatch`` function: a cheaper
call), whose base case raises ``UnhandledEventError``; the event types a projection reads
from the log (``handles``) are the ones it registered a handler for, so the
two lists cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from projections.store import Tx, ViewStore

Positioned = tuple[int, Any]
"""A domain event with its position (notification id) in the event log."""


class UnhandledEventError(TypeError):
    """A projection was given an event type it has no handler for.

    Never guessed at: treating it as some other event would write a wrong
    view without a trace. The batch's transaction rolls back, and the runner
    retries it (and shows the error in /health/ready) until the code knows it.
    """

    def __init__(self, view: str, event: object) -> None:
        super().__init__(f"the {view} view has no handler for {type(event).__qualname__}")


def handled_by(handler: Any) -> tuple[type[Any], ...]:
    """The event types ``handler`` (a singledispatch function or method) has a handler for."""
    registry = getattr(handler, "dispatcher", handler).registry
    return tuple(cls for cls in registry if cls is not object)


class BatchProjection(ABC):
    name: str
    tables: tuple[str, ...]
    handles: tuple[type[Any], ...]
    """The event types it reads (``handled_by`` its handlers): the runner reads only these."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    @abstractmethod
    def schema(self) -> list[str]:
        """CREATE statements (with ``{decimal}``-style type names) for the view's tables."""

    @abstractmethod
    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        """Apply a batch of events, in log order, inside the caller's transaction."""

    def create_tables(self) -> None:
        with self.store.transaction() as tx:
            for statement in self.schema():
                tx.execute(self.store.ddl(statement))

    def clear(self, tx: Tx) -> None:
        for table in self.tables:
            tx.execute(f"DELETE FROM {table}")
