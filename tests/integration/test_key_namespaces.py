"""Derived idempotency keys in their own namespace, and the upgrade of claims stored before.

Before the split, a derived key (``<header>#<n>``, ``content:<sha>``) was
claimed under the same id as an explicit key of the same text. The test
writes events the old way (a plain ``MeteringApp``, so that no migration has
run, and submissions marked as explicit: exactly the ids the old code
chose), then opens the stores as the new code does and retries.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.persistence import event_store_env, open_stores
from adapters.settings import Settings
from api import cli
from domain.application import MeteringApp
from domain.idempotency import (
    claim_id,
    content_key,
    derived_key_id,
    idempotency_key_id,
    request_key,
)
from domain.ingest import Outcome, UsageSubmission
from domain.key_namespaces import MIGRATION_ID, split_key_namespaces
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import tenant_id_for
from domain.usage import usage_period_id
from tests.conftest import FakeClock
from tests.helpers import submission


def as_before_the_split(item: UsageSubmission) -> UsageSubmission:
    """What the old code submitted: every key claimed in the one (explicit) namespace."""
    return UsageSubmission(**{**item.__dict__, "derived_key": False})


def derived(item: UsageSubmission, key: str) -> UsageSubmission:
    return UsageSubmission(**{**item.__dict__, "idempotency_key": key, "derived_key": True})


def outcomes(results: list[Any]) -> list[Outcome]:
    return [r.outcome for r in results]


def test_retries_of_events_acknowledged_before_the_upgrade_stay_duplicates(
    settings: Settings, clock: FakeClock
) -> None:
    old = MeteringApp(env=event_store_env(settings), clock=clock)
    tenant = old.register_tenant("acme", "Acme").id
    old.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    at = clock.now - timedelta(hours=1)
    by_content = submission(tenant, 1, at)  # no key: content-derived
    by_header = derived(submission(tenant, 2, at), request_key("req", 0))
    explicit = submission(tenant, 3, at, key="order-1")
    results = old.usage.record_usage(
        [as_before_the_split(s) for s in (by_content, by_header, explicit)]
    )
    assert outcomes(results) == [Outcome.ACCEPTED] * 3
    assert old.repository.get(idempotency_key_id(tenant, by_content.idempotency_key))
    old.close()

    stores = open_stores(settings, clock)  # the new code: carries the claims over at start
    try:
        app = stores.app
        assert app.repository.get(MIGRATION_ID).aliases == 2  # the two derived-shape keys
        retries = app.usage.record_usage([by_content, by_header, explicit])
        assert outcomes(retries) == [Outcome.DUPLICATE] * 3
        # The explicit key kept its id; the derived ones answer under the new ids too.
        assert claim_id(tenant, "order-1", False) == idempotency_key_id(tenant, "order-1")
        alias = app.repository.get(derived_key_id(tenant, by_content.idempotency_key))
        assert alias.fingerprint == by_content.fingerprint
        # Changed content under an old derived key is still a conflict, not a second count.
        changed = derived(submission(tenant, 9, at), request_key("req", 0))
        assert outcomes(app.usage.record_usage([changed])) == [Outcome.CONFLICT]
        # A new header key and an explicit key of the same text are two events now.
        fresh_header = derived(submission(tenant, 4, at), request_key("req2", 0))
        fresh_explicit = submission(tenant, 5, at, key="req2#0")
        content = submission(tenant, 6, at)
        chosen = submission(tenant, 7, at, key=content.idempotency_key)
        assert (
            outcomes(app.usage.record_usage([fresh_header, fresh_explicit, content, chosen]))
            == [Outcome.ACCEPTED] * 4
        )
        key = app.period_for(tenant, "cus_1", at).key
        period = app.repository.get(usage_period_id(tenant, "cus_1", "api_calls", key))
        assert period.total == Decimal(1 + 2 + 3 + 4 + 5 + 6 + 7)  # each counted once
        # Recorded once: a second run does nothing.
        assert split_key_namespaces(app) is None
    finally:
        stores.close()


def test_late_events_under_the_same_text_in_both_namespaces_are_two_corrections(
    settings: Settings, clock: FakeClock
) -> None:
    """An explicit ``r#0`` and the header-derived ``r#0`` are two events: both late, each
    is carried by an adjustment of its own (one shared id would refuse the second)."""
    stores = open_stores(settings, clock)
    try:
        app = stores.app
        tenant = app.register_tenant("acme", "Acme").id
        app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
        past_window = clock.now.replace(month=2, day=20)  # February closed on March 3
        explicit = submission(tenant, 2, past_window, key="r#0")
        by_header = derived(submission(tenant, 5, past_window), request_key("r", 0))
        results = app.usage.record_usage([explicit, by_header])
        assert outcomes(results) == [Outcome.ACCEPTED, Outcome.ACCEPTED]
        assert [r.late.value if r.late else None for r in results] == ["carried", "carried"]
        march = app.usage_period(tenant, "cus_1", "api_calls", "2026-03")
        assert (march.total, march.corrections) == (Decimal(7), 2)
        retried = app.usage.record_usage([explicit, by_header])
        assert outcomes(retried) == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    finally:
        stores.close()


def test_the_migration_skips_aliases_already_written(settings: Settings, clock: FakeClock) -> None:
    old = MeteringApp(env=event_store_env(settings), clock=clock)
    tenant = old.register_tenant("acme", "Acme").id
    old.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    items = [submission(tenant, n, clock.now - timedelta(hours=1)) for n in range(1, 4)]
    old.usage.record_usage([as_before_the_split(s) for s in items])
    # A run cut short wrote one alias and no record of itself.
    first = old.repository.get(idempotency_key_id(tenant, items[0].idempotency_key))
    old.save(
        type(first).claimed(
            derived_key_id(tenant, items[0].idempotency_key),
            tenant,
            first.key,
            first.fingerprint,
            first.usage_period_id,
            first.usage_version,
        )
    )
    assert split_key_namespaces(old) == 2
    assert split_key_namespaces(old) is None
    assert outcomes(old.usage.record_usage(items)) == [Outcome.DUPLICATE] * 3
    old.close()


def test_content_keys_have_the_derived_shape(settings: Settings, clock: FakeClock) -> None:
    key = content_key("ab" * 32)
    assert key == "content:" + "ab" * 32
    assert claim_id(tenant_id_for("acme"), key, True) != claim_id(tenant_id_for("acme"), key, False)


@pytest.mark.usefixtures("cli_env")
def test_the_horizon_command_sets_the_tenants_horizon(
    settings: Settings, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = open_stores(settings, clock)
    stores.app.register_tenant("acme", "Acme")
    stores.close()
    assert cli.main(["tenants", "horizon", "--tenant", "acme", "--days", "400"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "tenant": "acme",
        "ingestHorizonDays": 400,
        "changed": True,
    }
    assert cli.main(["tenants", "horizon", "--tenant", "acme", "--days", "0"]) != 0
    assert "days: must be between 1 and 36600" in capsys.readouterr().err
    stores = open_stores(settings, clock)
    try:
        assert stores.app.tenant(tenant_id_for("acme")).ingest_horizon_days == 400
    finally:
        stores.close()
