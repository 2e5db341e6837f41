"""A replay: derive a tenant's counters again from the event log; report, and fix on request.

What a replay compares and why it is safe beside the projection runner is
told in projections/replay.py. Here: the rules a replay's range and filters
follow, the cursor, the pushes and the answer, shared by ``POST /v1/replay``
(one page per call) and ``stripemeter replay`` (every page). A counter that
``apply`` changed is pushed: at once when the push worker runs in this
process (its queue), else by the worker's sweep, which compares every open
counter with its ledger each push interval. A push reads the period from the
event log, so it sends what Stripe lacks, and nothing when Stripe already
has it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from datetime import timedelta

import msgspec

from adapters.event_log import RecorderEventLog
from adapters.persistence import Stores
from adapters.push_worker import PushWorker
from api.queries.usage import number, tally_fields, when
from api.schemas import (
    FieldError,
    ReplayCounterOut,
    ReplayOut,
    ReplaySummaryOut,
    ReplayTallyOut,
    parse_time,
)
from domain import fields
from domain.errors import ForbiddenError
from domain.pushing import Target
from domain.tenancy import Principal, Scope, Tenant
from projections.counters import Tally
from projections.replay import CounterReplay, CounterReplayer, Key, ReplayPage, ReplayQuery

MODES = ("dry-run", "apply")
MAX_RANGE = timedelta(days=400)
MAX_PAGE = 1_000
MAX_FILTER = 100
DEFAULT_PAGE = 200


def replay_page(
    stores: Stores,
    worker: PushWorker | None,
    tenant: Tenant,
    principal: Principal,
    *,
    since: str,
    until: str,
    mode: str = "dry-run",
    metrics: list[str] | None = None,
    customers: list[str] | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> ReplayOut:
    """One page of a replay (the API): ``apply`` needs ``principal`` to hold ``admin``."""
    apply = _mode_of(principal, mode)
    query = _replay_query(tenant, since, until, metrics, customers, limit, cursor)
    page = _replayer(stores).run(query, apply=apply)
    pushes = _queue_pushes(worker, page)
    after = page.next_after
    return _replay_out(mode, [page], pushes, _encode(after, query) if after else None)


def replay_all(
    stores: Stores,
    tenant: Tenant,
    *,
    since: str,
    until: str,
    apply: bool,
    metrics: list[str] | None,
    customers: list[str] | None,
    limit: int,
    on_page: Callable[[int, ReplayPage], None],
) -> ReplayOut:
    """Every page of a replay (the CLI), one transaction each; counters changed wait for
    the push worker's sweep (no queue here). ``on_page`` hears of each page as it ends."""
    query = _replay_query(tenant, since, until, metrics, customers, limit)
    replayer = _replayer(stores)
    pages: list[ReplayPage] = []
    while True:
        page = replayer.run(query, apply=apply)
        pages.append(page)
        on_page(len(pages), page)
        if page.next_after is None:
            break
        query = dataclasses.replace(query, after=page.next_after)
    applied = any(page.applied for page in pages)
    return _replay_out("apply" if apply else "dry-run", pages, "sweep" if applied else None, None)


def _mode_of(principal: Principal, mode: str) -> bool:
    """True for apply (the ``admin`` scope), False for a dry run."""
    if mode not in MODES:
        raise FieldError("mode", "must be dry-run or apply")
    apply = mode == "apply"
    if apply and not principal.allows(Scope.ADMIN):
        raise ForbiddenError("mode apply needs an API key with the 'admin' scope")
    return apply


def _replay_query(
    tenant: Tenant,
    since: str,
    until: str,
    metrics: list[str] | None,
    customers: list[str] | None,
    limit: int,
    cursor: str | None = None,
) -> ReplayQuery:
    """The range and filters, checked: 422 with the field for anything off."""
    start = parse_time("since", since)
    end = parse_time("until", until)
    if start >= end:
        raise FieldError("since", "must be before until")
    if end - start > MAX_RANGE:
        raise FieldError("until", "the range must be at most 400 days")
    if not 1 <= limit <= MAX_PAGE:
        raise FieldError("limit", f"must be between 1 and {MAX_PAGE}")
    names = _names("metrics", metrics, fields.metric)
    for metric in names:
        if metric not in tenant.metrics:
            raise FieldError("metrics", f"{metric!r} is not a declared metric")
    refs = _names("customers", customers, fields.customer_ref)
    query = ReplayQuery(tenant.id, start, end, names, refs, limit=limit)
    if cursor is not None:
        query = dataclasses.replace(query, after=_decode(cursor, query))
    return query


