"""The worker's Prometheus port: several workers on one host each find their own.

STRIPEMETER_WORKER_METRICS_PORT is a range by default, ``9464-9473``: a
worker takes the first free port of it, so the first worker on a host takes
9464, the next 9465, and one restarted takes the lowest port free again; N
workers answer on the N ports from 9464 (docs/operations.md says how to
scrape them). Set to one port, it is that port: taken, the worker stops with
one line that says so.
"""

from __future__ import annotations

import errno
import logging

import prometheus_client
from prometheus_client import CollectorRegistry

from adapters.settings import SettingsError

log = logging.getLogger("stripemeter.metrics")

SETTING = "STRIPEMETER_WORKER_METRICS_PORT"


def serve_worker_metrics(
    registry: CollectorRegistry, host: str, first: int, last: int
) -> int | None:
    """Serve ``registry`` on the first free port from ``first`` to ``last``.

    Returns the port (None for port 0: no metrics). Raises SettingsError naming
    the ports and the setting when none can be had.
    """
    if first == 0:
        return None
    for port in range(first, last + 1):
        try:
            prometheus_client.start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and port < last:
                log.debug("metrics port %s:%s is taken; trying the next", host, port)
                continue
            raise SettingsError(_refusal(host, first, last, error)) from None
        return port
    raise AssertionError("unreachable: the loop returns or raises")


def _refusal(host: str, first: int, last: int, error: OSError) -> str:
    reason = error.strerror or str(error)
    if first == last:
        return (
            f"cannot serve the worker's metrics on {host}:{first} ({SETTING}={first}): {reason};"
            f" set {SETTING} to a free port, or 0 for no metrics port"
        )
    return (
        f"cannot serve the worker's metrics on any port of {host}:{first}-{last}"
        f" ({SETTING}={first}-{last}: the first free one): {reason}; set {SETTING} to a free"
        " port or range, or 0 for no metrics port"
    )
