"""The synchronous client."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from stripemeter._base import (
    Call,
    ClientBase,
    in_forked_child,
    read,
    retry_after,
    retryable,
)
from stripemeter._batcher import Batcher
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


class StripeMeterClient(ClientBase):
    """A StripeMeter API client: send usage, read counters, events, audits and reports.

    ``api_key`` defaults to ``$STRIPEMETER_API_KEY``, ``base_url`` to
    ``$STRIPEMETER_API_URL`` or ``http://127.0.0.1:3000``. Use it as a context
    manager, or call ``close()``. Safe to share between threads; a forked child (a
    pre-forking server's worker) opens connections of its own.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_batch_events: int = MAX_BATCH_EVENTS,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(api_key, base_url, retry, max_batch_events)
        self._owns_http = http_client is None
        self._batchers: weakref.WeakSet[Batcher] = weakref.WeakSet()
        self._timeout = timeout
        self._http = http_client or httpx.Client(timeout=timeout)
        self._stale_http = False  # True in a forked child: new connections on first use
        in_forked_child(self)

    def _forked(self) -> None:
        """In a forked child: pooled connections are sockets shared with the parent, and two
        processes writing on one would read each other's answers. Replaced on first use
        (the hook runs in a child about to exec too), left open: they are the parent's."""
        self._stale_http = self._owns_http and not self._http.is_closed

    def __enter__(self) -> StripeMeterClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the batchers made by ``batcher()`` (they send what they hold), then the
        connections: a batcher left open would have nothing to send with."""
        for batcher in list(self._batchers):
            batcher.close()
        if self._owns_http:
            self._http.close()

    # -- sending usage ----------------------------------------------------------------

    def track(
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
        return self.track_batch([event]).results[0]

    def track_batch(self, events: Iterable[EventLike]) -> IngestResult:
        """Record many events (dicts or ``UsageEvent``), split into requests the service takes.

        Every event is keyed before the first request; a request that fails is
        retried with the same bytes, so nothing counts twice.
        """
        results: list[EventResult] = []
        for chunk in self._chunks(events):
            body = self._send(self._ingest_call(chunk))
            results += IngestResult.from_wire(body, chunk, offset=len(results)).results
        return IngestResult(results)

    def send_cloudevents(
        self, events: Iterable[CloudEventLike], source: str = DEFAULT_SOURCE
    ) -> IngestResult:
        """Send CloudEvents 1.0 (dicts, or ``UsageEvent`` mapped to one) as a batch."""
        checked = [checked_cloudevent(e, source) for e in events]
        results: list[EventResult] = []
        size = self.max_batch_events
        for start in range(0, len(checked), size):
            chunk = checked[start : start + size]
            body = self._send(self._cloudevents_call(chunk))
            results += IngestResult.from_wire(body, [None] * len(chunk), offset=start).results
        return IngestResult(results)

    def batcher(self, **options: Any) -> Batcher:
        """A background ``Batcher`` sending through this client (see ``Batcher``)."""
        batcher = Batcher(self, **options)
        self._batchers.add(batcher)
        return batcher

    # -- reading ----------------------------------------------------------------------

    def get_usage(
        self, customer_ref: str, metric: str | None = None, period: str | None = None
    ) -> CurrentUsage:
        """The customer's counters in the current (or the named) billing period."""
        result: CurrentUsage = self._send(self._usage_call(customer_ref, metric, period))
        return result

    def get_usage_history(
        self,
        customer_ref: str,
        metric: str,
        granularity: str = "day",
        since: Timestamp | None = None,
        until: Timestamp | None = None,
    ) -> UsageHistory:
        """Hour or day buckets of one customer's metric (at most 93 days)."""
        call = self._history_call(customer_ref, metric, granularity, since, until)
        result: UsageHistory = self._send(call)
        return result

    def get_projection(self, customer_ref: str, period: str | None = None) -> dict[str, Any]:
        """What Stripe would bill the customer for the period so far, and a forecast."""
        result: dict[str, Any] = self._send(self._projection_call(customer_ref, period))
        return result

    def list_events(
        self,
        metric: str | None = None,
        customer_ref: str | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        page_size: int = 100,
    ) -> Iterator[EventRecord]:
        """Every matching event in log order, fetching pages as the iteration needs them."""
        cursor: str | None = None
        while True:
            page = self._send(
                self._events_call(metric, customer_ref, since, until, page_size, cursor)
            )
            yield from page["data"]
            cursor = page.get("nextCursor")
            if cursor is None:
                return

    def get_invoice_audit(
        self,
        customer_ref: str,
        metric: str,
        period: str | None = None,
        push: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One invoice line traced: the counter, every push and the events each covered."""
        result: dict[str, Any] = self._send(
            self._audit_call(customer_ref, metric, period, push, cursor)
        )
        return result

    def get_reconciliation(self, month: str) -> ReconciliationReport:
        """The latest reconciliation report for a month of period starts (``YYYY-MM``)."""
        result: ReconciliationReport = self._send(self._reconciliation_call(month))
        return result

    def run_reconciliation(
        self, period: str | None = None, repair: bool = False, actor: str | None = None
    ) -> list[ReconciliationReport]:
        """Reconcile now (scope ``admin``): one report per month covered."""
        body = self._send(self._run_reconciliation_call(period, repair, actor))
        reports: list[ReconciliationReport] = body["data"]
        return reports

    def create_widget_token(
        self, customer_ref: str, lifetime_seconds: int | None = None
    ) -> WidgetToken:
        """A short-lived token for the ``<stripemeter-usage>`` widget (docs/widget.md).

        Scope ``widget:mint`` (or ``admin``). The token reads one customer's
        usage until ``expiresAt`` (``lifetime_seconds``: 1 to 86,400; 900 by
        default) and nothing else; hand it to that customer's page only.
        """
        token: WidgetToken = self._send(self._widget_token_call(customer_ref, lifetime_seconds))
        return token

    def list_adjustments(
        self, status: str | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every adjustment (correction), in the order proposed, page by page."""
        cursor: str | None = None
        while True:
            page = self._send(self._adjustments_call(status, page_size, cursor))
            yield from page["data"]
            cursor = page.get("nextCursor")
            if cursor is None:
                return

    # -- the one place requests are sent --------------------------------------------

    def _send(self, call: Call) -> Any:
        if self._stale_http:
            self._stale_http = False
            self._http = httpx.Client(timeout=self._timeout)
        headers = self._headers()
        if call.content is not None:
            headers["Content-Type"] = call.content_type
        attempt = 0
        while True:
            attempt += 1
            wait_at_least: float | None = None
            error: StripeMeterError
            try:
                response = self._http.request(
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
            time.sleep(self.retry.delay(attempt, wait_at_least))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
