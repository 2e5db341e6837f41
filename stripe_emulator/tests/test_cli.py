"""``python -m stripe_emulator`` serves the API on the requested port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import stripe

from stripe_emulator.server import parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_flags_parse() -> None:
    args = parser().parse_args(["--port", "1", "--rate-limit", "0", "--fault-rate", "503=0.1"])
    assert (args.port, args.rate_limit, args.fault_rate) == (1, 0, ["503=0.1"])


def test_module_entry_point_serves_the_sdk() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        client = stripe.StripeClient(
            "sk_test_cli", base_addresses={"api": url, "meter_events": url}, max_network_retries=0
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                customer = client.v1.customers.create({"name": "cli"})
                break
            except stripe.APIConnectionError:
                assert time.monotonic() < deadline, "emulator did not start"
                time.sleep(0.05)
        assert customer.name == "cli"
    finally:
        process.terminate()
        process.wait(timeout=10)
