"""The v2 high-throughput path: meter event sessions and the event stream.

The stream authenticates with a short-lived session token instead of the secret
key, takes at most 100 events per call and validates them asynchronously: the
call is accepted, and invalid events surface later as meter error reports
(``billing.meter.error_report_triggered``), never as an HTTP error.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from stripe_emulator.errors import StripeAPIError, invalid_request
from stripe_emulator.ids import new_id
from stripe_emulator.meter_events import ingest, iso, parse_iso
from stripe_emulator.meters import active_meter_for
from stripe_emulator.params import opt_list, opt_str
from stripe_emulator.routing import ApiRequest, ApiResponse, Router
from stripe_emulator.state import Obj, State

MAX_EVENTS_PER_CALL = 100


def create_session(state: State, req: ApiRequest) -> Obj:
    now = state.clock.now()
    session: Obj = {
        "id": new_id("mes", 24),
        "object": "v2.billing.meter_event_session",
        "authentication_token": new_id("mes_tok", 40),
        "created": iso(now),
        "expires_at": iso(now + state.config.session_ttl_seconds),
        "livemode": False,
    }
    state.sessions[session["authentication_token"]] = {
        **session,
        "_expires_at": now + state.config.session_ttl_seconds,
    }
    return session


def check_session(state: State, token: str | None) -> None:
    """Authenticate a stream call; raises 401 like Stripe for missing/expired tokens."""
    session = state.sessions.get(token or "")
    if session is None:
        raise StripeAPIError(
            401,
            "The meter event stream requires a valid meter event session "
            "authentication token as the bearer key.",
        )
    if state.clock.now() >= session["_expires_at"]:
        raise StripeAPIError(
            401,
            "The meter event session has expired; create a new session.",
            code="billing_meter_event_session_expired",
        )


def stream(state: State, req: ApiRequest) -> ApiResponse:
    check_session(state, req.api_key)
    events = opt_list(req.params, "events")
    if not events:
        raise invalid_request("events must contain at least one event.", param="events")
    if len(events) > MAX_EVENTS_PER_CALL:
        raise invalid_request(
            f"events can contain at most {MAX_EVENTS_PER_CALL} events per request.",
            param="events",
        )
    failures: dict[str | None, list[tuple[str, str, str]]] = defaultdict(list)
    for raw in events:
        event: dict[str, Any] = raw if isinstance(raw, dict) else {}
        event_name = opt_str(event, "event_name") or ""
        identifier = opt_str(event, "identifier") or new_id("mev_ident", 20)
        try:
            raw_ts = event.get("timestamp")
            payload = event.get("payload")
            ingest(
                state,
                event_name=event_name,
                payload=payload if isinstance(payload, dict) else {},
                identifier=identifier,
                timestamp=None if raw_ts in (None, "") else parse_iso(raw_ts, "timestamp"),
                source="stream",
            )
        except StripeAPIError as error:
            if error.code == "resource_already_exists":
                continue  # the stream drops duplicates silently: that is the dedup
            meter = active_meter_for(state, event_name)
            code = error.code or "meter_event_invalid_value"
            failures[meter["id"] if meter else None].append((code, error.message, identifier))
    for meter_id, errors in failures.items():
        report_errors(state, meter_id, errors)
    return ApiResponse({}, status=202)


def report_errors(state: State, meter_id: str | None, errors: list[tuple[str, str, str]]) -> Obj:
    """Record one meter error report and emit its event."""
    by_code: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for error in errors:
        by_code[error[0]].append(error)
    now = state.clock.now()
    report: Obj = {
        "id": new_id("mtrerr", 24),
        "object": "billing.meter_error_report",
        "meter": meter_id,
        "developer_message_summary": f"{len(errors)} invalid meter event(s)",
        "reason": {
            "error_count": len(errors),
            "error_types": [
                {
                    "code": code,
                    "error_count": len(items),
                    "sample_errors": [
                        {"error_message": message, "request": {"identifier": identifier}}
                        for _, message, identifier in items[:5]
                    ],
                }
                for code, items in by_code.items()
            ],
        },
        "validation_start": now,
        "validation_end": now,
    }
    state.error_reports.append(report)
    state.emit("billing.meter.error_report_triggered", report)
    return report


def register(router: Router) -> None:
    router.add("POST", "/v2/billing/meter_event_session", create_session)
    router.add("POST", "/v2/billing/meter_event_stream", stream)
