"""What usage alert evaluation adds to the projection worker's catch-up.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.alert_evaluation --backend postgres

Each round, for each case in turn (alternated, so that a busy machine slows
them alike): a fresh database, ``--events`` usage events of one tenant over
``--customers`` customers written with ``UsageRecorder.record_usage`` (500 a
call), then the live runner's ``catch_up`` timed — which evaluates the alerts
after its last batch, as the worker does. Ingest itself never evaluates.

- ``no-rules``: no tenant has an alert (the evaluator returns at once);
- ``other-tenant``: another tenant has one (this tenant's counters are never read);
- ``rules``: this tenant has three alerts on every customer (a usage threshold
  never reached, one reached by nobody, and a spike): every touched counter is
  read and compared, and each spike reads its baseline;
- ``rules-warm``: the same, timed on a second log of as many events, once the
  evaluator has remembered each customer's previous period.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.persistence import Stores, open_stores
from adapters.settings import PostgresSettings, Settings
from benchmarks.databases import fresh_database
from domain.alerting import AlertService
from domain.idempotency import fingerprint
from domain.ingest import UsageSubmission
from domain.meters import Aggregation, MetricDefinition

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)


def clock() -> datetime:
    return NOW


CASES = ("no-rules", "other-tenant", "rules", "rules-warm")


def _settings(env: dict[str, str]) -> Settings:
    url = env.get("STRIPEMETER_DATABASE_URL")
    data_dir = Path(env.get("STRIPEMETER_DATA_DIR") or tempfile.mkdtemp())
    if url is None:
        return Settings(data_dir=data_dir)
    return Settings(data_dir=data_dir, postgres=PostgresSettings.from_url(url))


def _write(stores: Stores, tenant: Any, events: int, customers: int, at: int) -> None:
    moment = NOW - timedelta(hours=1)
    for start in range(at, at + events, 500):
        batch = []
        for i in range(start, min(start + 500, at + events)):
            customer = f"c{i % customers}"
            batch.append(
                UsageSubmission(
                    tenant_id=tenant,
                    metric="api_calls",
                    customer_ref=customer,
                    quantity=Decimal(1),
                    occurred_at=moment,
                    idempotency_key=f"k{i}",
                    fingerprint=fingerprint("api_calls", customer, Decimal(1), moment, "{}"),
                    meta="{}",
                )
            )
        stores.app.usage.record_usage(batch)


def one(case: str, backend: str, events: int, customers: int) -> float:
    """Seconds of the timed catch-up for one case, on a fresh database."""
    with fresh_database(backend) as env:
        stores = open_stores(_settings(env), clock)
        try:
            app = stores.app
            tenant = app.register_tenant("acme", "Acme").id
            other = app.register_tenant("globex", "Globex").id
            for t in (tenant, other):
                app.declare_metric(t, MetricDefinition("api_calls", Aggregation.SUM))
            service = AlertService(app)
            base: dict[str, Any] = {
                "metric": "api_calls",
                "customer_ref": None,
                "kind": "usage",
                "threshold": Decimal(10**9),
                "basis": None,
                "currency": None,
                "enabled": True,
                "cooldown_seconds": 3600,
            }
            owners = {"other-tenant": [other], "rules": [tenant], "rules-warm": [tenant]}
            for owner in owners.get(case, []):
                service.create(owner, service.spec(owner, **base))
                if owner == tenant:
                    service.create(owner, service.spec(owner, **{**base, "threshold": Decimal(50)}))
                    spike = {**base, "kind": "spike", "threshold": Decimal(2)}
                    service.create(owner, service.spec(owner, **spike))
            stores.views.runner.catch_up()
            _write(stores, tenant, events, customers, 0)
            if case == "rules-warm":
                stores.views.runner.catch_up()
                _write(stores, tenant, events, customers, events)
            began = time.perf_counter()
            stores.views.runner.catch_up()
            return time.perf_counter() - began
        finally:
            stores.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="sqlite")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    took: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            took[case].append(one(case, args.backend, args.events, args.customers))
    for case in CASES:
        runs = ", ".join(f"{t * 1000:.0f}" for t in took[case])
        print(
            f"{args.backend} {case:13s} catch-up of {args.events:,} events over"
            f" {args.customers:,} customers: median {statistics.median(took[case]) * 1000:.0f} ms"
            f" (runs {runs} ms)"
        )


if __name__ == "__main__":
    main()
