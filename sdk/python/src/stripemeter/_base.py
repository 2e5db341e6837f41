"""What the sync and the async client share: requests built and answers read, no I/O."""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from stripemeter._config import (
    MAX_BATCH_EVENTS,
    RetryPolicy,
    resolve_api_key,
    resolve_base_url,
)
from stripemeter._errors import APIError, error_for
from stripemeter._events import (
    EventLike,
    Timestamp,
    UsageEvent,
    as_event,
    normalise_ts,
    wire_time,
)
from stripemeter._version import __version__

JSON = "application/json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
INGEST = "/v1/events/ingest"
Params = dict[str, str | int]


@dataclass(frozen=True)
class Call:
    """One HTTP request, its body encoded once so that every retry sends the same bytes."""

    method: str
    path: str
    params: Params | None = None
    content: bytes | None = None
    content_type: str = JSON


def encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def time_param(value: Timestamp) -> str:
    return wire_time(normalise_ts(value))


def drop_none(params: Mapping[str, str | int | None]) -> Params:
    return {k: v for k, v in params.items() if v is not None}


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: the service sends seconds, a proxy in front of it may
    send an HTTP date (RFC 9110 allows both); a date in the past is no wait."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": RFC 5322's UTC of unknown origin
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    return seconds if seconds >= 0 else None


class ForkAware(Protocol):
    def _forked(self) -> None: ...


# One hook for the process (a hook per object could never be removed: a client per
# request would pile them up); the objects are held weakly.
_FORK_AWARE: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def in_forked_child(aware: ForkAware) -> None:
    """Call ``aware._forked()`` in each child this process forks, while ``aware`` lives."""
    _FORK_AWARE.add(aware)


def _after_fork_in_child() -> None:
    for aware in list(_FORK_AWARE):
        aware._forked()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


def read(response: httpx.Response) -> Any:
    """The answer's JSON, or the typed error for an error status."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise error_for(response.status_code, body, response.text)
    if body is None and response.content:
        raise APIError(response.status_code, "Not JSON", response.text[:500])
    return body


class ClientBase:
    """Settings and request building shared by ``StripeMeterClient`` and its async twin."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        retry: RetryPolicy | None,
        max_batch_events: int,
    ) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.retry = retry or RetryPolicy()
        if not 1 <= max_batch_events <= MAX_BATCH_EVENTS * 10:
            raise ValueError("max_batch_events must be between 1 and 10000")
        self.max_batch_events = max_batch_events

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"stripemeter-client-python/{__version__}", "Accept": JSON}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _chunks(self, events: Iterable[EventLike]) -> list[list[UsageEvent]]:
        """The events, keyed now, in requests of at most ``max_batch_events``."""
        keyed = [as_event(e) for e in events]
        size = self.max_batch_events
        return [keyed[i : i + size] for i in range(0, len(keyed), size)]

    @staticmethod
    def _ingest_call(chunk: Sequence[UsageEvent]) -> Call:
        return Call("POST", INGEST, content=encode({"events": [e.to_wire() for e in chunk]}))

    @staticmethod
    def _cloudevents_call(events: Sequence[Mapping[str, Any]]) -> Call:
        return Call("POST", INGEST, content=encode(list(events)), content_type=CLOUDEVENTS_BATCH)

    @staticmethod
    def _usage_call(customer_ref: str, metric: str | None, period: str | None) -> Call:
        params = drop_none({"customerRef": customer_ref, "metric": metric, "period": period})
        return Call("GET", "/v1/usage/current", params)

    @staticmethod
    def _history_call(
        customer_ref: str,
        metric: str,
        granularity: str,
        since: Timestamp | None,
        until: Timestamp | None,
    ) -> Call:
        params = drop_none(
            {
                "customerRef": customer_ref,
                "metric": metric,
                "granularity": granularity,
                "since": None if since is None else time_param(since),
                "until": None if until is None else time_param(until),
            }
        )
        return Call("GET", "/v1/usage/history", params)

    @staticmethod
    def _projection_call(customer_ref: str, period: str | None) -> Call:
        params = drop_none({"customerRef": customer_ref, "period": period})
        return Call("GET", "/v1/usage/projection", params)

    @staticmethod
    def _events_call(
        metric: str | None,
        customer_ref: str | None,
        since: Timestamp | None,
        until: Timestamp | None,
        page_size: int,
        cursor: str | None,
    ) -> Call:
        params = drop_none(
            {
                "metric": metric,
                "customerRef": customer_ref,
                "since": None if since is None else time_param(since),
                "until": None if until is None else time_param(until),
                "limit": page_size,
                "cursor": cursor,
            }
        )
        return Call("GET", "/v1/events", params)

    @staticmethod
    def _audit_call(
        customer_ref: str,
        metric: str,
        period: str | None,
        push: str | None,
        cursor: str | None,
    ) -> Call:
        params = drop_none(
            {
                "customerRef": customer_ref,
                "metric": metric,
                "period": period,
                "push": push,
                "cursor": cursor,
            }
        )
        return Call("GET", "/v1/audit/invoice", params)

    @staticmethod
    def _reconciliation_call(month: str) -> Call:
        return Call("GET", f"/v1/reconciliation/{quote(month, safe='')}", {"format": "json"})

    @staticmethod
    def _run_reconciliation_call(period: str | None, repair: bool, actor: str | None) -> Call:
        body: dict[str, Any] = {"repair": repair}
        if period is not None:
            body["period"] = period
        if actor is not None:
            body["actor"] = actor
        return Call("POST", "/v1/reconciliation/run", content=encode(body))

    @staticmethod
    def _widget_token_call(customer_ref: str, lifetime_seconds: int | None) -> Call:
        body: dict[str, Any] = {"customerRef": customer_ref}
        if lifetime_seconds is not None:
            body["lifetimeSeconds"] = lifetime_seconds
        return Call("POST", "/v1/widget-tokens", content=encode(body))

    @staticmethod
    def _adjustments_call(status: str | None, page_size: int, cursor: str | None) -> Call:
        params = drop_none({"status": status, "limit": page_size, "cursor": cursor})
        return Call("GET", "/v1/adjustments", params)
