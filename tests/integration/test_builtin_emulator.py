"""With no Stripe key the service pushes to an emulator it serves itself, through the
emulator's serving entry point (no test helper), on the configured port or, when that
port is taken, on a free one."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import httpx

from adapters.push_worker import start_builtin_emulator


def account(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/account", auth=("sk_test_builtin_emulator", ""), timeout=10)


def test_the_builtin_emulator_answers_on_the_configured_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ExitStack() as stack:
        url = start_builtin_emulator(stack, port)
        assert url == f"http://127.0.0.1:{port}"
        assert account(url).status_code == 200
    # Stopped with the stack: nothing answers there any more.
    with socket.socket() as after:
        assert after.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_moves_the_builtin_emulator_to_a_free_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken, ExitStack() as stack:
        port = taken.getsockname()[1]
        url = start_builtin_emulator(stack, port)
        assert url.startswith("http://127.0.0.1:")
        assert url != f"http://127.0.0.1:{port}"
        assert account(url).json()["id"].startswith("acct_")
