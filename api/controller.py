"""What every /v1 controller shares: an API key in the document, strict typed bodies."""

from __future__ import annotations

from litestar import Controller

from api.auth import SECURITY
from api.body import StrictBody


class V1Controller(Controller):
    """A resource under /v1: keyed (each handler's guard names its scope), and its
    ``data: SomeStruct`` bodies decoded by the API's JSON rules (``StrictBody``).
    Responses are encoded as Litestar does (no response DTO)."""

    security = SECURITY
    dto = StrictBody
    return_dto = None
