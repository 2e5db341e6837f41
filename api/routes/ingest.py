"""POST /v1/events/ingest: up to 1,000 usage events, one result each, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, post

from adapters.settings import Settings
from api import cloudevents
from api.auth import SECURITY, authenticated, services_of
from api.openapi import IngestOperation
from api.problems import error_responses
from api.schemas import (
    MAX_BODY_DEPTH,
    EventIn,
    EventResult,
    FieldError,
    IngestRequest,
    IngestResponse,
    not_utf8,
    quantity_of,
    repeated_key,
    too_deep,
    validation_field,
)
from domain import fields, json_shape
from domain.caps import CapMode
from domain.errors import ForbiddenError, InvalidInputError
from domain.idempotency import canonical_meta, choose_key, fingerprint
from domain.ingest import IngestResult, Outcome, UsageSubmission
from domain.tenancy import Principal, Scope


class IngestController(Controller):
    """The hot path, kept as cheap as a handler can be.

    Like its body (read by hand, event by event), its key is checked by the
    handler itself rather than by a guard and injected dependencies: that
    machinery cost more per request than the rest of a one-event ingest
    (measured in-process: about 40 µs against 90). The check is the guard's own
    (``authenticated``), and the document says the same as for other routes.
    """

    path = "/v1/events/ingest"
    tags = ["events"]
    security = SECURITY

    @post(
        status_code=200,
        operation_class=IngestOperation,
        responses=error_responses(400, 401, 403, 413, 422, 503),
    )
    async def ingest(self, request: Request[Any, Any, Any]) -> IngestResponse:
        """Record usage events exactly once; each gets accepted, duplicate, conflict or error."""
        principal = await authenticated(request, Scope.INGEST)
        svc = services_of(request.app.state)
        body = read_body(
            request.headers.get("content-type"),
            await request.body(),
            principal,
            request.headers.get("idempotency-key"),
            svc.settings,
        )
        written = await svc.writer.submit(body.submissions) if body.submissions else []
        outcomes = body.outcomes(written)
        svc.metrics.observe_ingest(outcomes)
        return respond(outcomes)


@dataclass(frozen=True)
class IngestBody:
    """An ingest body, read: each event's own error (None: written) and the events to write."""

    results: list[IngestResult | None]
    submissions: list[UsageSubmission]
    cloudevents: bool = False  # errors name CloudEvent attributes (``time``, not ``ts``)

    def outcomes(self, written: list[IngestResult]) -> list[IngestResult]:
        """Each event's result, in order, given what the writer made of ``submissions``."""
        if self.cloudevents:
            written = [cloudevents.named_as_sent(result) for result in written]
        results = iter(written)
        return [r if r is not None else next(results) for r in self.results]


def read_body(
    content_type: str | None,
    data: bytes,
    principal: Principal,
    header_key: str | None,
    settings: Settings,
) -> IngestBody:
    """An ingest body in the format its ``Content-Type`` names: CloudEvents, or else JSON.

    Raises (the whole request refused) for a body that is not a batch.
    """
    kind = cloudevents.kind_of(content_type)
    if kind is None:
        return IngestBody(*read_batch(data, principal, header_key, settings.max_batch_events))
    if header_key is not None:
        fields.idempotency_header(header_key)  # never used (every CloudEvent has an id), but read
    results: list[IngestResult | None] = []
    submissions: list[UsageSubmission] = []
    events = cloudevents.events_of(data, kind, settings.max_batch_events)
    for index, raw in enumerate(events):
        key = ""
        try:
            if isinstance(raw, FieldError):
                raise raw
            event = cloudevents.event_in(raw, settings.cloudevents_type_prefixes)
            key = event.idempotency_key or ""
            submissions.append(_submission(None, event, index, header_key, principal))
            results.append(None)
        except InvalidInputError as bad:
            field = cloudevents.attribute(bad.field)
            results.append(IngestResult.error(key, field, bad.reason))
    return IngestBody(results, submissions, cloudevents=True)


def read_batch(
    data: bytes, principal: Principal, header_key: str | None, max_events: int
) -> tuple[list[IngestResult | None], list[UsageSubmission]]:
    """The body, checked: each event's error (None: to be written) and the events to write.

    Raises (the whole request refused) for a body that is not a batch.
    """
    deep_events: dict[int, FieldError] = {}
    if too_deep(data):
        data, deep_events = _without_deep_events(data)
        if too_deep(data):  # deep where no event is: unbalanced brackets, say
            raise FieldError("body", f"must nest at most {MAX_BODY_DEPTH} levels deep")
    body = msgspec.json.decode(data, type=IngestRequest)
    _refuse_repeated_top_level_keys(data)
    _check_tenant(body.tenant_id, "tenantId", principal)
    if body.history and not principal.allows(Scope.ADMIN):
        raise ForbiddenError(
            "history: importing history needs an API key with the 'admin' scope"
            " (it writes periods that are never billed)"
        )
    if not body.events:
        raise FieldError("events", "must hold at least one event")
    if len(body.events) > max_events:
        raise FieldError("events", f"must hold at most {max_events} events")
    if header_key is not None:
        fields.idempotency_header(header_key)

    results: list[IngestResult | None] = []
    submissions: list[UsageSubmission] = []
    for index, raw in enumerate(body.events):
        if index in deep_events:
            bad = deep_events[index]
            results.append(IngestResult.error("", bad.field, bad.reason))
            continue
        try:
            event = msgspec.json.decode(raw, type=EventIn)
        except msgspec.ValidationError as error:
            bad = validation_field(error)
            results.append(IngestResult.error("", bad.field, bad.reason))
            continue
        except UnicodeDecodeError:
            bad = not_utf8(bytes(raw))
            results.append(IngestResult.error("", bad.field, bad.reason))
            continue
        _check_tenant(event.tenant_id, f"events[{index}].tenantId", principal)
        try:
            submissions.append(
                _submission(raw, event, index, header_key, principal, history=body.history)
            )
            results.append(None)
        except InvalidInputError as bad:
            results.append(IngestResult.error(event.idempotency_key or "", bad.field, bad.reason))
    return results, submissions


