"""Webhook delivery: signed HTTP POSTs from a background thread, retried with backoff.

Each event is serialised when it happens and queued once per subscribed
endpoint. A delivery that fails (connection error or non-2xx) is retried after
``webhook_retry_base_seconds * 2**attempt``, up to ``webhook_max_attempts``
attempts in all. The ``Stripe-Signature`` header is computed as Stripe does,
over ``"{t}.{body}"`` with the endpoint's secret and the real Unix time, so
``stripe.Webhook.construct_event`` verifies it.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from stripe_emulator.config import EmulatorConfig
from stripe_emulator.state import Obj, State


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    endpoint_id: str = field(compare=False)
    url: str = field(compare=False)
    secret: str = field(compare=False)
    event_id: str = field(compare=False)
    event_type: str = field(compare=False)
    body: str = field(compare=False)
    attempt: int = field(compare=False, default=0)


def signature_header(body: str, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _subscribed(endpoint: Obj, event_type: str) -> bool:
    events = endpoint["enabled_events"]
    return endpoint["status"] == "enabled" and ("*" in events or event_type in events)


class WebhookDispatcher:
    def __init__(self, state: State, config: EmulatorConfig) -> None:
        self._state = state
        self._config = config
        self._cond = threading.Condition()
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.attempts: list[Obj] = []

    def on_event(self, event: Obj) -> None:
        """State listener: queue the event for every subscribed endpoint."""
        targets = [
            e for e in self._state.webhook_endpoints.values() if _subscribed(e, event["type"])
        ]
        if not targets:
            return
        event["pending_webhooks"] = len(targets)
        body = json.dumps(event)
        with self._cond:
            for endpoint in targets:
                heapq.heappush(
                    self._queue,
                    _Delivery(
                        time.monotonic(), next(self._seq), endpoint["id"], endpoint["url"],
                        endpoint["secret"], event["id"], event["type"], body,
                    ),
                )  # fmt: skip
            self._ensure_thread()
            self._cond.notify()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopped = False
            self._thread = threading.Thread(
                target=self._run, name="stripe-emulator-webhooks", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                    not self._queue or self._queue[0].due > time.monotonic()
                ):
                    timeout = self._queue[0].due - time.monotonic() if self._queue else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                delivery = heapq.heappop(self._queue)
            self._deliver(delivery)

    def _deliver(self, delivery: _Delivery) -> None:
        header = signature_header(delivery.body, delivery.secret, int(time.time()))
        request = urllib.request.Request(
            delivery.url,
            data=delivery.body.encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
        )
        status: int | None = None
        error: str | None = None
        try:
            with urllib.request.urlopen(request, timeout=self._config.webhook_timeout_seconds) as r:
                status = r.status
        except urllib.error.HTTPError as failure:
            status, error = failure.code, str(failure)
        except (OSError, ValueError) as failure:
            error = str(failure)
        delivery.attempt += 1
        ok = status is not None and 200 <= status < 300
        with self._cond:
            self.attempts.append(
                {
                    "endpoint": delivery.endpoint_id,
                    "event": delivery.event_id,
                    "type": delivery.event_type,
                    "attempt": delivery.attempt,
                    "status": status,
                    "error": error,
                    "delivered": ok,
                }
            )
            if not ok and delivery.attempt < self._config.webhook_max_attempts:
                backoff = self._config.webhook_retry_base_seconds * 2 ** (delivery.attempt - 1)
                delivery.due = time.monotonic() + backoff
                heapq.heappush(self._queue, delivery)

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def clear(self) -> None:
        """Drop queued deliveries and the attempt log (emulator reset)."""
        with self._cond:
            self._queue.clear()
            self.attempts.clear()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
