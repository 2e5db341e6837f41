"""The port the ingest route writes through, whichever writer runs.

Two adapters implement it: ``GroupCommitWriter`` commits on a thread of the
API process itself; ``ProcessWriterClient`` sends the events to the writer
process (``stripemeter serve``), which commits for every API process. Either
way ``submit`` returns only after the events are committed, so "accepted"
means durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from domain.ingest import IngestResult, UsageSubmission


class UsageWriter(Protocol):
    def start(self) -> None:
        """Begin accepting submissions (called once the server's event loop runs)."""

    def stop(self) -> None:
        """Finish or hand back what is in flight, then stop."""

    async def submit(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        """Write these events, in one batch with others; one result each, once committed."""
        ...

    async def tenant_changed(self, tenant_id: UUID) -> None:
        """The tenant was changed (a cap set, say): events submitted after this returns
        are decided on the tenant as changed."""
        ...
