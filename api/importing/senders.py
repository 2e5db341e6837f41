"""Where an import's events go: the service over HTTP, or (``--dry-run``) nowhere.

``HttpSender`` posts each batch to ``POST /v1/events/ingest`` as one request
and returns the route's own result for each event. Events without an
``idempotencyKey`` are sent without one and without an ``Idempotency-Key``
header, so the service derives each one's key from its content (time
included): a batch sent again (a retry, a resumed import, the whole file
imported twice) is answered ``duplicate``, never counted twice. A header
key would not do: it names the event by its place in the request, and a
resumed import cuts the file into other requests.

With ``history``, each request asks for the events as history (``"history":
true``, an admin key's): one older than the ingest horizon is counted in its
own ended period, never pushed to Stripe (domain/history.py).

A request with no answer, a 429 or a 5xx is sent again, the same bytes, after
a growing wait; a 401 or 403 stops the import; a request the service refuses
whole (400/413/422) is split in halves until the one event that made it fail
is found, which then gets the refusal as its result.

``DryRunSender`` runs the route's own reading of a batch (``read_batch``:
decoding and every field rule) here and writes nothing; the rules that need
the tenant's state (the metric declared, negatives allowed, the ingest
horizon, caps) are decided by the service's writer and cannot be, without
writing: docs/import.md.
"""

from __future__ import annotations

import random
import time
from typing import Any, Protocol
from uuid import UUID

import httpx
import msgspec

from api.routes.ingest import read_batch
from domain.errors import InvalidInputError, StripeMeterError
from domain.tenancy import Principal, Scope

Result = dict[str, Any]  # an event's result as the route answers it (``EventResult``)
INGEST = "/v1/events/ingest"


class ImportAbortedError(Exception):
    """The service refused the import (its key) or kept failing; the checkpoint stands."""


class Sender(Protocol):
    def send(self, events: list[bytes]) -> list[Result]:
        """One result per event, in order."""
        ...

    def close(self) -> None: ...


def body_of(events: list[bytes], history: bool = False) -> bytes:
    start = b'{"history":true,"events":[' if history else b'{"events":['
    return start + b",".join(events) + b"]}"


class HttpSender:
    """Batches to a running service, as any client sends them."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 120.0,
        attempts: int = 8,
        max_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        history: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.history = history  # each request asks for history (docs/import.md)
        self.attempts = attempts
        self.max_wait = max_wait
        self.http = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def send(self, events: list[bytes]) -> list[Result]:
        status, answer = self._post(body_of(events, self.history))
        if status == 200:
            results: list[Result] = answer["results"]
            if len(results) != len(events):
                raise ImportAbortedError(
                    f"the service answered {len(results)} results for {len(events)} events"
                )
            return results
        if len(events) > 1:  # refused whole: find the event that made it fail
            half = len(events) // 2
            return self.send(events[:half]) + self.send(events[half:])
        return [_refusal(status, answer)]

    def _post(self, body: bytes) -> tuple[int, Any]:
        """The answer's status and JSON, once it is a final one (200 or a refusal)."""
        for attempt in range(1, self.attempts + 1):
            wait = min(self.max_wait, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                response = self.http.post(self.url + INGEST, content=body)
            except httpx.TransportError as error:
                why = f"no answer from {self.url} ({error!r})"
            else:
                status = response.status_code
                if status in (401, 403):
                    raise ImportAbortedError(
                        f"the service refused the API key ({status}): {_detail(response)}"
                    )
                if status == 200 or status in (400, 413, 422):
                    return status, _json(response)
                why = f"{status} from {self.url}: {_detail(response)}"
                if status != 429 and status < 500:
                    raise ImportAbortedError(why)
                retry_after = response.headers.get("retry-after", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            if attempt < self.attempts:
                time.sleep(wait)
        raise ImportAbortedError(f"gave up after {self.attempts} attempts: {why}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}


def _detail(response: httpx.Response) -> str:
    body = _json(response)
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def _refusal(status: int, answer: Any) -> Result:
    """A one-event request refused whole, as that event's error result."""
    field, reason = "body", f"refused with {status}"
    if isinstance(answer, dict):
        errors = answer.get("errors") or []
        if errors and isinstance(errors[0], dict):
            field = str(errors[0].get("field", field))
            reason = str(errors[0].get("reason", reason))
        elif "detail" in answer:
            reason = str(answer["detail"])
    return {"index": 0, "status": "error", "field": field, "reason": reason}


class DryRunSender:
    """The route's reading of each batch, here: decoding and field rules; nothing written.

    ``tenant`` is the slug (or id) an event's own ``tenantId`` must name; a
    dry run does not ask the service whose key it is.
    """

    def __init__(self, tenant: str | None, max_events: int) -> None:
        self.max_events = max_events
        self.principal = Principal(
            tenant_id=UUID(int=0),
            tenant_slug=tenant or "",
            key_id=UUID(int=0),
            scopes=frozenset({Scope.INGEST}),
        )

    def close(self) -> None:
        pass

    def send(self, events: list[bytes]) -> list[Result]:
        try:
            checked, _ = read_batch(body_of(events), self.principal, None, self.max_events)
        except (InvalidInputError, StripeMeterError, msgspec.DecodeError) as error:
            if len(events) > 1:
                half = len(events) // 2
                return self.send(events[:half]) + self.send(events[half:])
            field = getattr(error, "field", "body")
            reason = getattr(error, "reason", str(error))
            return [{"index": 0, "status": "error", "field": field, "reason": reason}]
        return [
            {"index": i, "status": "valid"}
            if result is None
            else {"index": i, "status": "error", "field": result.field, "reason": result.reason}
            for i, result in enumerate(checked)
        ]
