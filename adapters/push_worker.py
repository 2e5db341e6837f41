"""Dramatiq workers that push usage periods to Stripe, and the sweep that feeds them.

The broker only ever says "look at this period": the actor reads the period
and its ledger from the event store and pushes what is missing, so a lost
message only delays a push and a repeated one finds nothing to do. Every
``push_interval_seconds`` the sweep compares each open period's counter with
its ledger (both views) and sends one message per period that Stripe is
behind on — about one Stripe call per customer × meter per interval,
however many events arrived. When a sweep finds many periods behind for a
target (``STRIPEMETER_STREAM_MIN_BATCH``, default 10), it sends one message
per 100 of them instead, whose actor pushes them together over Stripe's v2
meter event stream (``PushService.push_batch``: one call for 100 events);
v1 stays for the few.

Brokers: Redis or RabbitMQ (``STRIPEMETER_BROKER_URL``) in production, both
run by the same tests; an in-process broker in the embedded default. The
queue is ``STRIPEMETER_BROKER_QUEUE`` so that deployments can share a broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import dramatiq
from dramatiq.brokers.stub import StubBroker

from adapters.metrics import Metrics
from adapters.periodic import Periodic
from adapters.persistence import Stores
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.caching import TtlCache
from domain.ledger import Intent
from domain.mappings import PUSH_MODE, PushMode
from domain.meters import Aggregation
from domain.pushing import STRIPE_MAX_AGE, PushOutcome, PushService, Target, route_for
from domain.stripe_port import MAX_STREAM_EVENTS, StripeGateway, StripeUnavailableError
from projections.ledger import Candidate
from stripe_emulator import Emulator, serving_in_thread

log = logging.getLogger(__name__)

QUEUE = Settings.broker_queue


def build_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    if url is None:
        return StubBroker()
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker  # noqa: PLC0415 - optional backend

        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415 - optional backend

    # Publisher confirms: a message the sweep sent is on the broker, not in a socket buffer.
    return RabbitmqBroker(url=url, confirm_delivery=True)


def broker_status(url: str | None, timeout_seconds: float = 2.0) -> dict[str, str]:
    """Whether the broker answers, for readiness: a fresh connection and one round trip.

    Never the broker's own pooled connections: a probe must not hang on one, nor
    share one with the threads that publish and consume.
    """
    if url is None:
        return {"status": "ok", "broker": "in-process"}
    kind = "redis" if url.startswith(("redis://", "rediss://")) else "rabbitmq"
    try:
        if kind == "redis":
            import redis  # noqa: PLC0415 - optional backend

            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
            )
            try:
                client.ping()
            finally:
                client.close()
        else:
            import pika  # type: ignore[import-untyped]  # noqa: PLC0415 - optional backend

            parameters = pika.URLParameters(url)
            parameters.connection_attempts = 1
            parameters.socket_timeout = timeout_seconds
            parameters.blocked_connection_timeout = timeout_seconds
            pika.BlockingConnection(parameters).close()
    except Exception as error:  # any failure to answer is "down", named by its type
        return {"status": "down", "broker": kind, "error": type(error).__name__}
    return {"status": "ok", "broker": kind}


def build_gateways(settings: Settings, emulator_url: str | None) -> dict[Target, StripeGateway]:
    """Live pushes go to Stripe (or the built-in emulator); shadow ones to the test key if set."""
    stripe = settings.stripe
    gateways: dict[Target, StripeGateway] = {}
    common = {
        "max_network_retries": stripe.max_network_retries,
        "timeout_seconds": stripe.timeout_seconds,
    }
    if stripe.secret_key:
        gateways[Target.LIVE] = SdkStripeGateway(stripe.secret_key, stripe.api_base, **common)  # type: ignore[arg-type]
    elif emulator_url:
        gateways[Target.LIVE] = SdkStripeGateway("sk_test_builtin_emulator", emulator_url, **common)  # type: ignore[arg-type]
    if stripe.test_secret_key:
        gateways[Target.SHADOW] = SdkStripeGateway(
            stripe.test_secret_key,
            stripe.test_api_base or (None if stripe.secret_key else emulator_url),
            **common,  # type: ignore[arg-type]
        )
    return gateways


def builtin_emulator_url(settings: Settings) -> str | None:
    """Where another process of the same service finds its built-in emulator (no Stripe key)."""
    if settings.stripe.secret_key:
        return None
    return f"http://127.0.0.1:{settings.emulator_port}"


def start_builtin_emulator(stack: ExitStack, port: int) -> str:
    """No Stripe key: push to a local emulator in this process, and say so loudly.

    On ``port`` when it is free (``stripemeter`` commands in other processes
    find it there), else on any free port.
    """
    try:
        url = stack.enter_context(serving_in_thread(Emulator(), port=port))
    except OSError:
        url = stack.enter_context(serving_in_thread(Emulator(), port=0))
    log.warning(
        "STRIPE_SECRET_KEY is not set: pushing to the built-in Stripe emulator at %s;"
        " nothing reaches Stripe",
        url,
    )
    return url


class PushRetryError(dramatiq.Retry):
    """Raised inside the actor so that Dramatiq retries the message with backoff.

    A ``dramatiq.Retry``: the worker logs the retry (INFO, with its delay), not an
    error with a traceback; the pusher has logged why already."""


@dataclass
class SweepReport:
    sent: int
    pending: int
    unpushed: int


class PushWorker:
    def __init__(
        self,
        stores: Stores,
        gateways: dict[Target, StripeGateway],
        metrics: Metrics,
        broker: dramatiq.Broker,
        interval_seconds: float = 5.0,
        threads: int = 4,
        clock: Callable[[], datetime] | None = None,
        queue_name: str = QUEUE,
        stream_min_batch: int = 10,
    ) -> None:
        self.stores = stores
        self.metrics = metrics
        self.broker = broker
        self.interval_seconds = interval_seconds
        self.threads = threads
        self.clock = clock or stores.app.clock
        self.shadow_enabled = Target.SHADOW in gateways
        self.stream_min_batch = stream_min_batch
        self.pusher = PushService(
            stores.app,
            gateways,
            self.clock,
            on_outcome=self._observe,
            locks=stores.push_locks,
            on_stream_call=self._observe_stream_call,
        )
        retries: dict[str, Any] = {"max_retries": 25, "min_backoff": 500, "max_backoff": 300_000}
        self.actor = dramatiq.actor(
            broker=broker,
            actor_name="stripemeter_push_usage_period",
            queue_name=queue_name,
            **retries,
        )(self._push)
        self.batch_actor = dramatiq.actor(
            broker=broker,
            actor_name="stripemeter_push_usage_periods",
            queue_name=queue_name,
            **retries,
        )(self._push_batch)
        # Periods a push message was sent for, until its actor takes it (or the guard time).
        self._sent: TtlCache[tuple[UUID, Target], bool] = TtlCache(
            max(30.0, 4 * interval_seconds), 200_000
        )
        self._worker: dramatiq.Worker | None = None
        self._thread: Periodic | None = None

    # -- the actor ------------------------------------------------------------

    def _push(self, usage_period_id: str, target: str) -> None:
        started = time.perf_counter()
        # Done with this message: the next sweep may send another for the period.
        self._sent.pop((UUID(usage_period_id), Target(target)))
        outcome = self.pusher.push(UUID(usage_period_id), Target(target))
        self.metrics.push_duration.labels(target).observe(time.perf_counter() - started)
        if outcome is PushOutcome.RETRY:
            raise PushRetryError(f"Stripe unavailable for {usage_period_id}; retrying")

    def _push_batch(self, usage_period_ids: list[str], target: str) -> None:
        started = time.perf_counter()
        ids = [UUID(period_id) for period_id in usage_period_ids]
        for period_id in ids:
            self._sent.pop((period_id, Target(target)))
        outcomes = self.pusher.push_batch(ids, Target(target))
        self.metrics.push_duration.labels(target).observe(time.perf_counter() - started)
        if PushOutcome.RETRY in outcomes.values():
            # The whole message again: the confirmed ones find nothing to do.
            raise PushRetryError(f"Stripe unavailable for part of a batch of {len(ids)}")

    def _observe_stream_call(self, target: Target, events: int) -> None:
        self.metrics.stream_calls.labels(target.value).inc()
        self.metrics.stream_call_events.labels(target.value).observe(events)

    def _observe(self, target: Target, outcome: PushOutcome, intent: Intent | None) -> None:
        self.metrics.pushes.labels(target.value, outcome.value).inc()
        if target is Target.SHADOW:
            if outcome in (PushOutcome.CONFIRMED, PushOutcome.SETTLED):
                self.metrics.shadow_posts.inc()
            elif outcome in (PushOutcome.RETRY, PushOutcome.ABANDONED, PushOutcome.DRIFT):
                self.metrics.shadow_failures.inc()

    # -- the sweep ------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Queue a push for every open period whose counter Stripe does not hold yet."""
        now = self.clock()
        ledger = self.stores.views.ledger
        report = SweepReport(0, 0, 0)
        targets = [Target.LIVE, Target.SHADOW]
        for target in targets:
            behind: list[Candidate] = []
            due: list[str] = []
            pending = unpushed = skipped = 0
            for candidate in ledger.candidates(target.value, now - STRIPE_MAX_AGE):
                if not candidate.needs_push() or not self._mapped(candidate, target):
                    continue
                if target is Target.SHADOW and not self.shadow_enabled:
                    self.metrics.shadow_skipped.inc()
                    skipped += 1
                    continue
                unpushed += 1
                pending += candidate.pending
                behind.append(candidate)
                if not self._recently_sent(candidate.usage_period_id, target):
                    due.append(str(candidate.usage_period_id))
            sent = self._send(due, target)
            oldest = ledger.oldest_unpushed(behind)
            if skipped:
                log.warning("%d shadow pushes skipped: STRIPE_TEST_SECRET_KEY is not set", skipped)
            self.metrics.pending_intents.labels(target.value).set(pending)
            self.metrics.unpushed_periods.labels(target.value).set(unpushed)
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            self.metrics.oldest_unpushed.labels(target.value).set(max(age, 0.0))
            report.sent += sent
            report.pending += pending
            report.unpushed += unpushed
        self.metrics.swept_at.set(time.time())
        return report

    def _send(self, period_ids: list[str], target: Target) -> int:
        """One message per period, or, when many are due, one per 100 for the stream."""
        if len(period_ids) < self.stream_min_batch:
            for period_id in period_ids:
                self.actor.send(period_id, target.value)
            return len(period_ids)
        for start in range(0, len(period_ids), MAX_STREAM_EVENTS):
            self.batch_actor.send(period_ids[start : start + MAX_STREAM_EVENTS], target.value)
        return len(period_ids)

    def _recently_sent(self, period_id: UUID, target: Target) -> bool:
        """One message per period at a time: a queue of repeats would only re-read it.

        A message lost by the broker delays that period's push by the guard time.
        """
        key = (period_id, target)
        if self._sent.get(key):
            return True
        self._sent.put(key, True)
        return False

    @property
    def resend_after(self) -> float:
        """The guard time: after it a period is sent again though its message was not taken."""
        return self._sent.seconds

    @resend_after.setter
    def resend_after(self, seconds: float) -> None:
        self._sent.seconds = seconds

    def _mapped(self, candidate: Candidate, target: Target) -> bool:
        app = self.stores.app
        mapping = app.cached_tenant(candidate.tenant_id).mappings.get(candidate.metric)
        customer = app.cached_customer(candidate.tenant_id, candidate.customer_ref)
        if route_for(mapping, customer, target) is None:
            return False
        assert customer is not None
        start, end = candidate.period_start, candidate.period_end
        if start is None or end is None or customer.bills(candidate.period, start, end):
            return True
        # No invoice covers it: only pushed to take back units it sent (PushService.push).
        delta = PUSH_MODE[Aggregation(candidate.aggregation)] is PushMode.DELTA
        return delta and (candidate.pending or candidate.confirmed_total != 0)

    # -- running --------------------------------------------------------------

    def start(self) -> None:
        self._worker = dramatiq.Worker(self.broker, worker_threads=self.threads, worker_timeout=200)
        self._worker.start()
        self._thread = Periodic(
            "push-sweep",
            self.interval_seconds,
            self._sweep_or_warn,
            log=log,
            what="push sweep",
            join_timeout=10,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        if self._worker is not None:
            self._worker.stop(timeout=10_000)
            self._worker = None
        # The sweep thread's publishing connection (RabbitMQ: one per thread) goes too.
        self.broker.close()

    def _sweep_or_warn(self) -> None:
        try:
            self.sweep()
        except StripeUnavailableError as error:
            log.warning("push sweep could not reach Stripe: %s", error)
