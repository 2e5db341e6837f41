"""What the parity demo stands on: its constants, its narrator, the API over HTTP, waiting."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

import httpx
import uvicorn
from litestar import Litestar

T = TypeVar("T")

START = datetime(2026, 1, 1, tzinfo=UTC)  # the test clock's first moment, and the anchor
METRIC = "api_calls"
CUSTOMER = "acme-corp"
WAIT_SECONDS = 30.0
OUTSIDE_IDENTIFIER = "sent-outside-stripemeter-1"


class DemoError(Exception):
    """The demo could not set up or finish (exit 2); the message says why."""


class Narrator:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def step(self, moment: datetime, text: str) -> None:
        print(f"\n[{moment:%Y-%m-%d %H:%M} on the test clock] {text}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        print(f"  {text}", file=self.out, flush=True)


class Http:
    """StripeMeter's HTTP API, with one API key; a refusal ends the demo with its detail."""

    def __init__(self, base_url: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.client.request(method, path, json=body, **kwargs)
        if response.status_code >= 400:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json()


@contextmanager
def serving(app: Litestar, sock: socket.socket) -> Iterator[None]:
    """Serve the API on ``sock`` in a thread, with its lifespan (writer, worker) on."""
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="stripemeter-demo-api", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=10)
            raise DemoError("the StripeMeter API did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def wait_for(what: str, probe: Callable[[], tuple[T | None, str]]) -> T:
    """Poll ``probe`` (its value, and what it saw) until it has a value, or give up clearly."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value, seen = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"gave up after {WAIT_SECONDS:.0f} s waiting for {what}; {seen}")
        time.sleep(0.1)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
