"""The admin UI's pages under ``/admin``: server-rendered, out of the OpenAPI document.

Every number comes from the query the API answers with (api/queries/*, the
readiness checks and the metrics registry); the templates only lay it out.
Errors are rendered as error pages through api/problems.py's mapping, so a
page shows the API's status and reason, never a made-up number.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, Response, Router, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from api import problems
from api.admin import assets
from api.admin.overview import overview
from api.admin.sessions import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AdminSession,
    AdminSessions,
    new_token,
    same_token,
)
from api.admin.usage_charts import usage_charts
from api.auth import ServicesDep
from api.queries.mappings import customer_out, mapping_out
from api.queries.meters import list_meters
from api.queries.projection import project_cost
from api.queries.usage import current_usage
from api.schemas_projection import Projection
from api.services import Services
from domain import fields
from domain.errors import NotFoundError, UnauthenticatedError
from domain.stripe_port import StripeError
from domain.tenancy import Scope

CUSTOMERS_PAGE = 50


class SignedOutError(Exception):
    """No (or an expired) admin session: the page answers with the sign-in form."""


def sessions_of(request: Request[Any, Any, Any]) -> AdminSessions:
    result: AdminSessions = request.app.state.admin_sessions
    return result


def signed_in(request: Request[Any, Any, Any], svc: Services) -> AdminSession:
    """The request's session, while the key that opened it is not revoked."""
    sessions = sessions_of(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = sessions.find(session_id)
    if session is None:
        raise SignedOutError
    if not svc.stores.app.key_is_active(session.key_id):
        sessions.close(session_id)
        raise SignedOutError
    request.state.admin_session = session  # for error_page, without reading it again
    return session


def secure(request: Request[Any, Any, Any]) -> bool:
    """Secure cookies over HTTPS (the service trusts no X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def set_cookie(
    response: Response[Any], request: Request[Any, Any, Any], key: str, value: str
) -> None:
    response.set_cookie(
        key, value, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure(request)
    )


def page(name: str, session: AdminSession | None, status: int = 200, **context: Any) -> Template:
    return Template(template_name=name, context={"session": session, **context}, status_code=status)


def login_form(request: Request[Any, Any, Any], error: str | None, status: int) -> Template:
    token = new_token()
    response = page("login.html", None, status, csrf_token=token, error=error)
    set_cookie(response, request, LOGIN_COOKIE, token)
    return response


@get("/login", sync_to_thread=True)
def login_page(request: Request[Any, Any, Any]) -> Response[Any]:
    if sessions_of(request).find(request.cookies.get(SESSION_COOKIE)) is not None:
        return Redirect("/admin")
    return login_form(request, None, 200)


@post("/login", status_code=303)
async def sign_in(request: Request[Any, Any, Any], svc: ServicesDep) -> Response[Any]:
    """Sign in with an API key of scope ``admin`` or ``read``, checked as the API checks
    it (``Services.principal``); the session remembers the key's tenant and scopes."""
    form = await request.form()
    if not same_token(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf_token", ""))):
        return login_form(request, "The form expired or was not sent by this page: try again.", 403)
    secret = str(form.get("api_key", "")).strip()
    if not secret:
        return login_form(request, "api_key: enter an API key.", 422)
    try:
        principal = await anyio.to_thread.run_sync(svc.principal, secret)
    except UnauthenticatedError:
        return login_form(request, "This API key is not valid.", 401)
    if not principal.allows(Scope.READ):
        scopes = ", ".join(sorted(s.value for s in principal.scopes))
        message = (
            f"This key has the scopes {scopes}; the admin UI needs a key with 'admin' or 'read'."
        )
        return login_form(request, message, 403)
    session_id, _ = await anyio.to_thread.run_sync(sessions_of(request).open, principal)
    response: Response[Any] = Redirect("/admin", status_code=303)
    set_cookie(response, request, SESSION_COOKIE, session_id)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@post("/logout", status_code=303)
async def sign_out(request: Request[Any, Any, Any]) -> Response[Any]:
    sessions, session_id = sessions_of(request), request.cookies.get(SESSION_COOKIE)
    session = await anyio.to_thread.run_sync(sessions.find, session_id)
    if session is None:
        raise SignedOutError
    form = await request.form()
    if not same_token(session.csrf_token, str(form.get("csrf_token", ""))):
        raise HTTPException(status_code=403, detail="the CSRF token is missing or wrong")
    await anyio.to_thread.run_sync(sessions.close, session_id)
    response: Response[Any] = Redirect("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@get("/", sync_to_thread=True)
def overview_page(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    session = signed_in(request, svc)
    ready, checks, families = overview(svc)
    return page("overview.html", session, ready=ready, checks=checks, families=families)


@get("/metrics", sync_to_thread=True)
def metrics_page(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    session = signed_in(request, svc)
    tenant = svc.tenant(session.tenant_id)
    meters = list_meters(svc.stores.app, session.tenant_id)
    mappings = {
        name: mapping_out(m, tenant.metrics[m.metric]) for name, m in tenant.mappings.items()
    }
    return page("metrics.html", session, meters=meters, mappings=mappings)


@get("/customers", sync_to_thread=True)
def customers_page(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    q: FromQuery[str] = "",
    after: FromQuery[str | None] = None,
) -> Template:
    session = signed_in(request, svc)
    prefix = fields.customer_ref(q, "q") if q else ""
    if after is not None:
        fields.customer_ref(after, "after")
    views = svc.stores.views
    # Customers mapped to Stripe and customers with usage, merged in customerRef order
    # (each list read one past the page, so the merge's page is complete).
    mapped = {
        row.customer_ref: customer_out(row)
        for row in views.customers.page(session.tenant_id, after, CUSTOMERS_PAGE + 1, prefix)
    }
    used = views.counters.customer_refs(session.tenant_id, after, CUSTOMERS_PAGE + 1, prefix)
    refs = sorted(set(mapped) | set(used))
    shown = refs[:CUSTOMERS_PAGE]
    more = shown[-1] if len(refs) > CUSTOMERS_PAGE else None
    return page(
        "customers.html",
        session,
        q=q,
        customers=[(ref, mapped.get(ref)) for ref in shown],
        more=more,
    )


@get("/customers/{customer_ref:str}", sync_to_thread=True)
def customer_page(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    customer_ref: FromPath[str],
    granularity: FromQuery[str] = "day",
) -> Template:
    session = signed_in(request, svc)
    ref = fields.customer_ref(customer_ref)
    usage = current_usage(svc.stores, session.tenant_id, ref, None, None)
    customer = svc.stores.app.customer(session.tenant_id, ref)
    mapped = customer_out(customer) if customer is not None and customer.mapped else None
    projection, cost_error = _projection(svc, session, ref, usage.period)
    units = {m.name: m.unit for m in list_meters(svc.stores.app, session.tenant_id)}
    charts = usage_charts(
        svc.stores, session.tenant_id, usage, granularity, units, svc.stores.app.clock()
    )
    return page(
        "customer.html",
        session,
        usage=usage,
        customer=mapped,
        projection=projection,
        cost_error=cost_error,
        units=units,
        charts=charts,
    )


def _projection(
    svc: Services, session: AdminSession, ref: str, period: str
) -> tuple[Projection | None, str | None]:
    """The cost as ``/v1/usage/projection`` answers it, or why there is none."""
    try:
        return project_cost(
            svc.stores, svc.price_book, session.tenant_id, ref, period, svc.clock()
        ), None
    except NotFoundError as error:
        return None, f"No cost: {error}"
    except StripeError as error:
        return None, f"Prices could not be read from Stripe: {error}"


def signed_out(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    return Redirect("/admin/login")


def error_page(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Any other error as the API would answer it (status and reason), as a page."""
    answer = problems.handle(request, error)
    body = answer.content
    session: AdminSession | None = request.state.get("admin_session")
    if session is None:  # an error before signed_in ran: one read, on the event loop
        session = sessions_of(request).find(request.cookies.get(SESSION_COOKIE))
    return page(
        "error.html",
        session,
        answer.status_code or 500,
        title=getattr(body, "title", "Error"),
        detail=getattr(body, "detail", str(error)),
    )


admin_router = Router(
    path="/admin",
    route_handlers=[
        login_page,
        sign_in,
        sign_out,
        overview_page,
        metrics_page,
        customers_page,
        customer_page,
        *assets.PAGES,
    ],
    include_in_schema=False,
    exception_handlers={SignedOutError: signed_out, Exception: error_page},
)
