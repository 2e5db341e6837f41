"""``/admin/widget``: the origins whose pages may embed the customer widget, edited by form.

The list is ``GET /v1/widget/origins``'s (the tenant's ``widget_origins``); saving
runs what ``PUT /v1/widget/origins`` runs: ``parse_origins`` checks every line
(``scheme://host[:port]``, no path) before anything is saved, so a bad line is the
API's 400 naming ``origins`` on an error page and the stored list is unchanged.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.response import Redirect, Template

from api.admin.actions import admin_form
from api.admin.routes import page, signed_in
from api.auth import ServicesDep
from domain.widget import parse_origins


@get("/widget", sync_to_thread=True)
def widget_page(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    session = signed_in(request, svc)
    origins = list(svc.stores.app.tenant(session.tenant_id).widget_origins)
    return page("widget.html", session, origins=origins)


@post("/widget/origins", status_code=303)
async def save_widget_origins(request: Request[Any, Any, Any], svc: ServicesDep) -> Response[Any]:
    """Replace the origins with the form's lines (blank lines ignored; none allows none)."""
    action = await admin_form(request, svc)
    lines = str(action.form.get("origins", "")).splitlines()
    origins = parse_origins([line.strip() for line in lines if line.strip()])
    app, tenant_id = svc.stores.app, action.session.tenant_id
    await anyio.to_thread.run_sync(lambda: app.set_widget_origins(tenant_id, origins))
    return Redirect("/admin/widget", status_code=303)
