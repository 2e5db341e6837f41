"""``/admin/replay``: a replay's dry run, then its apply behind a confirm form.

Both run ``replay_page`` (api/queries/replay.py) as ``POST /v1/replay`` does, with
the session key as principal: the dry run (any session) writes nothing; the apply
(an admin session, CSRF-checked) carries the dry run's exact parameters.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, get, post
from litestar.params import FromQuery
from litestar.response import Template

from api.admin.actions import admin_form, principal_of
from api.admin.routes import page, signed_in
from api.auth import ServicesDep
from api.queries.replay import replay_page
from api.schemas import FieldError, ReplayOut
from api.services import Services
from domain.tenancy import Principal

FIELDS = ("since", "until", "metrics", "customers", "cursor", "limit")


def _names(text: str) -> list[str] | None:
    """A comma-separated list of names; empty: every one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def _limit(text: str) -> int:
    try:
        return int(text or "200")
    except ValueError:
        raise FieldError("limit", "must be a whole number") from None


def _run(svc: Services, principal: Principal, mode: str, params: dict[str, str]) -> ReplayOut:
    return replay_page(
        svc.stores,
        svc.push_worker,
        svc.tenant(principal.tenant_id),
        principal,
        since=params["since"],
        until=params["until"],
        mode=mode,
        metrics=_names(params["metrics"]),
        customers=_names(params["customers"]),
        cursor=params["cursor"] or None,
        limit=_limit(params["limit"]),
    )


@get("/replay", sync_to_thread=True)
def replay_form(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    metrics: FromQuery[str] = "",
    customers: FromQuery[str] = "",
    cursor: FromQuery[str] = "",
    limit: FromQuery[str] = "200",
) -> Template:
    """The form; with ``since`` and ``until``, the dry run's report and the apply form."""
    session = signed_in(request, svc)
    params = {
        "since": since,
        "until": until,
        "metrics": metrics,
        "customers": customers,
        "cursor": cursor,
        "limit": limit,
    }
    result = None
    if since or until:
        result = _run(svc, principal_of(svc, session), "dry-run", params)
    return page("replay.html", session, params=params, result=result)


@post("/replay/apply", status_code=200)
async def replay_apply(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    """Apply the replay the dry run showed (same parameters); show what it wrote."""
    action = await admin_form(request, svc)
    params = {name: str(action.form.get(name, "")) for name in FIELDS}
    result = await anyio.to_thread.run_sync(lambda: _run(svc, action.principal, "apply", params))
    return page("replay.html", action.session, params=params, result=result)
