"""Domain errors.

Every error the domain raises is a ``StripeMeterError``; the API maps each
branch to one HTTP status in one place (``api/problems.py``)::

    StripeMeterError
     ├── InvalidInputError        a field has a value the domain refuses (400/422)
     ├── NotFoundError            the named thing does not exist for this tenant (404)
     ├── ConflictError            the request contradicts what is already recorded (409)
     │    ├── MetricConflictError        a metric re-declared with other settings
     │    └── OwnedElsewhereError        a Stripe object that belongs to another tenant
     └── AccessError
          ├── UnauthenticatedError       no key, or an unknown or revoked key (401)
          └── ForbiddenError             the key lacks the scope or the tenant (403)
"""

from __future__ import annotations


class StripeMeterError(Exception):
    """Root of every error the domain raises on purpose."""


class InvalidInputError(StripeMeterError):
    """A value the domain refuses, with the field it came from and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFoundError(StripeMeterError):
    pass


class ConflictError(StripeMeterError):
    pass


class MetricConflictError(ConflictError):
    pass


class AccessError(StripeMeterError):
    pass


class UnauthenticatedError(AccessError):
    pass


class ForbiddenError(AccessError):
    pass


class OwnedElsewhereError(ConflictError):
    """A Stripe object another tenant owns; the message never says which tenant."""
