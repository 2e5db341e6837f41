"""Review of issue 13's outbound webhooks: failing tests for what they promise and break."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import UUID

from adapters.persistence import Stores
from adapters.settings import Settings
from adapters.webhooks import Webhooks
from domain.deliveries import Outcome
from domain.webhook_endpoints import WebhookEndpointsService
from tests.conftest import FakeClock
from tests.integration.test_webhooks import SETTINGS, close_a_period, endpoint, send


@contextmanager
def answering(status: int, body: bytes) -> Iterator[str]:
    """A real local endpoint that answers every POST with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_receiver_answering_a_nul_byte_does_not_stop_the_views(
    stores: Stores, clock: FakeClock, settings: Settings
) -> None:
    """The tenant's own endpoint answers with a body holding a NUL byte (any binary
    answer, a gzip page, a crash dump). The sender keeps the body's first 1,024
    characters (``excerpt``, adapters/webhook_http.py:35, decodes with ``replace`` but
    keeps U+0000) in ``AttemptRecorded.response_body``, and the deliveries view writes it
    into a PostgreSQL TEXT column (projections/webhook_deliveries.py:127-141), which
    refuses U+0000: the views' runner fails on that event and, the view being one of the
    views (all applied in one transaction, projections/runner.py:193-199), stops every
    view for every tenant (counters, ledger, deliveries): each retry fails on it again.
    """
    config = dataclasses.replace(settings, webhooks=SETTINGS)
    tenant = stores.app.register_tenant("acme", "Acme").id
    with answering(500, b"oops\x00binary") as url:
        endpoint(stores, tenant, url, "period.closed")
        webhooks = Webhooks(stores, config, clock)
        close_a_period(stores, clock, tenant, "cus_1")
        outcomes = send(stores, webhooks)  # sends, then catches the views up
    assert list(outcomes.values()) == [Outcome.RETRYING]
    rows = stores.views.webhook_deliveries.page(tenant, _only(stores, tenant), None, 10)
    [(_, attempts)] = rows
    assert attempts[0].status_code == 500
    assert stores.views.runner.lag().events == 0


def _only(stores: Stores, tenant: UUID) -> UUID:
    [hook] = WebhookEndpointsService(stores.app).endpoints(tenant).listed()
    return hook.id
