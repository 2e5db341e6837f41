"""The exceptions this package raises, all under ``StripeMeterError``::

    StripeMeterError
    ├── APIError                  the service answered with an error status
    │   ├── BadRequestError       400/422: ``field`` and ``reason`` name what is wrong
    │   ├── AuthenticationError   401: no key, an unknown or a revoked key
    │   ├── PermissionDeniedError 403: the key lacks the scope
    │   ├── NotFoundError         404
    │   ├── ConflictError         409
    │   ├── RateLimitError        429, still after every retry
    │   └── ServerError           5xx, still after every retry
    ├── APIConnectionError        no answer (refused, reset, ...), still after every retry
    │   └── APITimeoutError       no answer in time, still after every retry
    └── QueueFullError            a batcher's queue is full (``when_full="raise"``)

A request that ends in ``RateLimitError``, ``ServerError`` or
``APIConnectionError`` may be sent again as it is: its events keep their
keys, so what the service already recorded comes back as ``duplicate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldProblem:
    """One refused field of a problem answer, named as the client sent it (camelCase)."""

    field: str
    reason: str


class StripeMeterError(Exception):
    """Everything this package raises on purpose."""


class APIError(StripeMeterError):
    """The service answered with an error status (RFC 9457 problem details when it could)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[FieldProblem] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.body = body


class BadRequestError(APIError):
    """400 or 422: the request or a value in it breaks a rule."""

    @property
    def field(self) -> str | None:
        return self.errors[0].field if self.errors else None

    @property
    def reason(self) -> str | None:
        return self.errors[0].reason if self.errors else None


class AuthenticationError(APIError):
    """401: no API key, an unknown one or a revoked one."""


class PermissionDeniedError(APIError):
    """403: the key lacks the scope, or the body names another tenant."""


class NotFoundError(APIError):
    """404: no such metric, customer, report, ..."""


class ConflictError(APIError):
    """409: conflicts with what the service has recorded."""


class RateLimitError(APIError):
    """429, still after every retry."""


class ServerError(APIError):
    """5xx (a 503 during a restart included), still after every retry."""


class APIConnectionError(StripeMeterError):
    """No answer from the service (connection refused or reset), still after every retry."""


class APITimeoutError(APIConnectionError):
    """No answer within the timeout, still after every retry."""


class QueueFullError(StripeMeterError):
    """A batcher's queue is full and it was told to raise rather than wait."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_for(status: int, body: Any, text: str) -> APIError:
    """The exception for an error answer, read from its problem details when it has them."""
    title, detail, errors = "Error", text[:500], []
    if isinstance(body, dict):
        title = str(body.get("title", title))
        detail = str(body.get("detail", detail))
        for item in body.get("errors") or []:
            if isinstance(item, dict):
                errors.append(FieldProblem(str(item.get("field", "")), str(item.get("reason", ""))))
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return kind(status, title, detail, errors, body)
