"""The client's settings: read from arguments, else from the environment, once."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

DEFAULT_BASE_URL = "http://127.0.0.1:3000"
API_KEY_ENV = "STRIPEMETER_API_KEY"
BASE_URL_ENV = "STRIPEMETER_API_URL"
MAX_BATCH_EVENTS = 1_000  # the service's default STRIPEMETER_MAX_BATCH_EVENTS


def resolve_api_key(api_key: str | None) -> str | None:
    return api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None


def resolve_base_url(base_url: str | None) -> str:
    url = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url.rstrip("/")


@dataclass(frozen=True)
class RetryPolicy:
    """How a request is tried again after no answer, a 429 or a 5xx.

    Attempt ``n`` (from 1) that fails waits a random time between 0 and
    ``min(max_delay, initial_delay * 2**(n-1))`` ("full jitter", so that many
    clients failing together do not come back together), or the answer's
    ``Retry-After`` when that is longer (at most ``max_retry_after``). After
    ``max_attempts`` attempts the last error is raised. Retrying is safe: every
    event carries its key from before the first attempt.
    """

    max_attempts: int = 6
    initial_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        # The exponent capped: 2**1024 is past any float (and any max_delay).
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt - 1, 64))
        wait = random.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


NO_RETRIES = RetryPolicy(max_attempts=1)
