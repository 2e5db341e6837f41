"""The HTTP side of outbound webhooks: one POST, its answer or its error, never a redirect.

A port (``WebhookTransport``) and its adapter over httpx. Redirects are not
followed at all (a 3xx is a failed attempt, as with Stripe's webhooks): a
redirect could send a signed body to another host than the tenant named. At
most ``MAX_BODY_BYTES`` of an answer are read, and a shorter excerpt kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import httpx

MAX_BODY_BYTES = 64 * 1024
KEPT_BODY_CHARS = 1024


@dataclass(frozen=True)
class HttpAnswer:
    status_code: int | None  # None: no answer (connection refused, timeout, …)
    error: str  # "" when the endpoint answered (a 3xx says it was not followed)
    body: str  # at most KEPT_BODY_CHARS of what it answered
    duration_ms: int


class WebhookTransport(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpAnswer: ...

    def close(self) -> None: ...


def excerpt(raw: bytes) -> str:
    """The answer as text to keep: undecodable bytes and NULs replaced (PostgreSQL's
    TEXT refuses U+0000, and a receiver may answer anything, a gzip page or a dump)."""
    text = storable(raw.decode("utf-8", errors="replace"))
    return text if len(text) <= KEPT_BODY_CHARS else text[:KEPT_BODY_CHARS] + "…"


def storable(text: str) -> str:
    return text.replace("\x00", "\ufffd")


class HttpxTransport:
    """One pooled client for every endpoint; the timeout bounds each phase of a request."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self.client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": "StripeMeter-Webhooks/1"},
            trust_env=False,  # a proxy from the environment would see every signed body
        )

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpAnswer:
        started = time.perf_counter()
        deadline = started + self.timeout_seconds
        try:
            with self.client.stream("POST", url, content=body, headers=headers) as response:
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) >= MAX_BODY_BYTES or time.perf_counter() > deadline:
                        break
                status = response.status_code
                location = response.headers.get("location")
        except httpx.TimeoutException:
            reason = f"timed out after {self.timeout_seconds:g} s"
            return HttpAnswer(None, reason, "", _ms_since(started))
        except httpx.HTTPError as failure:
            reason = storable(f"{type(failure).__name__}: {failure or 'no detail'}"[:500])
            return HttpAnswer(None, reason, "", _ms_since(started))
        note = ""
        if 300 <= status < 400:
            note = storable(f"redirects are not followed (Location: {location or 'none'})"[:500])
        return HttpAnswer(status, note, excerpt(bytes(raw)), _ms_since(started))

    def close(self) -> None:
        self.client.close()


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
