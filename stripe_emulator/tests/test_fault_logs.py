"""An injected fault is not an error of the emulator: its logs stay quiet about it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.conftest import TEST_CONFIG
from stripe_emulator.tests.helpers import make_meter, send


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[Collected]:
    """What the emulator and uvicorn (whose loggers do not reach the root) log."""
    handler = Collected()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "stripe_emulator")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_client_gone_before_timeout_after_write_drops_it_is_one_info_line(
    emu: RunningEmulator, client: Any, logs: Collected
) -> None:
    make_meter(client)
    customer = str(client.v1.customers.create({}).id)
    emu.fail_next("timeout_after_write", path="/v1/billing/meter_events")
    impatient = emu.client(max_network_retries=0, http_client=stripe.RequestsClient(timeout=0.1))
    with pytest.raises(stripe.APIConnectionError):
        send(impatient, customer, 4)
    # The client closed its end long before the emulator's hang ends and it drops the call.
    hang = float(TEST_CONFIG["hang_seconds"])  # type: ignore[arg-type]
    deadline = time.monotonic() + hang + 5
    while not logs.records and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # anything logged with it
    assert emu.totals()[0]["value"] == 4  # the write is applied
    assert [(r.levelno, r.name) for r in logs.records] == [(logging.INFO, "stripe_emulator")]
    assert "client had already given up" in logs.records[0].getMessage()
    assert not any(r.exc_info for r in logs.records)


def test_a_reset_fault_logs_no_error(emu: RunningEmulator, client: Any, logs: Collected) -> None:
    make_meter(client)
    customer = str(client.v1.customers.create({}).id)
    emu.fail_next("reset", path="/v1/billing/meter_events")
    once = emu.client(max_network_retries=0)
    with pytest.raises(stripe.APIConnectionError):
        send(once, customer, 4)
    time.sleep(0.3)  # anything uvicorn logs after the app returns
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []
    assert emu.totals() == [] or emu.totals()[0]["value"] == 0  # a reset applies nothing
