"""Carrying stored idempotency claims over to the split key namespaces, once.

Until the split (see ``domain.idempotency``), a key's claim id was
``uuid5("idempotency-key:{tenant}:{key}")`` whether the client chose the key
or it was derived from the ``Idempotency-Key`` header (``<header>#<n>``) or the
content (``content:<sha>``). Derived keys now have their own namespace. So
that a retry, after the upgrade, of an event acknowledged before it is still
a duplicate and not a second count, every stored claim whose key has a
derived shape gets an *alias*: the same claim (fingerprint, usage period,
version) under the derived id. Explicit keys keep their ids and need nothing.

A key of derived shape that a client chose before the upgrade gets an alias
too: before the upgrade it *was* the derived key of the same text, and it
stays one with it for the events already stored (new keys are separate).

The migration runs at start (``open_stores``) and by ``stripemeter db
migrate``; it records that it ran (``KeyNamespacesSplit``), so later starts
cost one read. It is idempotent: an alias that exists already is skipped, so
two processes starting together, or a run cut short, end in the same state.
It reads only the claims (by topic), a page at a time, and writes no usage.
"""

from __future__ import annotations

import contextlib
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from domain.idempotency import IdempotencyKey, derived_key_id, has_derived_shape
from domain.tenancy import NAMESPACE

MIGRATION_ID = uuid5(NAMESPACE, "migration:derived-idempotency-keys:v1")
PAGE = 1_000


class KeyNamespacesSplit(Aggregate):
    """The record that stored claims were carried over to the split namespaces."""

    class Completed(Aggregate.Created):
        aliases: int

    def __init__(self, aliases: int) -> None:
        self.aliases = aliases


def split_key_namespaces(app: Application[UUID]) -> int | None:
    """Write the alias claims unless done before: how many were written, or None if done."""
    try:
        app.repository.get(MIGRATION_ID)
        return None
    except AggregateNotFoundError:
        pass
    topic = get_topic(IdempotencyKey.Claimed)
    written = 0
    start = 1
    while notes := app.recorder.select_notifications(start, PAGE, topics=[topic]):
        aliases = []
        for note in notes:
            claim = app.mapper.to_domain_event(note)
            if not isinstance(claim, IdempotencyKey.Claimed) or not has_derived_shape(claim.key):
                continue
            aliases.append(
                IdempotencyKey.claimed(
                    derived_key_id(claim.tenant_id, claim.key),
                    claim.tenant_id,
                    claim.key,
                    claim.fingerprint,
                    claim.usage_period_id,
                    claim.usage_version,
                )
            )
        written += _save_new(app, aliases)
        start = notes[-1].id + 1
    done = KeyNamespacesSplit._create(
        KeyNamespacesSplit.Completed, id=MIGRATION_ID, aliases=written
    )
    # Another process may have recorded the same migration a moment ago.
    with contextlib.suppress(IntegrityError):
        app.save(done)
    return written


def _save_new(app: Application[UUID], aliases: list[IdempotencyKey.Claimed]) -> int:
    if not aliases:
        return 0
    try:
        app.save(*aliases)
        return len(aliases)
    except IntegrityError:
        pass  # some exist already (a run cut short, or a process beside us): one at a time
    written = 0
    for alias in aliases:
        try:
            app.save(alias)
            written += 1
        except IntegrityError:
            continue
    return written
