"""One Stripe call at a time per customer × meter, across worker processes.

The contract of ``PushLocks`` runs on both implementations the stores choose
(SQLite: in-process; PostgreSQL: advisory locks). The rest is PostgreSQL's:
two "processes" (separate stores, so separate connections) pushing the same
periods, counted by the emulator, and a lock holder that dies.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.persistence import Stores, open_stores
from adapters.push_locks import PUSH_LOCK_CLASS, AdvisoryPushLocks, lock_number
from adapters.settings import PostgresSettings, Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.meters import Aggregation
from domain.push_locks import ProcessPushLocks, PushLockKey, PushLocks
from domain.pushing import PushOutcome, PushService, Target, whole_units
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock, reset_postgres
from tests.integration.world import World

ROOT = Path(__file__).resolve().parents[2]
TENANT = uuid.uuid4()
A, B = (PushLockKey(TENANT, f"cus_{n}", "api_calls", "live") for n in "ab")


# -- the port's contract, on both implementations -------------------------------------


def test_a_held_key_is_not_taken_again_until_released(settings: Settings, stores: Stores) -> None:
    locks = stores.push_locks
    assert isinstance(locks, AdvisoryPushLocks if settings.postgres else ProcessPushLocks)
    with locks.hold([A, A]) as first:
        assert first == {A}
        with locks.hold([A, B]) as second:  # another thread or worker, meanwhile
            assert second == {B}
        with locks.hold([A]) as third:
            assert third == set()
    with locks.hold([A, B]) as after:
        assert after == {A, B}
    with locks.hold([]) as nothing:
        assert nothing == set()


def test_a_push_that_fails_still_releases_its_keys(stores: Stores) -> None:
    locks = stores.push_locks
    with pytest.raises(RuntimeError), locks.hold([A]):
        raise RuntimeError("the Stripe call blew up")
    with locks.hold([A]) as taken:
        assert taken == {A}


def test_another_thread_sees_the_key_held(stores: Stores) -> None:
    locks, seen = stores.push_locks, []
    with locks.hold([A]):
        thread = threading.Thread(target=lambda: seen.append(_try(locks, A)))
        thread.start()
        thread.join(timeout=10)
    assert seen == [set()]
    assert _try(locks, A) == {A}


def _try(locks: PushLocks, key: PushLockKey) -> set[PushLockKey]:
    with locks.hold([key]) as taken:
        return set(taken)


# -- PostgreSQL: a lock every process sees -----------------------------------------------


@pytest.fixture
def pg_settings(postgres_database: PostgresSettings, tmp_path: Path) -> Settings:
    reset_postgres(postgres_database)
    return Settings(data_dir=tmp_path / "data", postgres=postgres_database)


@pytest.fixture
def two_lock_sets(pg_settings: Settings) -> Iterator[tuple[AdvisoryPushLocks, AdvisoryPushLocks]]:
    conninfo = pg_settings.postgres.conninfo  # type: ignore[union-attr]
    first, second = AdvisoryPushLocks(conninfo), AdvisoryPushLocks(conninfo)
    yield first, second
    first.close()
    second.close()


@pytest.mark.postgres
def test_one_process_holding_a_key_keeps_it_from_the_other(
    two_lock_sets: tuple[AdvisoryPushLocks, AdvisoryPushLocks],
) -> None:
    one, other = two_lock_sets
    with one.hold([A]) as taken:
        assert taken == {A}
        assert _try(other, A) == set()
        assert _try(other, B) == {B}
    assert _try(other, A) == {A}


@pytest.mark.postgres
def test_a_dropped_connection_frees_its_keys_for_the_other_side(
    pg_settings: Settings, two_lock_sets: tuple[AdvisoryPushLocks, AdvisoryPushLocks]
) -> None:
    one, other = two_lock_sets
    conninfo = pg_settings.postgres.conninfo  # type: ignore[union-attr]
    with one.hold([A]) as taken:
        assert taken == {A}
        assert _try(other, A) == set()
        # The holder's connection goes (a network cut, an operator's pg_terminate_backend).
        with psycopg.connect(conninfo, autocommit=True) as admin:
            [pid] = _holders(admin, A)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            _wait_until(lambda: not _holders(admin, A))
        assert _try(other, A) == {A}
    # Leaving the hold found the connection gone (nothing to release, no error); the
    # pool replaced it, so the same process takes locks again.
    assert _try(one, B) == {B}


@pytest.mark.postgres
def test_a_killed_worker_never_leaves_a_lock_held(
    pg_settings: Settings, two_lock_sets: tuple[AdvisoryPushLocks, AdvisoryPushLocks]
) -> None:
    _, other = two_lock_sets
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, pg_settings.postgres.conninfo, str(TENANT)],  # type: ignore[union-attr]
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert _try(other, A) == set()
        finally:
            holder.kill()  # SIGKILL: no finally block, no release query
    _wait_until(lambda: _try(other, A) == {A})


HOLD_AND_WAIT = """
import sys, time, uuid
from adapters.push_locks import AdvisoryPushLocks
from domain.push_locks import PushLockKey
locks = AdvisoryPushLocks(sys.argv[1])
with locks.hold([PushLockKey(uuid.UUID(sys.argv[2]), "cus_a", "api_calls", "live")]) as taken:
    assert taken
    print("held", flush=True)
    time.sleep(60)
