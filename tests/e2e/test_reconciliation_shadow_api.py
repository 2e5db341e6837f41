"""Shadow lines over HTTP: the run's answer, the stored report, CSV, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from domain.pushing import Target
from domain.reconciliation import Cause
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_stripe_api import push_all, services, setup_stripe

SHADOW_KEY = "sk_test_shadow"  # the stripe_api fixture's STRIPE_TEST_SECRET_KEY


def run(api: Api, **body: Any) -> dict[str, Any]:
    response = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03", **body})
    assert response.status_code == 200, response.text
    [report] = response.json()["data"]
    return report  # type: ignore[no-any-return]


def by_target(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {line["target"]: line for line in report["lines"]}


def test_shadow_lines_beside_live_ones_drift_repair_and_read_back(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    live_customer = setup_stripe(api, emulator, shadow=True)
    api.ingest(event(idempotencyKey="e1", quantity=7, ts="2026-03-10T09:00:00Z"))
    push_all(api)

    report = run(api)
    assert report["counts"] == {"ok": 2, "pending": 0, "drift": 0, "repaired": 0}
    lines = by_target(report)
    assert set(lines) == {"live", "shadow"}
    # Both lines keep every field the live line always had; only the target tells them apart.
    assert set(lines["shadow"]) == set(lines["live"])
    assert lines["live"]["stripeCustomerId"] == live_customer
    assert lines["shadow"]["stripeCustomerId"] != live_customer
    assert lines["shadow"]["meterId"] != lines["live"]["meterId"]
    assert [(x["status"], x["local"], x["stripe"]) for x in report["lines"]] == [
        ("ok", 7, 7),
        ("ok", 7, 7),
    ]

    # Someone tries the test account's meter by hand: the shadow line drifts, live stays ok.
    emulator.client(SHADOW_KEY).v1.billing.meter_events.create(
        {
            "event_name": "api_calls_shadow",
            "payload": {"stripe_customer_id": lines["shadow"]["stripeCustomerId"], "value": "3"},
        }
    )
    lines = by_target(run(api))
    assert (lines["live"]["status"], lines["shadow"]["status"]) == ("ok", "drift")
    assert lines["shadow"]["cause"] == "events sent to Stripe outside StripeMeter"
    assert (lines["shadow"]["stripe"], lines["shadow"]["difference"]) == (10, -3)

    repaired = by_target(run(api, repair=True, actor="ops@acme"))
    assert (repaired["live"]["status"], repaired["shadow"]["status"]) == ("ok", "repaired")
    api.settle()
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls").json()
    # What each meter holds now: shadow 7 pushed + 3 found there (recorded) - 3 pushed.
    assert audit["stripeUnitsConfirmed"] == {"live": 7, "shadow": 7}
    repair_pushes = [p for p in audit["pushes"] if p["purpose"].startswith("repair by")]
    assert [(p["target"], p["value"]) for p in repair_pushes] == [("shadow", -3)]

    run(api)
    latest = api.call("GET", "/v1/reconciliation/2026-03", key="acme-read").json()
    assert [(x["target"], x["status"], x["stripe"]) for x in latest["lines"]] == [
        ("live", "ok", 7),
        ("shadow", "ok", 7),
    ]
    as_csv = api.call("GET", "/v1/reconciliation/2026-03?format=csv", key="acme-read")
    header, *rows = as_csv.text.strip().splitlines()
    assert header.split(",")[-1] == "target"
    assert [row.split(",")[-1] for row in rows] == ["live", "shadow"]


def test_without_the_test_key_the_shadow_line_is_skipped_with_the_reason(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    setup_stripe(api, emulator, shadow=True)  # mapped while the key was set
    api.ingest(event(idempotencyKey="e1", quantity=5, ts="2026-03-10T09:00:00Z"))
    push_all(api)
    services(api).gateways.pop(Target.SHADOW)  # as if STRIPE_TEST_SECRET_KEY were unset now
    report = run(api, repair=True)
    assert report["counts"] == {"ok": 1, "pending": 0, "drift": 0, "repaired": 0, "skipped": 1}
    assert report["stripeCalls"] == 1
    shadow = by_target(report)["shadow"]
    assert (shadow["status"], shadow["cause"]) == ("skipped", Cause.NO_TEST_ACCOUNT.value)
    assert (shadow["stripe"], shadow["difference"]) == (None, None)


def test_a_tenant_without_shadow_mode_sees_the_report_it_always_saw(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    setup_stripe(api, emulator)
    api.ingest(event(idempotencyKey="e1", quantity=2, ts="2026-03-10T09:00:00Z"))
    push_all(api)
    [line] = run(api)["lines"]
    assert (line["target"], line["status"], line["stripe"]) == ("live", "ok", 2)


def test_the_document_shows_the_target_of_a_line(stripe_api: Api) -> None:
    doc = stripe_api.client.get("/schema/openapi.json").json()
    schemas = doc["components"]["schemas"]
    [line] = [s for name, s in schemas.items() if name.endswith("ReconciliationLineOut")]
    target = line["properties"]["target"]
    assert (target["enum"], target["default"]) == (["live", "shadow"], "live")
    assert "shadow" in target["description"]
    assert "target" not in line.get("required", [])
