"""POST /v1/replay: derive counters again from the event log; report, and fix on request.

The replay itself, its rules and its cursor are in api/queries/replay.py,
shared with ``stripemeter replay``.
"""

from __future__ import annotations

import anyio.to_thread
import msgspec
from litestar import post
from litestar.params import JSONBody

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.queries.replay import replay_page
from api.schemas import ReplayIn, ReplayOut
from domain.tenancy import Scope


class ReplayController(V1Controller):
    path = "/v1/replay"
    tags = ["replay"]
    guards = [requires(Scope.READ)]

    @post(status_code=200, responses=error_responses(400, 401, 403, 404, 422))
    async def replay(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[ReplayIn]
    ) -> ReplayOut:
        """Re-derive this tenant's counters over a time range; report, or fix (``apply``).

        A page of at most ``limit`` counters per call; ``nextCursor`` continues.
        A dry run (scope ``read``) writes nothing; ``apply`` (scope ``admin``)
        replaces the differing counters and asks for their push.
        """
        return await anyio.to_thread.run_sync(
            lambda: replay_page(
                svc.stores,
                svc.push_worker,
                svc.tenant(principal.tenant_id),
                principal,
                **msgspec.structs.asdict(data),
            )
        )