"""


def _holders(conn: psycopg.Connection[tuple[int]], key: PushLockKey) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s AND objid = %s AND objsubid = 2",
        (PUSH_LOCK_CLASS, lock_number(key) & 0xFFFFFFFF),
    ).fetchall()
    return [row[0] for row in rows]


def _wait_until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- two worker processes pushing the same periods, counted by the emulator ---------------

CUSTOMERS = [f"cus_{n}" for n in range(4)]
THREADS_PER_PROCESS = 3
PUSHING_SECONDS = 2.5
LATENCY = 0.08


@pytest.fixture
def pg_world(pg_settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[World]:
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    world = World(pg_settings, clock, emulator)
    world.stores.app.register_tenant("acme", "Acme")
    world.map_metric("api_calls", Aggregation.SUM, "sum")
    for customer in CUSTOMERS:
        world.map_customer(customer)
    yield world
    world.stores.close()


def push_from_two_processes(world: World, shared_lock: bool) -> Counter[PushOutcome]:
    """Two "processes" (own stores, own connections), each with several push threads,
    push the same periods while usage keeps arriving; then one settles what is left."""
    world.emulator.configure(meter_event_latency_seconds=LATENCY)
    second = open_stores(world.settings, world.clock)
    pushers = [
        PushService(
            stores.app,
            {Target.LIVE: SdkStripeGateway(TEST_API_KEY, world.emulator.url, timeout_seconds=10)},
            world.clock,
            # Without the shared lock each process has only its own, as before.
            locks=stores.push_locks if shared_lock else ProcessPushLocks(),
        )
        for stores in (world.stores, second)
    ]
    for customer in CUSTOMERS:
        world.ingest(1, f"first-{customer}", customer=customer)
    periods = [world.period_id(customer) for customer in CUSTOMERS]
    outcomes: Counter[PushOutcome] = Counter()
    stop = threading.Event()
    guard = threading.Lock()

    def push_loop(pusher: PushService, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            for period in rng.sample(periods, len(periods)):
                outcome = pusher.push(period)
                with guard:
                    outcomes[outcome] += 1

    def ingest_loop() -> None:
        n = 0
        while not stop.is_set():
            world.ingest(1 + n % 3, f"k{n}", customer=CUSTOMERS[n % len(CUSTOMERS)])
            n += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=ingest_loop)] + [
        threading.Thread(target=push_loop, args=(pushers[n % 2], n))
        for n in range(2 * THREADS_PER_PROCESS)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(PUSHING_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        second.close()
    world.emulator.configure(meter_event_latency_seconds=0.0)
    for period in periods:  # the next sweep: whatever is left goes now
        for _ in range(3):
            if pushers[0].push(period) is PushOutcome.UP_TO_DATE:
                break
    return outcomes


def assert_stripe_equals_counters(world: World) -> None:
    for customer in CUSTOMERS:
        assert world.counter(customer) > 0
        assert world.stripe_total(customer) == whole_units(world.counter(customer)), customer


@pytest.mark.postgres
def test_two_processes_never_call_stripe_at_once_for_one_customer_and_meter(
    pg_world: World,
) -> None:
    outcomes = push_from_two_processes(pg_world, shared_lock=True)
    calls = pg_world.emulator.meter_event_overlaps()
    assert calls["calls"] >= 10, calls  # the processes did push, and often
    assert outcomes[PushOutcome.BUSY] > 0, outcomes  # and met each other's locks
    assert (calls["max_concurrent"], calls["overlaps"]) == (1, 0), calls
    assert_stripe_equals_counters(pg_world)


@pytest.mark.postgres
def test_without_the_shared_lock_the_emulator_sees_two_calls_at_once(pg_world: World) -> None:
    """The counter above can fail: per-process locks let the two processes overlap.

    Identifiers still keep the totals right (the second call is a duplicate);
    Stripe's one-call-at-a-time limit is what breaks.
    """
    push_from_two_processes(pg_world, shared_lock=False)
    calls = pg_world.emulator.meter_event_overlaps()
    assert calls["max_concurrent"] >= 2 and calls["overlaps"] > 0, calls
    assert_stripe_equals_counters(pg_world)
