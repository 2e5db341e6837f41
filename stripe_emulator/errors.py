"""Stripe-shaped API errors.

Every failure a handler can report is a :class:`StripeAPIError`; the app turns
it into Stripe's JSON error body and status code, which is what makes the
official SDK raise the matching exception class:

    StripeAPIError (status, type, code, message, param, headers)
    ├── 400 invalid_request_error  -> stripe.InvalidRequestError
    ├── 400 idempotency_error      -> stripe.IdempotencyError
    ├── 401 (missing/invalid key)  -> stripe.AuthenticationError
    ├── 404 resource_missing       -> stripe.InvalidRequestError
    ├── 429 rate_limit             -> stripe.RateLimitError
    └── 500/503 api_error          -> stripe.APIError
"""

from __future__ import annotations

from typing import Any


class StripeAPIError(Exception):
    """An error answered to the client in Stripe's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> StripeAPIError:
    return StripeAPIError(400, message, param=param, code=code)


def missing_param(param: str) -> StripeAPIError:
    return invalid_request(
        f"Missing required param: {param}.", param=param, code="parameter_missing"
    )


def not_found(kind: str, object_id: str, *, param: str = "id") -> StripeAPIError:
    return StripeAPIError(
        404, f"No such {kind}: '{object_id}'", param=param, code="resource_missing"
    )


def unknown_route(method: str, path: str) -> StripeAPIError:
    return StripeAPIError(
        404,
        f"Unrecognized request URL ({method} {path}). The Stripe emulator does not "
        "implement this endpoint; see docs/stripe-emulator.md.",
    )


def server_error(status: int) -> StripeAPIError:
    # Stripe marks transient server failures as safe to retry; the SDK reads this header.
    return StripeAPIError(
        status,
        "An unknown error occurred",
        type="api_error",
        headers={"Stripe-Should-Retry": "true"},
    )


def rate_limited() -> StripeAPIError:
    # Stripe answers rate limits as invalid_request_error / code rate_limit with 429.
    return StripeAPIError(
        429,
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers={"Stripe-Should-Retry": "true", "Retry-After": "1"},
    )
