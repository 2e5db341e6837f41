"""What every admin action (a POST form on a page) checks before it acts.

The session must be signed in, the form must carry the session's CSRF token, and
the session's key must hold the ``admin`` scope (a read-only session gets 403 on
every action, as the API's guards answer the same key). The action then runs as
the API would for that key: the principal is the key's, and the actor recorded is
the API's ``api-key:<id>``, after the name typed in the form's optional ``actor``
field when there is one (``Ada (api-key:<id>)``, checked as the API's ``actor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from litestar import Request
from litestar.datastructures import FormMultiDict
from litestar.exceptions import HTTPException

from api.admin.routes import signed_in
from api.admin.sessions import AdminSession, same_token
from api.routes.reconciliation import actor_of
from api.services import Services
from domain.tenancy import Principal


@dataclass(frozen=True)
class AdminAction:
    session: AdminSession
    principal: Principal  # the session's key, as the API sees it
    form: FormMultiDict
    actor: str  # who acts, as recorded: "[name ](api-key:<id>)"
    name: str  # the name typed in the form ("" when none), to offer again on the next form


async def admin_form(request: Request[Any, Any, Any], svc: Services) -> AdminAction:
    """The signed-in admin session, its key as a principal, the checked form and actor.

    Everything is checked before anything acts: a bad actor name is a 400 naming
    ``actor``, as the API answers it."""
    session = await anyio.to_thread.run_sync(signed_in, request, svc)
    form = await request.form()
    if not same_token(session.csrf_token, str(form.get("csrf_token", ""))):
        raise HTTPException(status_code=403, detail="the CSRF token is missing or wrong")
    if session.read_only:
        raise HTTPException(
            status_code=403,
            detail="this session's key is read-only: actions need a key with the 'admin' scope",
        )
    principal = principal_of(svc, session)
    named = str(form.get("actor", "")).strip()
    return AdminAction(session, principal, form, actor_of(principal, named or None), named)


def principal_of(svc: Services, session: AdminSession) -> Principal:
    """The session's key as the API sees it (the scopes it had at sign-in)."""
    slug = svc.tenant(session.tenant_id).slug
    return Principal(session.tenant_id, slug, session.key_id, session.scopes)
