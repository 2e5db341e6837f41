"""The ASGI application: Stripe's wire protocol in front of the emulator.

Plain ASGI rather than Litestar: Stripe v1 bodies are bracket-notation forms
that no typed decoder understands, and the fault injector needs to drop the
raw connection, which a framework hides. The order of checks per request is
Stripe's: authenticate, rate-limit, (inject a fault), decode, idempotency,
execute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from stripe_emulator import control
from stripe_emulator.errors import StripeAPIError, invalid_request, rate_limited, server_error
from stripe_emulator.forms import decode_form
from stripe_emulator.idempotency import SavedResult
from stripe_emulator.ids import new_id
from stripe_emulator.overlap import METER_EVENT_PATHS, call_keys
from stripe_emulator.routing import ApiRequest, ApiResponse
from stripe_emulator.state import API_VERSION

log = logging.getLogger("stripe_emulator")

if TYPE_CHECKING:
    from stripe_emulator.emulator import Emulator

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STREAM_PATH = "/v2/billing/meter_event_stream"
# Counted per path in ``meter_event_calls``: what a push costs in Stripe calls.
COUNTED_PATHS = ("/v1/billing/meter_events", "/v2/billing/meter_event_session", STREAM_PATH)


class _Answer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers


class EmulatorApp:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        method, path = scope["method"].upper(), scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        request_id = new_id("req", 14)
        if path.startswith("/_emulator"):
            status, payload = control.handle(self.emulator, method, path, query, body)
            await _send(send, _Answer(status, _json(payload), {}), request_id)
            return
        if path in COUNTED_PATHS:
            self.emulator.meter_event_calls[path] += 1
        keys = self._meter_event_keys(method, path, headers, query, body)
        if keys is None:
            await self._serve_api(send, (method, path, headers, query, body), request_id)
            return
        calls = self.emulator.in_flight
        calls.enter(keys)
        try:
            # A slow Stripe: calls that a client does not keep apart overlap here.
            latency = self.emulator.config.meter_event_latency_seconds
            if latency > 0:
                await asyncio.sleep(latency)
            await self._serve_api(send, (method, path, headers, query, body), request_id)
        finally:
            calls.leave(keys)

    def _meter_event_keys(
        self, method: str, path: str, headers: dict[str, str], query: str, body: bytes
    ) -> set[tuple[str, str]] | None:
        """None for any request but a meter-event call; else the customer × meter keys it names."""
        if method != "POST" or path not in METER_EVENT_PATHS:
            return None
        try:
            params = _decode(method, path, headers, query, body)
        except StripeAPIError:
            return set()  # refused when served; it names no key
        return call_keys(self.emulator.state, path, params)

    async def _serve_api(
        self, send: Send, request: tuple[str, str, dict[str, str], str, bytes], request_id: str
    ) -> None:
        method, path, headers, query, body = request
        fault: str | None = None
        try:
            api_key = _api_key(headers)
            if path != STREAM_PATH:
                self._authenticate(api_key)
            allowed = self.emulator.rate_limiter.allow()
            self.emulator.requests.record(method, path, limited=not allowed)
            if not allowed:
                raise rate_limited()
            fault = self.emulator.faults.decide(method, path)
            if fault in ("500", "503"):
                raise server_error(int(fault))
            if fault == "reset":
                if _abort(send):
                    await _until_disconnected(send)
                return
            if fault == "partial_then_500":
                if path == STREAM_PATH:
                    # A failed request saves no idempotent result: the retry runs again.
                    unkeyed = {k: v for k, v in headers.items() if k != "idempotency-key"}
                    self._execute(method, path, unkeyed, (query, _first_half(body)), api_key)
                raise server_error(500)
            answer = self._execute(method, path, headers, (query, body), api_key)
        except StripeAPIError as error:
            answer = _Answer(error.status, _json(error.body(request_id)), error.headers)
        if fault == "timeout_after_write":
            # Applied and saved above; now let the client time out, then drop it.
            await asyncio.sleep(self.emulator.config.hang_seconds)
            if _abort(send):
                await _until_disconnected(send)
            else:
                log.info(
                    "timeout_after_write fault on %s %s: applied; the client had already"
                    " given up and closed the connection",
                    method,
                    path,
                )
            return
        await _send(send, answer, request_id)

    def _authenticate(self, api_key: str) -> None:
        if not api_key:
            raise StripeAPIError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        allowed = self.emulator.config.api_keys
        valid = (
            api_key in allowed
            if allowed is not None
            else api_key.startswith(("sk_test_", "rk_test_"))
        )
        if not valid:
            raise StripeAPIError(401, f"Invalid API Key provided: {_redact(api_key)}")

    def _execute(
        self, method: str, path: str, headers: dict[str, str], raw: tuple[str, bytes], key: str
    ) -> _Answer:
        query, body = raw
        params = _decode(method, path, headers, query, body)
        idem_key = headers.get("idempotency-key") if method in ("POST", "DELETE") else None
        store = self.emulator.idempotency
        if idem_key:
            saved = store.lookup(key, idem_key, method, path, params)
            if saved is not None:
                return _Answer(saved.status, saved.body, {"Idempotent-Replayed": "true"})
        request = ApiRequest(method, path, params, key, idem_key)
        result = self.emulator.dispatch(request)
        response = result if isinstance(result, ApiResponse) else ApiResponse(result)
        answer = _Answer(response.status, _json(response.body), dict(response.headers))
        if idem_key:
            answer.headers["Idempotency-Key"] = idem_key
            if 200 <= answer.status < 300:
                store.save(
                    key, idem_key, SavedResult(method, path, params, answer.status, answer.body)
                )
        return answer


def _decode(method: str, path: str, headers: dict[str, str], query: str, body: bytes) -> Any:
    if method in ("GET", "DELETE") or not body:
        return decode_form(query)
    text = body.decode("utf-8")
    if path.startswith("/v2/") or headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = json.loads(text)
        except ValueError:
            raise invalid_request("Invalid JSON body.") from None
        if not isinstance(decoded, dict):
            raise invalid_request("The request body must be a JSON object.")
        return decoded
    return decode_form(text)


def _first_half(body: bytes) -> bytes:
    """A stream call's body cut to the first half of its events (rounded up)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return body  # an invalid body fails as such when executed
    events = decoded.get("events") if isinstance(decoded, dict) else None
    if isinstance(events, list):
        decoded["events"] = events[: (len(events) + 1) // 2]
    return json.dumps(decoded).encode()


def _api_key(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        # curl -u sk_test_...: sends the key as the basic-auth user name.
        try:
            return base64.b64decode(value).decode().partition(":")[0]
        except ValueError:
            return ""
    return ""


def _redact(key: str) -> str:
    return f"{key[:8]}{'*' * 12}{key[-4:]}" if len(key) > 12 else "****"


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


async def _send(send: Send, answer: _Answer, request_id: str) -> None:
    _no_delay(send)
    headers = {
        "content-type": "application/json",
        "request-id": request_id,
        "stripe-version": API_VERSION,
        **{k.lower(): v for k, v in answer.headers.items()},
    }
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


def _no_delay(send: Send) -> None:
    """Disable Nagle on the connection: headers and body leave as two writes, and
    Nagle plus the client's delayed ACK would add ~40 ms to every response."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(send: Send) -> bool:
    """Drop the TCP connection without a response (RST), as a crashed server would.

    ASGI has no "reset" message, so this reaches uvicorn's transport through the
    bound ``send`` method of its request cycle; SO_LINGER 0 makes close() send RST.
    False when the client had closed the connection already: nothing to drop (and
    uvloop's closed transport has no socket left to set an option on).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("connection reset needs uvicorn's h11/httptools protocol")
    if transport.is_closing():
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # The client may have given up and closed already: then there is nothing to reset.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


async def _until_disconnected(send: Send) -> None:
    """Let uvicorn see the dropped connection before the app returns (a few loop turns).

    It logs "ASGI callable returned without starting response" for a request cycle
    that returns unanswered while still connected; once its ``connection_lost``
    has run, the cycle is ``disconnected`` and nothing is logged.
    """
    cycle = getattr(send, "__self__", None)
    for _ in range(100):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
