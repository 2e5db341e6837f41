"""Running the emulator as a real HTTP server (uvicorn), from code or the command line.

``serve(host, port, config)`` blocks; ``main(argv)`` parses CLI flags and calls
it (``python -m stripe_emulator --port 12111``). ``serving_in_thread`` serves
one beside the caller's own work: StripeMeter's embedded default (no Stripe
key) and the tests (``stripe_emulator.testing``) start it so.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import uvicorn

from stripe_emulator.config import EmulatorConfig
from stripe_emulator.emulator import Emulator
from stripe_emulator.faults import FAULT_KINDS

START_SECONDS = 10  # to start answering, and to stop


def uvicorn_config(emulator: Emulator, *, log_level: str = "warning") -> uvicorn.Config:
    # h11 explicitly: its request cycle exposes the transport the reset fault needs.
    return uvicorn.Config(
        emulator.app,
        http="h11",
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 12111,
    config: EmulatorConfig | None = None,
    *,
    fault_rates: dict[str, float] | None = None,
    log_level: str = "info",
) -> None:
    """Serve one emulator on ``host:port`` until interrupted (blocking)."""
    emulator = Emulator(config)
    if fault_rates:
        emulator.set_fault_rates(fault_rates, seed=emulator.config.fault_seed)
    server = uvicorn.Server(uvicorn_config(emulator, log_level=log_level))
    sock = socket.create_server((host, port))
    try:
        server.run(sockets=[sock])
    finally:
        emulator.close()
        sock.close()


@contextlib.contextmanager
def serving_in_thread(
    emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve ``emulator`` on ``host:port`` (0 = a free port) from a daemon thread.

    Yields the server's base address once it answers; on exit stops the server
    and closes the emulator. OSError when the port is taken (the emulator is
    closed then too), so that a caller can try another.
    """
    try:
        sock = socket.create_server((host, port))
    except OSError:
        emulator.close()
        raise
    server = uvicorn.Server(uvicorn_config(emulator))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="stripe-emulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Stripe emulator did not start")
            time.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_SECONDS)
        emulator.close()
        sock.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stripe_emulator", description="A local, stateful Stripe Billing emulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12111)
    p.add_argument("--rate-limit", type=int, default=100, help="requests/s, 0 = off")
    p.add_argument(
        "--summary-lag", type=float, default=0.0, help="seconds before summaries see events"
    )
    p.add_argument(
        "--invoice-grace", type=int, default=3600, help="seconds from period end to finalisation"
    )
    p.add_argument("--fault-seed", type=int, default=None)
    p.add_argument(
        "--fault-rate",
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"inject a fault kind ({', '.join(FAULT_KINDS)}) into that fraction of requests",
    )
    p.add_argument("--hang-seconds", type=float, default=5.0, help="timeout_after_write hang")
    p.add_argument("--webhook-retry-base", type=float, default=1.0)
    p.add_argument("--webhook-max-attempts", type=int, default=5)
    p.add_argument("--session-ttl", type=int, default=900)
    p.add_argument(
        "--meter-event-latency",
        type=float,
        default=0.0,
        help="seconds each meter-event call takes (lets unguarded calls overlap)",
    )
    p.add_argument("--api-key", action="append", default=None, help="accept only these keys")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    args = parser().parse_args(argv)
    rates: dict[str, float] = {}
    for item in args.fault_rate:
        kind, _, rate = item.partition("=")
        if kind not in FAULT_KINDS:
            parser().error(f"unknown fault kind {kind!r}")
        rates[kind] = float(rate)
    config = EmulatorConfig(
        rate_limit=args.rate_limit,
        summary_lag_seconds=args.summary_lag,
        invoice_grace_seconds=args.invoice_grace,
        fault_seed=args.fault_seed,
        hang_seconds=args.hang_seconds,
        webhook_retry_base_seconds=args.webhook_retry_base,
        webhook_max_attempts=args.webhook_max_attempts,
        session_ttl_seconds=args.session_ttl,
        meter_event_latency_seconds=args.meter_event_latency,
        api_keys=tuple(args.api_key) if args.api_key else None,
    )
    serve(args.host, args.port, config, fault_rates=rates, log_level=args.log_level)
    return 0
