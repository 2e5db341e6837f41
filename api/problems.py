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
from litestar.openapi.datastructures import ResponseSpec

from adapters.group_commit import WriterStoppedError
from adapters.writer_client import WriterUnavailableError
from api.schemas import NOT_UTF8, FieldError, FieldReason, ProblemDetails, validation_field
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

# What each error status means, as the OpenAPI document describes it.
MEANINGS = {
    400: "Malformed JSON, or a request refused as a whole (``errors`` names the field)",
    401: "No API key, or one that does not authenticate",
    403: "The API key lacks the scope, or names another tenant",
    404: "Not found",
    405: "Method not allowed (the ``Allow`` header lists the methods)",
    409: "Conflicts with what is recorded",
    413: "The body is larger than the service takes (10 MB): nothing was read",
    422: "A value breaks a rule; ``errors`` names each field and reason",
    503: "A dependency (Stripe, the writer) is unavailable; retrying is safe",
}


def created_or_same(struct: type[Any], same: str, *errors: int) -> dict[int, ResponseSpec]:
    """A create-or-confirm route's other answers: 200 (``same``: nothing changed) and errors."""
    return {200: ResponseSpec(struct, description=same), **error_responses(*errors)}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The problem+json answers a route can give, for its ``responses=`` in the document."""
    return {
        status: ResponseSpec(
            ProblemDetails,
            description=MEANINGS[status],
            media_type=PROBLEM,
            generate_examples=False,
        )
        for status in statuses
    }


def problem(
    status: int, title: str, detail: str, errors: list[FieldReason] | None = None
) -> Response[ProblemDetails]:
    body = ProblemDetails("about:blank", title, status, detail, errors or None)
    return Response(content=body, status_code=status, media_type=PROBLEM)


def field_problem(field: str, reason: str, status: int = 422) -> Response[ProblemDetails]:
    return problem(status, "Invalid request", f"{field}: {reason}", [FieldReason(field, reason)])


def malformed(reason: str) -> Response[ProblemDetails]:
    """A body that is not JSON: 400, naming ``body``."""
    reason = f"is not valid JSON: {reason}"
    return problem(
        400, "Malformed JSON", f"the request body {reason}", [FieldReason("body", reason)]
    )


def handle(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, FieldError):
        return field_problem(error.field, error.reason)
    if isinstance(error, InvalidInputError):
        return field_problem(error.field, error.reason)
    if isinstance(error, msgspec.ValidationError):  # a subclass of DecodeError: test it first
        bad = validation_field(error)
        return field_problem(bad.field, bad.reason)
    if isinstance(error, msgspec.DecodeError):
        return malformed(str(error))
    if isinstance(error, UnicodeDecodeError):  # msgspec's, for a string value that is no UTF-8
        return problem(
            400, "Malformed JSON", f"the request body {NOT_UTF8}", [FieldReason("body", NOT_UTF8)]
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
        if _empty_body(error):
            return malformed(EMPTY_BODY)
        errors = _litestar_fields(error)
        if errors:
            return problem(422, "Invalid request", _detail(errors), errors)
        return problem(400, "Invalid request", str(error.detail))
    if isinstance(error, HTTPException):
        response = problem(error.status_code, error.detail or "Error", str(error.detail))
        response.headers.update(error.headers or {})  # a 405's Allow
        return response
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(
        500, "Internal error", "the server failed; nothing of this request was acknowledged"
    )


EMPTY_BODY = "Input data was truncated"  # what msgspec says of an empty document
MISSING = re.compile(r"Missing required [\w ]*parameter '([^']*)'")
REASONS = {"Expected `int`, got `str`": "must be a whole number"}


def _litestar_fields(error: ValidationException) -> list[FieldReason]:
    missing = MISSING.match(str(error.detail))
    if missing:
        return [FieldReason(missing.group(1), "is required")]
    extra = error.extra if isinstance(error.extra, list) else []
    result = []
    for item in extra:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            reason = REASONS.get(message, message[:1].lower() + message[1:])
            result.append(FieldReason(str(item.get("key", "")), reason))
    return result


def _empty_body(error: ValidationException) -> bool:
    """Litestar's answer to an empty body where a ``data`` Struct is required."""
    extra = error.extra if isinstance(error.extra, list) else []
    return any(isinstance(e, dict) and e.get("key") == "data" for e in extra)


def _detail(errors: list[FieldReason]) -> str:
    return "; ".join(f"{e.field}: {e.reason}" for e in errors)
