"""Review of issue 13's hard caps: failing tests for what the caps promise and do not keep."""

from __future__ import annotations

from typing import Any

from domain.caps import CapMode
from tests.e2e.conftest import Api, event

HARD = CapMode.HARD


def put_cap(api: Api, **body: Any) -> Any:
    return api.call("PUT", "/v1/caps/api_calls", json=body)


def test_the_same_refused_event_twice_in_a_batch_counts_one_period_reaching_its_cap(
    api: Api,
) -> None:
    """``stripemeter_caps_reached_total`` counts "periods that reached a cap"
    (docs/caps.md), and the period records ``CapReached`` once. A batch holding the same
    event twice (a client that retries inside its own batch), refused by the hard cap,
    counts two: the second copy's result is the first one's object
    (domain/recording.py:147-153, ``results[position] = refused``), ``cap_reached``
    included, and ``Metrics.observe`` (adapters/metrics.py:254-263) counts each result
    carrying ``cap_reached``.
    """
    assert put_cap(api, customerRef=None, limit=5, mode="hard").status_code == 200
    same = event(quantity=10, idempotencyKey="twice")
    answer = api.ingest(same, same).json()
    assert [r["status"] for r in answer["results"]] == ["error", "error"]
    metrics = api.call("GET", "/metrics").text
    assert 'stripemeter_caps_reached_total{mode="hard"} 1.0' in metrics, [
        line for line in metrics.splitlines() if line.startswith("stripemeter_caps_reached")
    ]
