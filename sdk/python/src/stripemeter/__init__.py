"""StripeMeter's Python client: send usage exactly once, read counters and audits.

    from stripemeter import StripeMeterClient

    with StripeMeterClient() as client:  # $STRIPEMETER_API_KEY, http://127.0.0.1:3000
        client.track("api_calls", "cus_123", 1)

The public surface is what this module exports; the modules behind it are private.
"""

from stripemeter._async_batcher import AsyncBatcher
from stripemeter._async_client import AsyncStripeMeterClient
from stripemeter._batcher import Batcher
from stripemeter._batching import BatcherStats, Failure
from stripemeter._client import StripeMeterClient
from stripemeter._cloudevents import to_cloudevent
from stripemeter._config import DEFAULT_BASE_URL, RetryPolicy
from stripemeter._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldProblem,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    ServerError,
    StripeMeterError,
)
from stripemeter._events import UsageEvent, canonical_form, content_key
from stripemeter._results import EventResult, IngestResult
from stripemeter._types import (
    Bucket,
    Counter,
    CurrentUsage,
    EventRecord,
    NotBilled,
    ReconciliationLine,
    ReconciliationReport,
    UsageHistory,
    WidgetToken,
)
from stripemeter._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncBatcher",
    "AsyncStripeMeterClient",
    "AuthenticationError",
    "BadRequestError",
    "Batcher",
    "BatcherStats",
    "Bucket",
    "ConflictError",
    "Counter",
    "CurrentUsage",
    "EventRecord",
    "EventResult",
    "Failure",
    "FieldProblem",
    "IngestResult",
    "NotBilled",
    "NotFoundError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "ReconciliationLine",
    "ReconciliationReport",
    "RetryPolicy",
    "ServerError",
    "StripeMeterClient",
    "StripeMeterError",
    "UsageEvent",
    "UsageHistory",
    "WidgetToken",
    "__version__",
    "canonical_form",
    "content_key",
    "to_cloudevent",
]
