"""Pushing many periods over the v2 meter event stream, against the emulator, on both stores.

Every event in a stream call keeps its own intent → call → confirm: the
intents are recorded before the call, confirmed after it, and a call that
fails (even after Stripe applied part of it) leaves them pending, to be
resent with the same identifiers — which the stream drops when it holds them.
"""

from __future__ import annotations

import time
from collections import Counter
from uuid import UUID

import pytest

from adapters.stripe_gateway import SdkStripeGateway
from domain.ledger import push_identifier
from domain.push_locks import ProcessPushLocks, PushLockKey
from domain.pushing import PushOutcome, PushService, Target
from domain.stripe_port import MeterEventRequest, StripeUnavailableError
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.integration.world import Crash, CrashingGateway, World

STREAM = "/v2/billing/meter_event_stream"
SESSION = "/v2/billing/meter_event_session"
V1 = "/v1/billing/meter_events"


class DyingAfterAFailedStreamCall(SdkStripeGateway):
    """The real gateway; the process dies as soon as a stream call has failed."""

    def __init__(self, url: str) -> None:
        super().__init__(TEST_API_KEY, url, max_network_retries=0, timeout_seconds=5)

    def send_meter_events(self, requests: list[MeterEventRequest]) -> None:  # type: ignore[override]
        try:
            super().send_meter_events(requests)
        except StripeUnavailableError:
            raise Crash from None


def customers(world: World, n: int) -> list[str]:
    """``cus_a`` (mapped by the fixture) and n - 1 more, each with usage of its own."""
    refs = ["cus_a", *[f"cus_{i}" for i in range(1, n)]]
    for i, ref in enumerate(refs):
        if ref != "cus_a":
            world.map_customer(ref)
        world.ingest(i + 1, f"{ref}-first", customer=ref)
    return refs


def batch(world: World, refs: list[str]) -> dict[UUID, PushOutcome]:
    return world.pusher.push_batch([world.period_id(ref) for ref in refs])


def calls(emulator: RunningEmulator) -> Counter[str]:
    return Counter(emulator.meter_event_calls)


def assert_parity(world: World, refs: list[str]) -> None:
    for ref in refs:
        assert world.stripe_total(ref) == world.counter(ref), ref
        ledger = world.ledger(ref)
        assert ledger.pending is None and ledger.confirmed_total == world.counter(ref), ref
    identifiers = [e["identifier"] for e in world.emulator.meter_events()]
    assert len(identifiers) == len(set(identifiers))  # every unit landed once


def test_a_batch_of_periods_is_one_stream_call_and_each_ledger_is_confirmed(
    world: World,
) -> None:
    refs = customers(world, 12)
    outcomes = batch(world, refs)
    assert set(outcomes.values()) == {PushOutcome.CONFIRMED} and len(outcomes) == 12
    assert calls(world.emulator) == {SESSION: 1, STREAM: 1}
    assert_parity(world, refs)
    # Each event carries its own ledger's deterministic identifier.
    held = {e["identifier"] for e in world.emulator.meter_events()}
    ledgers = [world.ledger(ref) for ref in refs]
    assert held == {push_identifier(ledger.id, 1, 1, ledger.covered_version) for ledger in ledgers}
    assert batch(world, refs) == dict.fromkeys(outcomes, PushOutcome.UP_TO_DATE)
    assert calls(world.emulator)[STREAM] == 1  # nothing owed: no call


def test_a_stream_call_failing_halfway_then_a_crash_then_a_restart_lands_every_unit_once(
    world: World,
) -> None:
    refs = customers(world, 6)
    world.restart(DyingAfterAFailedStreamCall(world.emulator.url))
    world.emulator.fail_next("partial_then_500", path=STREAM)
    with pytest.raises(Crash):
        batch(world, refs)
    # Stripe took the first half of the call; the process died knowing none of it.
    assert len(world.emulator.meter_events()) == 3
    pending = {ref: world.ledger(ref).pending for ref in refs}
    assert all(intent is not None for intent in pending.values())
    world.ingest(10, "more-a", customer="cus_a")  # usage arrives while they are pending
    world.restart()
    outcomes = batch(world, refs)
    assert set(outcomes.values()) == {PushOutcome.CONFIRMED}
    # The pending intents went first, unchanged, in one call; then cus_a's new delta.
    assert calls(world.emulator)[STREAM] == 3
    resent = [e for e in world.emulator.meter_events()][:6]
    assert {e["identifier"] for e in resent} == {i.identifier for i in pending.values() if i}
    assert_parity(world, refs)
    assert world.stripe_total("cus_a") == 11


def test_intents_recorded_before_a_crash_and_older_than_the_dedup_window_are_settled_by_summary(
    world: World,
) -> None:
    refs = customers(world, 3)

    class DyingBeforeTheCall(SdkStripeGateway):
        def send_meter_events(self, requests: list[MeterEventRequest]) -> None:  # type: ignore[override]
            raise Crash

    world.restart(DyingBeforeTheCall(TEST_API_KEY, world.emulator.url, max_network_retries=0))
    with pytest.raises(Crash):
        batch(world, refs)
    world.clock.advance(hours=24)
    world.emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    world.restart()
    # Never sent and now beyond Stripe's identifier window: the summary says Stripe
    # lacks them, so they are abandoned and their usage planned again, then sent.
    assert set(batch(world, refs).values()) == {PushOutcome.CONFIRMED}
    assert all(world.ledger(ref).pushes == 2 for ref in refs)  # abandoned, then pushed
    assert_parity(world, refs)


