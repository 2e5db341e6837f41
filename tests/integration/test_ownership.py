"""Ownership claims in the event store (both backends): races, life, and the upgrade.

The upgrade tests build the state an existing deployment has: mappings
saved the way they were before claims existed (``MeteringApp.map_meter`` and
``map_customer`` record no claim), some of them conflicting.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from adapters.background import Background
from adapters.metrics import Metrics
from adapters.persistence import Stores
from adapters.settings import Settings, StripeSettings
from adapters.stripe_gateway import SdkStripeGateway
from api.cli import main
from domain.errors import ConflictError, OwnedElsewhereError
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.ownership import StripeClaim, StripeObject, StripeObjectKind, claim_id_for
from domain.ownership_report import claim_unconflicted, ownership_report
from domain.stripe_mapping import StripeMappingService
from stripe_emulator.account import account_id_for
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator

ACCOUNT = account_id_for(TEST_API_KEY)


@pytest.fixture
def service(stores: Stores, emulator: RunningEmulator) -> StripeMappingService:
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5)
    for slug in ("acme", "globex", "initech"):
        tenant = stores.app.register_tenant(slug, slug.title()).id
        stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    return StripeMappingService(stores.app, gateway)


def tenant(service: StripeMappingService, slug: str) -> UUID:
    return service.app.tenant_by_slug(slug).id


def customer_object(stripe_id: str) -> StripeObject:
    return StripeObject(ACCOUNT, StripeObjectKind.CUSTOMER, stripe_id)


def test_two_tenants_racing_for_one_object_collide_on_the_claims_version(
    service: StripeMappingService,
) -> None:
    app = service.app
    obj = customer_object("cus_raced")
    first = StripeClaim.claim(obj, tenant(service, "acme"), "a1")
    second = StripeClaim.claim(obj, tenant(service, "globex"), "g1")
    app.save(first)
    with pytest.raises(IntegrityError):
        app.save(second)
    # Released, then both decide on the same version again: one wins, again.
    claim: StripeClaim = app.repository.get(claim_id_for(obj))
    assert claim.release(tenant(service, "acme"), "a1", "unmapped")
    app.save(claim)
    one: StripeClaim = app.repository.get(claim_id_for(obj))
    other: StripeClaim = app.repository.get(claim_id_for(obj))
    assert one.take(tenant(service, "globex"), "g1")
    assert other.take(tenant(service, "initech"), "i1")
    app.save(one)
    with pytest.raises(IntegrityError):
        app.save(other)
    final: StripeClaim = app.repository.get(claim_id_for(obj))
    assert (final.owner, final.holder, final.version) == (tenant(service, "globex"), "g1", 3)


def test_a_claim_refuses_others_and_releases_only_for_its_holder(
    service: StripeMappingService,
) -> None:
    acme, globex = tenant(service, "acme"), tenant(service, "globex")
    claim = StripeClaim.claim(customer_object("cus_x"), acme, "a1")
    with pytest.raises(
        OwnedElsewhereError, match=r"^Stripe customer cus_x belongs to another tenant$"
    ):
        claim.take(globex, "g1")
    with pytest.raises(ConflictError, match="already mapped to customer 'a1'"):
        claim.take(acme, "a2")
    assert claim.take(acme, "a1") is False
    assert claim.release(globex, "a1", "not theirs") is False
    assert claim.release(acme, "a2", "not this mapping") is False
    assert claim.release(acme, "a1", "unmapped") is True
    assert (claim.owner, claim.holder) == (None, None)
    assert claim.take(globex, "g1") is True


def legacy_state(service: StripeMappingService, emulator: RunningEmulator) -> dict[str, str]:
    """Mappings as they were saved before claims: two of them conflict."""
    app, gateway = service.app, service.gateway
    shared_meter = gateway.create_meter("shared", "shared_calls", "sum")
    own_meter = gateway.create_meter("initech", "initech_calls", "sum")
    for slug, meter in (("acme", shared_meter), ("globex", shared_meter), ("initech", own_meter)):
        app.map_meter(
            tenant(service, slug), MeterMapping("api_calls", meter.id, meter.event_name, "sum")
        )
    client = emulator.client()
    ids = {name: str(client.v1.customers.create({"name": name}).id) for name in ("x", "y")}
    app.map_customer(tenant(service, "globex"), "g1", ids["x"], None)
    app.map_customer(tenant(service, "initech"), "i1", ids["x"], None)
    app.map_customer(tenant(service, "acme"), "a1", ids["y"], None)
    return ids


def test_the_upgrade_report_names_conflicts_and_apply_claims_only_the_rest(
    service: StripeMappingService, emulator: RunningEmulator
) -> None:
    ids = legacy_state(service, emulator)
    report = ownership_report(service)
    assert [
        (s.obj.kind.value, s.obj.object_id, [(h.tenant_slug, h.holder) for h in s.holdings])
        for s in report.conflicts
    ] == [
        ("customer", ids["x"], [("globex", "g1"), ("initech", "i1")]),
        ("meter", "shared_calls", [("acme", "api_calls"), ("globex", "api_calls")]),
    ]
    assert sorted((s.obj.kind.value, s.obj.object_id) for s in report.unclaimed) == [
        ("customer", ids["y"]),
        ("meter", "initech_calls"),
    ]
    assert all(s.obj.account == ACCOUNT for s in report.objects)

    assert claim_unconflicted(service, report) == 2
    after = ownership_report(service)
    assert after.unclaimed == [] and len(after.conflicts) == 2
    assert claim_unconflicted(service, after) == 0  # idempotent
    # The claims hold: nobody else may take initech's meter or acme's customer now.
    with pytest.raises(OwnedElsewhereError):
        service.map_meter(tenant(service, "acme"), "api_calls", stripe_event_name="initech_calls")
    with pytest.raises(OwnedElsewhereError):
        service.map_customer(tenant(service, "globex"), "g2", ids["y"])
    # A conflicted object is never claimed by the apply: no tenant won it silently.
    assert service.claim(customer_object(ids["x"])) is None

    # The operator resolves one conflict by unmapping the wrong mapping, then applies.
    service.unmap_meter(tenant(service, "globex"), "api_calls")
    resolved = ownership_report(service)
    assert [s.obj.object_id for s in resolved.conflicts] == [ids["x"]]
    assert claim_unconflicted(service, resolved) == 1
    claim = service.claim(StripeObject(ACCOUNT, StripeObjectKind.METER, "shared_calls"))
    assert claim is not None and (claim.owner, claim.holder) == (
        tenant(service, "acme"),
        "api_calls",
    )


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["stripe", "ownership", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.mark.usefixtures("cli_env")
def test_the_ownership_command_exits_1_while_a_conflict_remains(
    service: StripeMappingService,
    emulator: RunningEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator.url)
    ids = legacy_state(service, emulator)
    service.app.close()

    code, out, err = run_cli(capsys)
    assert code == 1, err
    assert out["objects"] == 4 and "claimsRecorded" not in out
    shared = {c["stripeId"]: c for c in out["conflicts"]}
    assert [m["tenant"] for m in shared[ids["x"]]["mappedBy"]] == ["globex", "initech"]
    assert [m["tenant"] for m in shared["shared_calls"]["mappedBy"]] == ["acme", "globex"]
    assert {u["stripeId"] for u in out["unclaimed"]} == {ids["y"], "initech_calls"}

    code, out, _ = run_cli(capsys, "--apply")
    assert (code, out["claimsRecorded"], out["unclaimed"]) == (1, 2, [])
    code, out, _ = run_cli(capsys, "--apply")
    assert (code, out["claimsRecorded"], len(out["conflicts"])) == (1, 0, 2)


def test_the_service_says_at_start_what_the_operator_must_run(
    stores: Stores,
    settings: Settings,
    service: StripeMappingService,
    emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unclaimed or conflicting mappings: an ERROR naming the command; nothing changed."""
    stripe = StripeSettings(TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5)
    background = Background(
        stores,
        dataclasses.replace(settings, stripe=stripe),
        Metrics(),
        stores.app.clock,
        run_projections=False,
        run_pushes=True,
    )
    background.check_ownership()
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []  # nothing mapped yet

    legacy_state(service, emulator)
    background.check_ownership()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert errors[0].startswith("2 Stripe objects are mapped by more than one tenant")
    assert "`stripemeter stripe ownership`" in errors[0]
    assert errors[1].startswith("2 mapped Stripe objects have no ownership claim")
    assert "`stripemeter stripe ownership --apply`" in errors[1]
    assert ownership_report(service).unclaimed != []  # the check itself claimed nothing


