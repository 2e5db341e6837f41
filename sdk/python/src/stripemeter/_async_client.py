"""The asynchronous client: the same surface as ``StripeMeterClient``, awaited."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from stripemeter._async_batcher import AsyncBatcher
from stripemeter._base import Call, ClientBase, read, retry_after, retryable
from stripemeter._cloudevents import DEFAULT_SOURCE, CloudEventLike, checked_cloudevent
from stripemeter._config import MAX_BATCH_EVENTS, RetryPolicy
from stripemeter._errors import APIConnectionError, APITimeoutError, StripeMeterError, error_for
from stripemeter._events import EventLike, Quantity, Timestamp, UsageEvent
from stripemeter._results import EventResult, IngestResult
from stripemeter._types import (
    CurrentUsage,
    EventRecord,
    ReconciliationReport,
    UsageHistory,
    WidgetToken,
)


class AsyncStripeMeterClient(ClientBase):
    """The async StripeMeter API client (httpx, asyncio): see ``StripeMeterClient``.

    Use it as an async context manager, or ``await client.close()``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_batch_events: int = MAX_BATCH_EVENTS,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(api_key, base_url, retry, max_batch_events)
        self._owns_http = http_client is None
        self._batchers: weakref.WeakSet[AsyncBatcher] = weakref.WeakSet()
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncStripeMeterClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the batchers made by ``batcher()`` (they send what they hold), then the
        connections: a batcher left open would have nothing to send with."""
        for batcher in list(self._batchers):
            await batcher.close()
        if self._owns_http:
            await self._http.aclose()

    # -- sending usage ----------------------------------------------------------------

    async def track(
        self,
        metric: str,
        customer_ref: str,
        quantity: Quantity,
        ts: Timestamp | None = None,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> EventResult:
        """Record one usage event; its result says accepted, duplicate, conflict or error.

        ``ts`` defaults to now (fixed here, so a retry sends the same time).
        """
        event = UsageEvent.create(metric, customer_ref, quantity, ts, meta, idempotency_key)
        return (await self.track_batch([event])).results[0]

    async def track_batch(self, events: Iterable[EventLike]) -> IngestResult:
        """Record many events (dicts or ``UsageEvent``), split into requests the service takes.

        Every event is keyed before the first request; a request that fails is
        retried with the same bytes, so nothing counts twice.
        """
        results: list[EventResult] = []
        for chunk in self._chunks(events):
            body = await self._send(self._ingest_call(chunk))
            results += IngestResult.from_wire(body, chunk, offset=len(results)).results
        return IngestResult(results)

    async def send_cloudevents(
        self, events: Iterable[CloudEventLike], source: str = DEFAULT_SOURCE
    ) -> IngestResult:
        """Send CloudEvents 1.0 (dicts, or ``UsageEvent`` mapped to one) as a batch."""
        checked = [checked_cloudevent(e, source) for e in events]
        results: list[EventResult] = []
        size = self.max_batch_events
        for start in range(0, len(checked), size):
            chunk = checked[start : start + size]
            body = await self._send(self._cloudevents_call(chunk))
            results += IngestResult.from_wire(body, [None] * len(chunk), offset=start).results
        return IngestResult(results)

    def batcher(self, **options: Any) -> AsyncBatcher:
        """A background ``AsyncBatcher`` sending through this client (see ``AsyncBatcher``)."""
        batcher = AsyncBatcher(self, **options)
        self._batchers.add(batcher)
        return batcher

    # -- reading ----------------------------------------------------------------------

    async def get_usage(
        self, customer_ref: str, metric: str | None = None, period: str | None = None
    ) -> CurrentUsage:
        """The customer's counters in the current (or the named) billing period."""
        result: CurrentUsage = await self._send(self._usage_call(customer_ref, metric, period))
        return result

    async def get_usage_history(
        self,
        customer_ref: str,
        metric: str,
        granularity: str = "day",
        since: Timestamp | None = None,
        until: Timestamp | None = None,
    ) -> UsageHistory:
        """Hour or day buckets of one customer's metric (at most 93 days)."""
        call = self._history_call(customer_ref, metric, granularity, since, until)
        result: UsageHistory = await self._send(call)
        return result

    async def get_projection(self, customer_ref: str, period: str | None = None) -> dict[str, Any]:
        """What Stripe would bill the customer for the period so far, and a forecast."""
        result: dict[str, Any] = await self._send(self._projection_call(customer_ref, period))
        return result

    async def list_events(
        self,
        metric: str | None = None,
        customer_ref: str | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[EventRecord]:
        """Every matching event in log order, fetching pages as the iteration needs them."""
        cursor: str | None = None
        while True:
            page = await self._send(
                self._events_call(metric, customer_ref, since, until, page_size, cursor)
            )
            for item in page["data"]:
                yield item
            cursor = page.get("nextCursor")
            if cursor is None:
                return

    async def get_invoice_audit(
        self,
        customer_ref: str,
        metric: str,
        period: str | None = None,
        push: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One invoice line traced: the counter, every push and the events each covered."""
        result: dict[str, Any] = await self._send(
            self._audit_call(customer_ref, metric, period, push, cursor)
        )
        return result

    async def get_reconciliation(self, month: str) -> ReconciliationReport:
        """The latest reconciliation report for a month of period starts (``YYYY-MM``)."""
        result: ReconciliationReport = await self._send(self._reconciliation_call(month))
        return result

    async def run_reconciliation(
        self, period: str | None = None, repair: bool = False, actor: str | None = None
    ) -> list[ReconciliationReport]:
        """Reconcile now (scope ``admin``): one report per month covered."""
        body = await self._send(self._run_reconciliation_call(period, repair, actor))
        reports: list[ReconciliationReport] = body["data"]
        return reports

    async def create_widget_token(
        self, customer_ref: str, lifetime_seconds: int | None = None
    ) -> WidgetToken:
        """A short-lived token for the ``<stripemeter-usage>`` widget (docs/widget.md).

        Scope ``widget:mint`` (or ``admin``). The token reads one customer's
        usage until ``expiresAt`` (``lifetime_seconds``: 1 to 86,400; 900 by
        default) and nothing else; hand it to that customer's page only.
        """
        token: WidgetToken = await self._send(
            self._widget_token_call(customer_ref, lifetime_seconds)
        )
        return token

    async def list_adjustments(
        self, status: str | None = None, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """Every adjustment (correction), in the order proposed, page by page."""
        cursor: str | None = None
        while True:
            page = await self._send(self._adjustments_call(status, page_size, cursor))
            for item in page["data"]:
                yield item
            cursor = page.get("nextCursor")
            if cursor is None:
                return

    # -- the one place requests are sent --------------------------------------------

    async def _send(self, call: Call) -> Any:
        headers = self._headers()
        if call.content is not None:
            headers["Content-Type"] = call.content_type
        attempt = 0
        while True:
            attempt += 1
            wait_at_least: float | None = None
            error: StripeMeterError
            try:
                response = await self._http.request(
                    call.method,
                    self.base_url + call.path,
                    params=call.params,
                    content=call.content,
                    headers=headers,
                )
            except httpx.TimeoutException as exc:
                error = APITimeoutError(f"no answer from {self.base_url} in time: {exc!r}")
            except httpx.TransportError as exc:
                error = APIConnectionError(f"could not reach {self.base_url}: {exc!r}")
            else:
                if not retryable(response.status_code):
                    return read(response)
                error = error_for(response.status_code, _json_or_none(response), response.text)
                wait_at_least = retry_after(response)
            if attempt >= self.retry.max_attempts:
                raise error
            await asyncio.sleep(self.retry.delay(attempt, wait_at_least))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