def _names(
    field: str, values: list[str] | None, check: Callable[[str, str], str]
) -> tuple[str, ...]:
    """Metric names or customerRefs, each by the rule ingest reads it with."""
    if values is None:
        return ()
    if not 1 <= len(values) <= MAX_FILTER:
        raise FieldError(field, f"must list 1 to {MAX_FILTER} names (or be left out)")
    return tuple(sorted({check(value, field) for value in values}))


def _replayer(stores: Stores) -> CounterReplayer:
    log = RecorderEventLog(stores.app.recorder, stores.app.mapper)
    return CounterReplayer(stores.views.counters, log)


# -- the cursor: where the last page ended, bound to the range and filters ---------


def _binding(query: ReplayQuery) -> str:
    scope = [str(query.tenant_id), when(query.since), when(query.until)]
    text = msgspec.json.encode([*scope, query.metrics, query.customers])
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def _encode(after: Key, query: ReplayQuery) -> str:
    raw = msgspec.json.encode(["r1", *after, _binding(query)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, query: ReplayQuery) -> Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, customer, metric, period, bound = msgspec.json.decode(
            raw, type=tuple[str, str, str, str, str]
        )
    except (ValueError, msgspec.DecodeError):
        raise FieldError("cursor", "is not a cursor this API returned") from None
    # The key is the last period of a page as stored, which the binding does not cover:
    # a key the API cannot have stored (a NUL, longer than a customerRef) is no cursor.
    if kind != "r1" or any(
        len(part) > 255 or "\x00" in part for part in (customer, metric, period)
    ):
        raise FieldError("cursor", "is not a cursor this API returned")
    if bound != _binding(query):
        raise FieldError("cursor", "belongs to a replay of another range, metrics or customers")
    return customer, metric, period


# -- pushes -------------------------------------------------------------------------


def _queue_pushes(worker: PushWorker | None, page: ReplayPage) -> str | None:
    """Ask for a push of every counter ``apply`` changed; how it will happen."""
    if not page.applied:
        return None
    if worker is None:
        return "sweep"
    targets = [Target.LIVE, *([Target.SHADOW] if worker.shadow_enabled else [])]
    for counter in page.changed:
        for target in targets:
            worker.actor.send(str(counter.info.aggregate_id), target.value)
    return "queued"


# -- the answer ---------------------------------------------------------------------


def _tally_out(counter: CounterReplay, tally: Tally | None) -> ReplayTallyOut | None:
    if tally is None:
        return None
    return ReplayTallyOut(
        **tally_fields(tally, counter.value(tally)),
        version=tally.version,
        position=tally.last_position,
    )


def _counter_out(counter: CounterReplay) -> ReplayCounterOut:
    info = counter.info
    return ReplayCounterOut(
        customer_ref=info.customer_ref,
        metric=info.metric,
        period=info.period,
        period_start=when(info.period_start) or "",
        period_end=when(info.period_end) or "",
        aggregation=info.aggregation.value,
        before=_tally_out(counter, counter.before),
        after=_tally_out(counter, counter.after),
        difference=number(counter.difference) or "0",
        changed=counter.changed,
        hours_changed=len(counter.hours),
        pending_events=counter.pending_events,
    )


def _replay_out(
    mode: str, pages: list[ReplayPage], pushes: str | None, next_cursor: str | None
) -> ReplayOut:
    """One page (the API) or every page of a replay (the CLI), as one response."""
    counters = [c for page in pages for c in page.counters]
    changed = [c for page in pages for c in page.changed]
    applied = sum(len(page.changed) for page in pages if page.applied)
    return ReplayOut(
        mode=mode,
        view_position=max((page.position for page in pages), default=0),
        summary=ReplaySummaryOut(
            examined=len(counters),
            changed=len(changed),
            applied=applied,
            pending_events=sum(c.pending_events for c in counters),
        ),
        counters=[_counter_out(c) for c in counters],
        pushes=pushes,
        next_cursor=next_cursor,
    )
