"""POST /v1/replay: derive counters again from the event log; report, and fix on request.

What a replay compares and why it is safe beside the projection runner is
told in projections/replay.py. Here: the request's rules, the cursor, and the
pushes. A counter that ``apply`` changed is pushed: at once when the push
worker runs in this process (its queue), else by the worker's sweep, which
compares every open counter with its ledger each push interval. A push reads
the period from the event log, so it sends what Stripe lacks, and nothing
when Stripe already has it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import timedelta

import anyio.to_thread
import msgspec
from litestar import post
from litestar.params import JSONBody

from adapters.event_log import RecorderEventLog
from adapters.persistence import Stores
from adapters.push_worker import PushWorker
from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.routes.usage import number, tally_fields, when
from api.schemas import (
    FieldError,
    ReplayCounterOut,
    ReplayIn,
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


def replayer(stores: Stores) -> CounterReplayer:
    log = RecorderEventLog(stores.app.recorder, stores.app.mapper)
    return CounterReplayer(stores.views.counters, log)


def replay_query(tenant: Tenant, body: ReplayIn) -> ReplayQuery:
    """The request, checked: 422 with the field for anything off."""
    since = parse_time("since", body.since)
    until = parse_time("until", body.until)
    if since >= until:
        raise FieldError("since", "must be before until")
    if until - since > MAX_RANGE:
        raise FieldError("until", "the range must be at most 400 days")
    if not 1 <= body.limit <= MAX_PAGE:
        raise FieldError("limit", f"must be between 1 and {MAX_PAGE}")
    metrics = _names("metrics", body.metrics, fields.metric)
    for metric in metrics:
        if metric not in tenant.metrics:
            raise FieldError("metrics", f"{metric!r} is not a declared metric")
    customers = _names("customers", body.customers, fields.customer_ref)
    query = ReplayQuery(tenant.id, since, until, metrics, customers, limit=body.limit)
    if body.cursor is not None:
        query = ReplayQuery(
            tenant.id, since, until, metrics, customers, decode(body.cursor, query), body.limit
        )
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


# -- the cursor: where the last page ended, bound to the range and filters ---------


def _binding(query: ReplayQuery) -> str:
    scope = [str(query.tenant_id), when(query.since), when(query.until)]
    text = msgspec.json.encode([*scope, query.metrics, query.customers])
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def encode(after: Key, query: ReplayQuery) -> str:
    raw = msgspec.json.encode(["r1", *after, _binding(query)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, query: ReplayQuery) -> Key:
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


def queue_pushes(worker: PushWorker | None, page: ReplayPage) -> str | None:
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


# -- the response -------------------------------------------------------------------


def tally_out(counter: CounterReplay, tally: Tally | None) -> ReplayTallyOut | None:
    if tally is None:
        return None
    return ReplayTallyOut(
        **tally_fields(tally, counter.value(tally)),
        version=tally.version,
        position=tally.last_position,
    )


def counter_out(counter: CounterReplay) -> ReplayCounterOut:
    info = counter.info
    return ReplayCounterOut(
        customer_ref=info.customer_ref,
        metric=info.metric,
        period=info.period,
        period_start=when(info.period_start) or "",
        period_end=when(info.period_end) or "",
        aggregation=info.aggregation.value,
        before=tally_out(counter, counter.before),
        after=tally_out(counter, counter.after),
        difference=number(counter.difference) or "0",
        changed=counter.changed,
        hours_changed=len(counter.hours),
        pending_events=counter.pending_events,
    )


def replay_out(
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
        counters=[counter_out(c) for c in counters],
        pushes=pushes,
        next_cursor=next_cursor,
    )


def mode_of(principal: Principal | None, mode: str) -> bool:
    """True for apply (the ``admin`` scope), False for a dry run."""
    if mode not in MODES:
        raise FieldError("mode", "must be dry-run or apply")
    apply = mode == "apply"
    if apply and principal is not None and not principal.allows(Scope.ADMIN):
        raise ForbiddenError("mode apply needs an API key with the 'admin' scope")
    return apply


class ReplayController(V1Controller):
    path = "/v1/replay"
    tags = ["replay"]
    guards = [requires(Scope.READ)]

    @post(status_code=200, responses=error_responses(400, 401, 403, 404, 422))
    async def replay(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[ReplayIn]
    ) -> ReplayOut:
        """Re-derive this tenant's counters over a time range; report, or fix (``apply``).

        A page of at most ``limit`` counters per call; ``nextCursor`` continues.
        A dry run (scope ``read``) writes nothing; ``apply`` (scope ``admin``)
        replaces the differing counters and asks for their push.
        """
        apply = mode_of(principal, data.mode)

        def run() -> ReplayOut:
            query = replay_query(svc.tenant(principal.tenant_id), data)
            page = replayer(svc.stores).run(query, apply=apply)
            pushes = queue_pushes(svc.push_worker, page)
            after = page.next_after
            return replay_out(data.mode, [page], pushes, encode(after, query) if after else None)

        return await anyio.to_thread.run_sync(run)
