"""Review of issue 13's hard caps: failing tests for what the caps promise and do not keep."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar.testing import TestClient

from adapters.settings import Settings
from api.app import create_app
from tests.conftest import FakeClock
from tests.e2e.conftest import Api, event


def put_cap(api: Api, **body: Any) -> Any:
    return api.call("PUT", "/v1/caps/api_calls", json=body)


def test_a_counted_event_resent_after_a_restart_is_a_duplicate_not_a_cap_refusal(
    api: Api, settings: Settings, clock: FakeClock
) -> None:
    """An event that was counted and reached the hard cap, sent again (a client retry after
    a timeout) by a writer that has not seen its key yet (a restarted process, another
    serve), is answered ``error`` "would exceed the hard cap" instead of ``duplicate``.

    The client is told its usage was refused although it is counted: it may report it
    again under another key once the cap is raised (counted twice), or drop it from its
    own records. The cap is decided in ``UsageRecorder._count`` (domain/recording.py
    ~296) before the key's claim is tried; a refusal writes no claim, so the claim's
    IntegrityError that would reveal the duplicate never happens, and ``_known_keys``
    only knows keys this process wrote or learnt after a collision.
    """
    assert put_cap(api, customerRef=None, limit=10, mode="hard").status_code == 200
    first = api.ingest(event(quantity=10, idempotencyKey="order-1")).json()
    assert first["results"][0]["status"] == "accepted"

    # The same serve restarted (or a second one on the same database): a fresh writer.
    fresh = dataclasses.replace(settings, embedded_worker=False, writer_mode="thread")
    with TestClient(app=create_app(fresh, clock)) as client:
        again = client.post(
            "/v1/events/ingest",
            headers={"Authorization": f"Bearer {api.keys['acme-all']}"},
            json={"events": [event(quantity=10, idempotencyKey="order-1")]},
        ).json()
    result = again["results"][0]
    assert result["status"] == "duplicate", result