def _check_tenant(tenant_id: str | None, where: str, principal: Principal) -> None:
    """A ``tenantId`` in the body, at any level, must name the API key's own tenant."""
    if tenant_id is not None and tenant_id not in (str(principal.tenant_id), principal.tenant_slug):
        raise ForbiddenError(f"{where} does not match the API key's tenant")


def _refuse_repeated_top_level_keys(data: bytes) -> None:
    # Only a repeated "events", "tenantId" or "history" could pass the decoder (any
    # other key is refused as unknown); scan the body's members only when one might.
    if (
        b"\\" not in data
        and data.count(b'"events"') < 2
        and data.count(b'"tenantId"') < 2
        and data.count(b'"history"') < 2
    ):
        return
    seen: set[str | None] = set()
    for member in json_shape.members(data):
        if member.key in seen:
            raise FieldError(str(member.key), "appears more than once in one object")
        seen.add(member.key)


def _without_deep_events(data: bytes) -> tuple[bytes, dict[int, FieldError]]:
    """The body with each event nested too deeply to decode replaced by null, and its error.

    Rare: only a body deeper than MAX_BODY_DEPTH comes here. The other events
    of the batch are then decoded and recorded as usual.
    """
    errors: dict[int, FieldError] = {}
    pieces: list[bytes] = []
    done = 0
    for member in json_shape.members(data):
        if member.depth <= MAX_BODY_DEPTH - 1:
            continue
        if member.key != "events":
            raise FieldError(
                member.key or "body", f"must nest at most {MAX_BODY_DEPTH} levels deep"
            )
        events, deep = json_shape.without_deep_members(
            data[member.start : member.end], MAX_BODY_DEPTH - 2
        )
        errors.update((index, _deep_event_error(event)) for index, event in deep.items())
        pieces += [data[done : member.start], events]
        done = member.end
    pieces.append(data[done:])
    return b"".join(pieces), errors


def _deep_event_error(event: bytes) -> FieldError:
    deepest = max(json_shape.members(event), key=lambda m: m.depth, default=None)
    if deepest is None or deepest.key is None:
        return FieldError("body", f"must nest at most {MAX_BODY_DEPTH} levels deep")
    if deepest.key == "meta":
        return FieldError("meta", f"must nest at most {fields.MAX_META_DEPTH} levels deep")
    return FieldError(deepest.key, "is nested too deeply")


def _submission(
    raw: msgspec.Raw | None,
    event: EventIn,
    index: int,
    header_key: str | None,
    principal: Principal,
    *,
    history: bool = False,
) -> UsageSubmission:
    """The event, checked by every field rule, as the writer takes it.

    ``raw`` is its text, to refuse a repeated key; None when the reader of its
    format (CloudEvents) has refused those already.
    """
    metric = fields.metric(event.metric)
    customer_ref = fields.customer_ref(event.customer_ref)
    quantity = quantity_of(event.quantity)
    occurred_at = fields.timestamp("ts", event.ts)
    meta_keys = fields.meta_keys(event.meta) if event.meta else 0
    meta = canonical_meta(event.meta)
    if len(meta.encode()) > fields.MAX_META_BYTES:
        raise FieldError("meta", f"must encode to at most {fields.MAX_META_BYTES} bytes of JSON")
    explicit = None
    if event.idempotency_key is not None:
        explicit = fields.idempotency_key(event.idempotency_key)
    # Last: a repeated key whose last value breaks a rule is reported as that rule.
    # The decoder kept one value per key: if as many keys were sent as it
    # found, none was repeated (an explicit null for an optional field reads
    # as absent and only sends us down the exact path).
    if raw is not None:
        data = bytes(raw)
        found = (
            4
            + meta_keys
            + sum(f is not None for f in (event.idempotency_key, event.meta, event.tenant_id))
        )
        if json_shape.keys_at_most(data) != found:
            repeated_key(data, "meta")  # objects nest only in meta (other fields are scalars)
    event_fingerprint = fingerprint(metric, customer_ref, quantity, occurred_at, meta)
    key, derived = choose_key(explicit, header_key, index, event_fingerprint)
    return UsageSubmission(
        tenant_id=principal.tenant_id,
        metric=metric,
        customer_ref=customer_ref,
        quantity=quantity,
        occurred_at=occurred_at,
        idempotency_key=key,
        fingerprint=event_fingerprint,
        meta=meta,
        derived_key=derived,
        history=history,
    )


_CAP_MARKS: dict[CapMode, Literal["soft", "hard"]] = {CapMode.SOFT: "soft", CapMode.HARD: "hard"}


def respond(results: list[IngestResult]) -> IngestResponse:
    """The answer to an ingest: counts by outcome and each event's result, in order."""
    counts = dict.fromkeys(Outcome, 0)
    out = []
    for index, result in enumerate(results):
        counts[result.outcome] += 1
        out.append(
            EventResult(
                index=index,
                status=result.outcome.value,
                idempotency_key=result.idempotency_key or None,
                field=result.field,
                reason=result.reason,
                late=result.late.value if result.late else None,
                cap=_CAP_MARKS[result.cap] if result.cap else None,
            )
        )
    return IngestResponse(
        accepted=counts[Outcome.ACCEPTED],
        duplicates=counts[Outcome.DUPLICATE],
        conflicts=counts[Outcome.CONFLICT],
        errors=counts[Outcome.ERROR],
        results=out,
    )
