"""Every error response, in one place, as RFC 9457 problem details.

Domain errors map to statuses here and nowhere else; a handler never builds
an error response itself. Unexpected errors become a 500 that names no
internals (they are logged with their traceback instead).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from adapters.group_commit import WriterStoppedError
from adapters.writer_client import WriterUnavailableError
from api.schemas import FieldError, validation_field
from domain.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    StripeMeterError,
    UnauthenticatedError,
)
from domain.stripe_port import StripeRejectedError, StripeUnavailableError

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def problem(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> Response[Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(content=body, status_code=status, media_type=PROBLEM)


def _field(field: str, reason: str) -> dict[str, str]:
    return {"field": field, "reason": reason}


def field_problem(field: str, reason: str, status: int = 422) -> Response[Any]:
    return problem(status, "Invalid request", f"{field}: {reason}", [_field(field, reason)])


def handle(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, FieldError):
        return field_problem(error.field, error.reason)
    if isinstance(error, InvalidInputError):
        return field_problem(error.field, error.reason)
    if isinstance(error, msgspec.ValidationError):  # a subclass of DecodeError: test it first
        bad = validation_field(error)
        return field_problem(bad.field, bad.reason)
    if isinstance(error, msgspec.DecodeError):
        reason = f"is not valid JSON: {error}"
        return problem(
            400, "Malformed JSON", f"the request body {reason}", [_field("body", reason)]
        )
    if isinstance(error, UnauthenticatedError):
        response = problem(401, "Unauthenticated", str(error))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(error, ForbiddenError):
        return problem(403, "Forbidden", str(error))
    if isinstance(error, NotFoundError):
        return problem(404, "Not found", str(error))
    if isinstance(error, ConflictError):
        return problem(409, "Conflict", str(error))
    if isinstance(error, StripeMeterError):
        return problem(400, "Refused", str(error))
    if isinstance(error, StripeUnavailableError):
        response = problem(503, "Stripe unavailable", f"Stripe did not answer: {error}; try again")
        response.headers["Retry-After"] = "5"
        return response
    if isinstance(error, StripeRejectedError):
        return problem(422, "Refused by Stripe", str(error))
    if isinstance(error, WriterUnavailableError):
        log.error("ingest refused: %s", error)
        response = problem(
            503, "Writer unavailable", f"{error}; nothing was acknowledged, retrying is safe"
        )
        response.headers["Retry-After"] = "1"
        return response
    if isinstance(error, WriterStoppedError):
        return problem(503, "Shutting down", str(error))
    if isinstance(error, ValidationException):
        # Litestar's own checks of query and path values (a missing parameter, a limit
        # that is no number): a bad value like any other, so 422 naming it.
        errors = _litestar_fields(error)
        if errors:
            return problem(422, "Invalid request", _detail(errors), errors)
        return problem(400, "Invalid request", str(error.detail))
    if isinstance(error, HTTPException):
        return problem(error.status_code, error.detail or "Error", str(error.detail))
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(
        500, "Internal error", "the server failed; nothing of this request was acknowledged"
    )


MISSING = re.compile(r"Missing required [\w ]*parameter '([^']*)'")
REASONS = {"Expected `int`, got `str`": "must be a whole number"}


def _litestar_fields(error: ValidationException) -> list[dict[str, str]]:
    missing = MISSING.match(str(error.detail))
    if missing:
        return [{"field": missing.group(1), "reason": "is required"}]
    extra = error.extra if isinstance(error.extra, list) else []
    result = []
    for item in extra:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            reason = REASONS.get(message, message[:1].lower() + message[1:])
            result.append({"field": str(item.get("key", "")), "reason": reason})
    return result


def _detail(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
