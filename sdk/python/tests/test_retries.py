"""Retries against a real local HTTP server that answers from a script."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from scripted_server import Answer, scripted

from stripemeter import RetryPolicy, StripeMeterClient

INGESTED = {
    "accepted": 1,
    "duplicates": 0,
    "conflicts": 0,
    "errors": 0,
    "results": [{"index": 0, "status": "accepted"}],
}
NO_JITTER = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)


def test_a_retry_after_given_as_an_http_date_is_honoured() -> None:
    # RFC 9110 allows either form; a proxy or load balancer in front of the service may
    # send the date. It has whole seconds: two ahead of this second is at least one from now.
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    busy = Answer(503, {"title": "busy"}, {"Retry-After": format_datetime(later, usegmt=True)})
    with scripted([busy, Answer(200, INGESTED)]) as server:
        with StripeMeterClient("k", base_url=server.url, retry=NO_JITTER) as client:
            assert client.track("api_calls", "cus_1", 1).status == "accepted"
        first, second = server.seen
        assert second.at - first.at >= 0.9
