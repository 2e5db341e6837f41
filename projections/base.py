"""What every projection is: a named view, its tables, one handler per event type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from projections.store import Tx, ViewStore

Positioned = tuple[int, Any]
"""A domain event with its position (notification id) in the event log."""


class Projection(ABC):
    name: str
    tables: tuple[str, ...]
    handles: tuple[type[Any], ...]

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
