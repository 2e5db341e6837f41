"""Outbound webhooks in a running process: the outbox follower and the sender, together.

Built by ``Background`` wherever Stripe pushes run: the API process in the
embedded default, ``stripemeter worker`` in production (not with
``--no-pushes``). Several workers may run it at once: the outbox's deliveries
collide on their ids, and the senders' claims on the aggregates' versions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from adapters.persistence import Stores, schema_lock
from adapters.settings import Settings
from adapters.webhook_http import HttpxTransport, WebhookTransport
from adapters.webhook_outbox import WebhookOutbox
from adapters.webhook_sender import WebhookSender


class Webhooks:
    def __init__(
        self,
        stores: Stores,
        config: Settings,
        clock: Callable[[], datetime],
        transport: WebhookTransport | None = None,
    ) -> None:
        settings = config.webhooks
        # Its table is created here, not with the views: one process at a time (PostgreSQL).
        with schema_lock(config):
            self.outbox = WebhookOutbox(
                stores.app, stores.views.store, clock, poll_interval=settings.poll_seconds
            )
        self.sender = WebhookSender(
            stores.app,
            stores.views.webhook_deliveries,
            transport or HttpxTransport(settings.timeout_seconds),
            settings.retry_policy(),
            clock,
            timeout_seconds=settings.timeout_seconds,
            threads=settings.threads,
            poll_interval=settings.poll_seconds,
        )

    def start(self) -> None:
        self.outbox.start()
        self.sender.start()

    def stop(self) -> None:
        self.sender.stop()
        self.outbox.stop()
