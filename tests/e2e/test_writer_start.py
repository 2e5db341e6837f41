"""`serve`'s writer supervisor: a writer killed while it starts is started again (found
by the soak: a `kill -9` of the writer during a restart of `serve` used to end `serve`);
a writer that exits with a status of its own still stops `serve` at once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from api.serving import WriterSupervisor
from domain.errors import StripeMeterError


def start_in_thread(supervisor: WriterSupervisor) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            supervisor.start(timeout=60)
        except BaseException as error:  # handed to the test
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_a_writer_killed_while_starting_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPEMETER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STRIPEMETER_DATABASE_URL", raising=False)
    supervisor = WriterSupervisor(tmp_path / "writer.sock")
    thread, errors = start_in_thread(supervisor)
    try:
        # Kill the first writer the moment it exists: long before it opens its socket.
        deadline = time.monotonic() + 10
        while supervisor.process is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        first = supervisor.process
        os.kill(first.pid, signal.SIGKILL)
        thread.join(timeout=60)
        assert not thread.is_alive() and errors == []
        assert supervisor.process is not first and supervisor.process.poll() is None
        assert (tmp_path / "writer.sock").exists()
        assert first.wait(5) == -signal.SIGKILL
    finally:
        supervisor.stop()


def test_a_writer_that_fails_on_its_own_stops_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No database to reach: the writer exits with its own status, which is not retried.
    monkeypatch.setenv("STRIPEMETER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    supervisor = WriterSupervisor(tmp_path / "writer.sock")
    try:
        with pytest.raises(StripeMeterError, match=r"exited with status [1-9]"):
            supervisor.start(timeout=60)
    finally:
        supervisor.stop()