def test_an_expired_session_is_renewed_mid_run(world: World) -> None:
    refs = customers(world, 3)
    batch(world, refs)
    for ref in refs:
        world.ingest(1, f"{ref}-second", customer=ref)
    batch(world, refs)
    assert calls(world.emulator) == {SESSION: 1, STREAM: 2}  # one session for both calls
    # Stripe's clock runs past the token's 15 minutes, ours does not notice: a 401.
    world.emulator.advance(16 * 60)
    for ref in refs:
        world.ingest(1, f"{ref}-third", customer=ref)
    assert set(batch(world, refs).values()) == {PushOutcome.CONFIRMED}
    assert calls(world.emulator) == {SESSION: 2, STREAM: 4}  # refused, renewed, resent
    assert_parity(world, refs)


def test_the_session_is_renewed_before_it_runs_out(world: World) -> None:
    refs = customers(world, 2)
    world.emulator.configure(session_ttl_seconds=2)  # renewed 0.5 s before its end
    try:
        batch(world, refs)
        time.sleep(1.6)
        for ref in refs:
            world.ingest(1, f"{ref}-second", customer=ref)
        assert set(batch(world, refs).values()) == {PushOutcome.CONFIRMED}
    finally:
        world.emulator.configure(session_ttl_seconds=900)
    assert calls(world.emulator) == {SESSION: 2, STREAM: 2}  # a new session, no 401
    assert_parity(world, refs)


def test_v1_single_pushes_and_stream_batches_share_one_ledger(world: World) -> None:
    refs = customers(world, 4)
    assert world.push("cus_1") is PushOutcome.CONFIRMED  # v1
    world.restart(CrashingGateway(world.emulator.url, "before"))
    with pytest.raises(Crash):
        world.push("cus_a")  # a v1 intent left pending
    pending = world.ledger("cus_a").pending
    assert pending is not None
    world.ingest(5, "more-a", customer="cus_a")
    world.restart()
    outcomes = batch(world, refs)
    assert outcomes[world.period_id("cus_1")] is PushOutcome.UP_TO_DATE
    assert outcomes[world.period_id("cus_a")] is PushOutcome.CONFIRMED
    # The v1 intent was resent unchanged inside the stream, before cus_a's new delta.
    assert [e["identifier"] for e in world.emulator.meter_events()][1] == pending.identifier
    world.ingest(2, "after-batch", customer="cus_2")
    assert world.push("cus_2") is PushOutcome.CONFIRMED  # and v1 carries on after it
    assert calls(world.emulator)[V1] == 2
    assert_parity(world, refs)


def test_a_period_whose_lock_is_held_elsewhere_is_busy_and_the_rest_are_pushed(
    world: World,
) -> None:
    refs = customers(world, 3)
    locks = ProcessPushLocks()
    world.pusher = PushService(
        world.stores.app, {Target.LIVE: world.gateway}, world.clock, locks=locks
    )
    key = PushLockKey(world.tenant, "cus_1", "api_calls", "live")
    with locks.hold([key]):
        outcomes = batch(world, refs)
    assert outcomes[world.period_id("cus_1")] is PushOutcome.BUSY
    assert world.stripe_total("cus_1") == 0  # not even an intent: another push owns it
    assert outcomes[world.period_id("cus_a")] is PushOutcome.CONFIRMED
    assert set(batch(world, refs).values()) == {PushOutcome.UP_TO_DATE, PushOutcome.CONFIRMED}
    assert_parity(world, refs)


def test_a_ledger_another_worker_settles_during_the_call_is_left_to_it_and_the_rest_confirmed(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The confirmations' one transaction conflicts: each ledger is read again and redone."""
    refs = customers(world, 4)
    meddled = world.period_id("cus_2")

    class MeddledWith(SdkStripeGateway):
        def send_meter_events(self, requests: list[MeterEventRequest]) -> None:  # type: ignore[override]
            assert other.push(meddled) is PushOutcome.CONFIRMED  # resends our intent by v1
            super().send_meter_events(requests)

    world.restart(MeddledWith(TEST_API_KEY, world.emulator.url, max_network_retries=0))
    # Another worker that does not share this process's locks (a misconfigured
    # deployment, or a lock lost with its connection) pushes cus_2 meanwhile.
    other = PushService(world.stores.app, {Target.LIVE: world.gateway}, world.clock)
    with caplog.at_level("INFO", logger="domain.pushing"):
        outcomes = batch(world, refs)
    assert "written concurrently" in caplog.text and "settled concurrently" in caplog.text
    assert set(outcomes.values()) == {PushOutcome.CONFIRMED}
    assert world.ledger("cus_2").pushes == 1  # its confirmation is the other worker's
    assert calls(world.emulator)[V1] == 1 and calls(world.emulator)[STREAM] == 1
    assert_parity(world, refs)