@pytest.mark.usefixtures("cli_env")
def test_the_unmap_commands_release_the_claims(
    service: StripeMappingService,
    emulator: RunningEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator.url)
    acme = tenant(service, "acme")
    service.map_meter(acme, "api_calls", stripe_event_name="acme_calls", create_meter=True)
    live = str(emulator.client().v1.customers.create({"name": "acme's"}).id)
    service.map_customer(acme, "a1", live)
    meter_object = StripeObject(ACCOUNT, StripeObjectKind.METER, "acme_calls")
    assert service.claim(meter_object).owner == acme  # type: ignore[union-attr]

    assert main(["mappings", "delete", "--tenant", "acme", "--metric", "api_calls"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["stripeEventName"], out["unmapped"]) == ("acme_calls", True)
    assert main(["customers", "unmap", "--tenant", "acme", "--customer-ref", "a1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["customerRef"], out["stripeCustomerId"], out["unmapped"]) == ("a1", live, True)
    # Twice: the tenant has mapped nothing; exit 1 with the reason.
    assert main(["customers", "unmap", "--tenant", "acme", "--customer-ref", "a1"]) == 1
    assert "customer 'a1' is not mapped to Stripe" in capsys.readouterr().err

    code, report, _ = run_cli(capsys)
    assert (code, report["objects"]) == (0, 0)
    # Released: another tenant may claim them now.
    globex = tenant(service, "globex")
    service.map_meter(globex, "api_calls", stripe_event_name="acme_calls")
    service.map_customer(globex, "g1", live)
    assert service.claim(meter_object).owner == globex  # type: ignore[union-attr]
    assert service.claim(customer_object(live)).owner == globex  # type: ignore[union-attr]


class RacedService(StripeMappingService):
    """Another tenant claims the object between this request's read and its save, once."""

    def __init__(self, service: StripeMappingService, rival: UUID, contested: str) -> None:
        super().__init__(service.app, service.gateway)
        self.rival = rival
        self.contested = contested
        self.raced = False

    def claim_by_id(self, claim_id: UUID) -> StripeClaim | None:
        seen = super().claim_by_id(claim_id)
        if not self.raced:
            self.raced = True
            obj = customer_object(self.contested)
            self.app.save(StripeClaim.claim(obj, self.rival, "rival"))
        return seen


def test_the_loser_of_a_race_for_a_customer_gets_409_and_saves_nothing(
    service: StripeMappingService, emulator: RunningEmulator
) -> None:
    live = str(emulator.client().v1.customers.create({"name": "contested"}).id)
    raced = RacedService(service, tenant(service, "globex"), live)
    with pytest.raises(OwnedElsewhereError, match=rf"^Stripe customer {live} belongs to another"):
        raced.map_customer(tenant(service, "acme"), "a1", live)
    assert raced.raced
    assert service.app.customer(tenant(service, "acme"), "a1") is None  # not half-saved
    claim = service.claim(customer_object(live))
    assert claim is not None and (claim.owner, claim.holder, claim.version) == (
        tenant(service, "globex"),
        "rival",
        1,
    )


def test_a_mapping_whose_object_another_holds_the_claim_of_is_a_conflict(
    service: StripeMappingService, emulator: RunningEmulator
) -> None:
    """A legacy mapping onto an object that, since, another tenant claimed through the API."""
    legacy_state(service, emulator)
    obj = StripeObject(ACCOUNT, StripeObjectKind.METER, "initech_calls")
    service.app.save(StripeClaim.claim(obj, tenant(service, "acme"), "other_metric"))
    report = ownership_report(service)
    [standing] = [s for s in report.conflicts if s.obj == obj]
    assert [h.tenant_slug for h in standing.holdings] == ["initech"]
    assert (standing.claim_owner, standing.claim_holder) == (
        tenant(service, "acme"),
        "other_metric",
    )
    assert obj not in {s.obj for s in report.unclaimed}
    claim_unconflicted(service, report)
    claim = service.claim(obj)
    assert claim is not None and claim.owner == tenant(service, "acme")  # untouched
