"""Fixtures of the integration tests: the push/reconciliation ``world``, the CLI's env."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.settings import Settings
from domain.meters import Aggregation
from stripe_emulator.testing import RunningEmulator
from tests.conftest import FakeClock
from tests.integration.world import World


@pytest.fixture
def world(settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[World]:
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    w = World(settings, clock, emulator)
    w.stores.app.register_tenant("acme", "Acme")
    w.map_metric("api_calls", Aggregation.SUM, "sum", allow_negative=True)
    w.map_customer("cus_a")
    yield w
    w.stores.close()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``stripemeter`` command's environment pointing at this test's stores."""
    monkeypatch.setenv("STRIPEMETER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STRIPEMETER_LOG_LEVEL", "WARNING")
    if settings.postgres is None:
        monkeypatch.delenv("STRIPEMETER_DATABASE_URL", raising=False)
    else:
        pg = settings.postgres
        url = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}"
        monkeypatch.setenv("STRIPEMETER_DATABASE_URL", url)
