"""Webhook endpoints and the events they subscribe to.

Serves ``/v1/webhook_endpoints`` and ``/v1/events``; delivery lives in ``delivery.py``.
"""

from __future__ import annotations

import secrets

from stripe_emulator.errors import invalid_request, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import metadata, opt_bool, opt_list, opt_str, req_str
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import API_VERSION, Obj, State


def _public(endpoint: Obj) -> Obj:
    # Stripe shows the signing secret only in the create response.
    return {k: v for k, v in endpoint.items() if k != "secret"}


def _get(state: State, endpoint_id: str) -> Obj:
    endpoint = state.webhook_endpoints.get(endpoint_id)
    if endpoint is None:
        raise not_found("webhook_endpoint", endpoint_id)
    return endpoint


def _events(params: object) -> list[str]:
    events = [str(e) for e in opt_list(params, "enabled_events")]  # type: ignore[arg-type]
    if not events:
        raise invalid_request("Missing required param: enabled_events.", param="enabled_events")
    return events


def create(state: State, req: ApiRequest) -> Obj:
    url = req_str(req.params, "url")
    if not url.startswith(("http://", "https://")):
        raise invalid_request("Invalid URL: must start with http:// or https://", param="url")
    endpoint: Obj = {
        "id": new_id("we", 24),
        "object": "webhook_endpoint",
        "api_version": opt_str(req.params, "api_version") or API_VERSION,
        "application": None,
        "created": state.clock.now(),
        "description": opt_str(req.params, "description"),
        "enabled_events": _events(req.params),
        "livemode": False,
        "metadata": metadata(req.params),
        "secret": "whsec_" + secrets.token_hex(16),
        "status": "enabled",
        "url": url,
    }
    state.webhook_endpoints[endpoint["id"]] = endpoint
    return endpoint


def retrieve(state: State, req: ApiRequest) -> Obj:
    return _public(_get(state, req.args["id"]))


def update(state: State, req: ApiRequest) -> Obj:
    endpoint = _get(state, req.args["id"])
    if "url" in req.params:
        endpoint["url"] = req_str(req.params, "url")
    if "enabled_events" in req.params:
        endpoint["enabled_events"] = _events(req.params)
    if (disabled := opt_bool(req.params, "disabled")) is not None:
        endpoint["status"] = "disabled" if disabled else "enabled"
    if "metadata" in req.params:
        endpoint["metadata"] = {**endpoint["metadata"], **metadata(req.params)}
    return _public(endpoint)


def delete(state: State, req: ApiRequest) -> Obj:
    endpoint = _get(state, req.args["id"])
    del state.webhook_endpoints[endpoint["id"]]
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}


def list_(state: State, req: ApiRequest) -> Obj:
    endpoints = [_public(e) for e in newest_first(state.webhook_endpoints.values())]
    return page(endpoints, req.params, "/v1/webhook_endpoints")


def list_events(state: State, req: ApiRequest) -> Obj:
    kind = opt_str(req.params, "type")
    found = [e for e in newest_first(state.events.values()) if kind is None or e["type"] == kind]
    return page(found, req.params, "/v1/events")


def retrieve_event(state: State, req: ApiRequest) -> Obj:
    event = state.events.get(req.args["id"])
    if event is None:
        raise not_found("event", req.args["id"])
    return event


def register(router: Router) -> None:
    router.add("POST", "/v1/webhook_endpoints", create)
    router.add("GET", "/v1/webhook_endpoints", list_)
    router.add("GET", "/v1/webhook_endpoints/{id}", retrieve)
    router.add("POST", "/v1/webhook_endpoints/{id}", update)
    router.add("DELETE", "/v1/webhook_endpoints/{id}", delete)
    router.add("GET", "/v1/events", list_events)
    router.add("GET", "/v1/events/{id}", retrieve_event)
