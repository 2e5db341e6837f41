"""The admin UI's static files, ``/admin/assets/<name>``: the vendored uPlot
(api/static/vendor/uplot/README.md says which version and how to update it) and
our chart script. A fixed list read once at import: no path from the request
reaches the file system, and nothing is built or downloaded at run time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

STATIC = Path(__file__).parent.parent / "static"
JAVASCRIPT = "text/javascript; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(relative: str, media_type: str) -> Asset:
    body = (STATIC / relative).read_bytes()
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


ASSETS = {
    "uplot/uPlot.iife.min.js": _asset("vendor/uplot/uPlot.iife.min.js", JAVASCRIPT),
    "uplot/uPlot.min.css": _asset("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    "uplot/LICENSE": _asset("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    "usage-chart.js": _asset("admin/usage-chart.js", JAVASCRIPT),
}


@get("/assets/{name:path}", sync_to_thread=False)
def asset(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    """One of ``ASSETS``, cacheable, with its ETag; anything else is a 404."""
    found = ASSETS.get(name.lstrip("/"))
    if found is None:
        raise NotFoundException(detail=f"no admin asset {name.lstrip('/')!r}")
    headers = {
        "Cache-Control": "public, max-age=3600",
        "ETag": found.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == found.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


PAGES: list[HTTPRouteHandler] = [asset]  # added to ``admin_router``
