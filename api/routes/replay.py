"""POST /v1/replay: derive counters again from the event log; report, and fix on request.

The replay itself, its rules and its cursor are in api/queries/replay.py,
shared with ``stripemeter replay``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, post

from api.auth import authorize_async, services
from api.queries.replay import replay_page
from api.schemas import ReplayIn, ReplayOut, decode_json
from domain.tenancy import Scope


@post("/v1/replay", status_code=200)
async def replay(request: Request[Any, Any, Any]) -> ReplayOut:
    """Re-derive this tenant's counters over a time range; report, or fix (``apply``).

    A page of at most ``limit`` counters per call; ``nextCursor`` continues.
    A dry run (scope ``read``) writes nothing; ``apply`` (scope ``admin``)
    replaces the differing counters and asks for their push.
    """
    principal = await authorize_async(request, Scope.READ)
    body = decode_json(await request.body(), ReplayIn)
    svc = services(request)
    return await anyio.to_thread.run_sync(
        lambda: replay_page(
            svc.stores,
            svc.push_worker,
            svc.tenant(principal.tenant_id),
            principal,
            **msgspec.structs.asdict(body),
        )
    )
