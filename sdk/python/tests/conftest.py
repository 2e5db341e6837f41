"""Fixtures: one service shared by the tests that do not stop it (see sdk_service)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sdk_service import Service


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, str]]]:
    """The service most tests share (each test uses customers of its own)."""
    service = Service(tmp_path_factory.mktemp("sdk-shared") / "data")
    keys = service.set_up()
    service.start()
    try:
        yield service, keys
    finally:
        service.stop()


@pytest.fixture
def service(running: tuple[Service, dict[str, str]]) -> Service:
    return running[0]


@pytest.fixture
def api_key(running: tuple[Service, dict[str, str]]) -> str:
    return running[1]["ingest,read,admin"]


@pytest.fixture
def ingest_only_key(running: tuple[Service, dict[str, str]]) -> str:
    return running[1]["ingest"]


@pytest.fixture
def customer(request: pytest.FixtureRequest) -> str:
    """A customerRef no other test uses."""
    return f"cus_{request.node.name[:40]}_{time.monotonic_ns()}"
