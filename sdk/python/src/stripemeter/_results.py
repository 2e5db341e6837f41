"""What the ingest route answers, typed: one result per event, in the order sent."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stripemeter._errors import APIError
from stripemeter._events import UsageEvent

Status = Literal["accepted", "duplicate", "conflict", "error"]
Late = Literal["in_window", "carried", "held", "past_window", "history"]
Cap = Literal["soft", "hard"]


@dataclass(frozen=True)
class EventResult:
    """The answer for one event.

    ``accepted``: recorded and committed. ``duplicate``: the key was seen with
    the same content; nothing new was recorded. ``conflict``: the key was used
    for other content (``field`` is ``idempotencyKey``). ``error``: the event
    breaks a rule; ``field`` and ``reason`` say which. ``late`` and ``cap`` are
    set only when the period was over or a usage cap decided the event.
    """

    index: int
    status: Status
    idempotency_key: str | None = None
    field: str | None = None
    reason: str | None = None
    late: Late | None = None
    cap: Cap | None = None
    event: UsageEvent | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Counted, now or before: ``accepted`` or ``duplicate``."""
        return self.status in ("accepted", "duplicate")

    @classmethod
    def from_wire(
        cls, data: dict[str, Any], index: int, event: UsageEvent | None = None
    ) -> EventResult:
        return cls(
            index=index,
            status=data["status"],
            idempotency_key=data.get("idempotencyKey"),
            field=data.get("field"),
            reason=data.get("reason"),
            late=data.get("late"),
            cap=data.get("cap"),
            event=event,
        )


@dataclass(frozen=True)
class IngestResult:
    """The answer to a batch (however many requests it took): counts and each result."""

    results: list[EventResult]

    def _count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def accepted(self) -> int:
        return self._count("accepted")

    @property
    def duplicates(self) -> int:
        return self._count("duplicate")

    @property
    def conflicts(self) -> int:
        return self._count("conflict")

    @property
    def errors(self) -> int:
        return self._count("error")

    @property
    def failed(self) -> list[EventResult]:
        """The events not counted: conflicts and errors."""
        return [r for r in self.results if not r.ok]

    @classmethod
    def from_wire(
        cls, body: dict[str, Any], events: Sequence[UsageEvent | None], offset: int = 0
    ) -> IngestResult:
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and "status" in r for r in results
        ):
            raise APIError(200, "Not an ingest answer", f"the answer has no results: {body!r:.200}")
        if len(results) != len(events):
            raise APIError(
                200,
                "Not an ingest answer",
                f"the answer has {len(results)} results for {len(events)} events",
            )
        return cls([EventResult.from_wire(r, offset + i, events[i]) for i, r in enumerate(results)])
