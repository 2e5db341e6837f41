"""The inspection/control API under ``/_emulator`` (outside Stripe's namespace).

JSON in, JSON out, no authentication, never rate-limited or faulted. Each route
calls one method of the :class:`~stripe_emulator.emulator.Emulator` handle.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from stripe_emulator.emulator import Emulator


def handle(emulator: Emulator, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
    try:
        data = json.loads(body) if body else {}
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        return 200, _route(emulator, method, path.removeprefix("/_emulator"), data, args)
    except LookupError as error:
        return 404, {"error": {"type": "emulator_error", "message": str(error)}}
    except (ValueError, TypeError) as error:
        return 400, {"error": {"type": "emulator_error", "message": str(error)}}


def _route(e: Emulator, method: str, path: str, data: Any, args: dict[str, str]) -> Any:
    route = (method, path.rstrip("/"))
    if route == ("GET", ""):
        return e.describe()
    if route == ("POST", "/reset"):
        e.reset()
        return {"reset": True}
    if route == ("GET", "/meter_events"):
        return {"data": e.meter_events(customer=args.get("customer"), meter=args.get("meter"))}
    if route == ("GET", "/totals"):
        return {"data": e.totals()}
    if route == ("GET", "/requests"):
        return e.requests.describe(int(args["since"]) if "since" in args else None)
    if route == ("GET", "/in_flight"):
        return e.meter_event_overlaps()
    if route == ("GET", "/error_reports"):
        return {"data": e.error_reports()}
    if route == ("GET", "/webhook_attempts"):
        return {"data": e.webhook_attempts()}
    if route == ("GET", "/faults"):
        return e.faults.describe()
    if route == ("POST", "/faults"):
        for rule in data.get("rules", []):
            e.fail_next(
                rule["kind"], path=rule.get("path"), method=rule.get("method"),
                count=rule.get("count", 1),
            )  # fmt: skip
        if "rates" in data:
            e.set_fault_rates(data["rates"], seed=data.get("seed"))
        return e.faults.describe()
    if route == ("DELETE", "/faults"):
        e.clear_faults()
        return e.faults.describe()
    if route == ("POST", "/rate_limit"):
        e.set_rate_limit(int(data["per_second"]))
        return {"per_second": e.config.rate_limit}
    if route == ("POST", "/lag"):
        e.set_summary_lag(float(data["seconds"]))
        return {"seconds": e.config.summary_lag_seconds}
    if route == ("POST", "/config"):
        e.configure(**data)
        return e.describe()["config"]
    if route == ("GET", "/clock"):
        return e.state.clock.describe()
    if route == ("POST", "/clock"):
        if "advance" in data:
            e.advance(int(data["advance"]))
        else:
            e.set_now(int(data["now"]), frozen=bool(data.get("frozen", False)))
        return e.state.clock.describe()
    if route == ("POST", "/tick"):
        e.tick()
        return {"now": e.now()}
    raise LookupError(f"no emulator control route {method} /_emulator{path}")
