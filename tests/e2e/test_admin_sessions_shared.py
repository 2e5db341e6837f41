"""Admin sessions are rows in the database (SQLite and PostgreSQL), so every API process
of a deployment finds them: two apps built separately over one database stand for two
API processes, and a new app over it for a restart. The last test runs the real
``stripemeter serve`` with two API processes."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from adapters.admin_sessions import TABLE
from adapters.persistence import open_stores
from adapters.settings import Settings
from api.admin.sessions import LIFETIME, SESSION_COOKIE
from api.app import create_app
from domain.tenancy import Scope
from tests.conftest import FakeClock
from tests.e2e.conftest import Api
from tests.e2e.test_admin_ui import csrf_of, page, sign_in
from tests.e2e.test_real_server import ROOT, free_port


def issue_keys(settings: Settings, clock: FakeClock) -> dict[str, str]:
    stores = open_stores(settings, clock)
    try:
        tenant = stores.app.register_tenant("acme", "Acme").id
        return {
            "acme-all": stores.app.issue_api_key(tenant, frozenset({Scope.ADMIN})).secret,
            "acme-read": stores.app.issue_api_key(tenant, frozenset({Scope.READ})).secret,
        }
    finally:
        stores.close()


def an_app(settings: Settings, clock: FakeClock) -> TestClient[Any]:
    """One API process's app: its own stores, pools and lifespan, over ``settings``' database."""
    embedded = dataclasses.replace(settings, embedded_worker=False, writer_mode="thread")
    return TestClient(app=create_app(embedded, clock))


def with_cookie(api: Api, session_id: str | None) -> Api:
    """``api`` sending ``session_id`` as its session cookie (none: no cookie)."""
    api.client.cookies.clear()
    if session_id is not None:
        api.client.cookies.set(SESSION_COOKIE, session_id, path="/admin")
    return api


def signed_in_page(api: Api, path: str = "/admin/") -> str:
    answer = page(api, path)
    assert answer.status_code == 200, (answer.status_code, answer.headers.get("location"))
    text: str = answer.text
    return text


def sent_to_sign_in(api: Api, path: str = "/admin/") -> bool:
    answer = page(api, path)
    return answer.status_code in (302, 303, 307) and answer.headers["location"] == "/admin/login"


def stored_rows(client: TestClient[Any]) -> list[tuple[Any, ...]]:
    store = client.app.state.services.stores.views.store
    with store.transaction() as tx:
        rows: list[tuple[Any, ...]] = tx.execute(f"SELECT * FROM {TABLE}")
    return rows


def test_a_session_opened_by_one_process_is_found_and_ended_by_another(
    settings: Settings, clock: FakeClock
) -> None:
    keys = issue_keys(settings, clock)
    with an_app(settings, clock) as one, an_app(settings, clock) as other:
        first, second = Api(one, keys, clock), Api(other, dict(keys), clock)
        assert sign_in(first).status_code == 303
        session_id = one.cookies[SESSION_COOKIE]
        shown_by_first = signed_in_page(first)
        # The other process finds the same session: same tenant, scopes and CSRF token.
        shown_by_second = signed_in_page(with_cookie(second, session_id))
        assert "admin session" in shown_by_second
        assert csrf_of(shown_by_second) == csrf_of(shown_by_first)
        assert signed_in_page(second, "/admin/metrics")

        # The database holds the id's SHA-256, never the id a cookie carries.
        rows = stored_rows(one)
        assert len(rows) == 1
        assert rows[0][0] == hashlib.sha256(session_id.encode()).hexdigest()
        assert not [value for value in rows[0] if session_id in str(value)]

        # Signed out through the other process: ended in both.
        answer = other.post(
            "/admin/logout",
            data={"csrf_token": csrf_of(shown_by_second)},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert sent_to_sign_in(with_cookie(first, session_id))
        assert sent_to_sign_in(with_cookie(second, session_id))
        assert stored_rows(one) == []


def test_a_restart_keeps_the_session(settings: Settings, clock: FakeClock) -> None:
    keys = issue_keys(settings, clock)
    with an_app(settings, clock) as before:
        api = Api(before, keys, clock)
        assert sign_in(api, "acme-read").status_code == 303
        session_id = before.cookies[SESSION_COOKIE]
        csrf = csrf_of(signed_in_page(api))
    # The first app is shut down (lifespan ended, pools closed); a new one starts.
    with an_app(settings, clock) as after:
        shown = signed_in_page(with_cookie(Api(after, keys, clock), session_id))
        assert "read-only session" in shown  # the scopes came back with it
        assert csrf_of(shown) == csrf


def test_revocation_and_expiry_end_the_session_in_every_process(
    settings: Settings, clock: FakeClock
) -> None:
    keys = issue_keys(settings, clock)
    with an_app(settings, clock) as one, an_app(settings, clock) as other:
        first, second = Api(one, keys, clock), Api(other, dict(keys), clock)
        assert sign_in(first, "acme-read").status_code == 303
        revoked = one.cookies[SESSION_COOKIE]
        assert sign_in(with_cookie(first, None), "acme-all").status_code == 303
        expiring = one.cookies[SESSION_COOKIE]
        assert signed_in_page(with_cookie(second, revoked))

        # The key revoked through the first process: the other ends the session at once.
        app = one.app.state.services.stores.app
        principal = app.authenticate(keys["acme-read"])
        app.revoke_api_key(principal.tenant_id, principal.key_id, "leaked")
        assert sent_to_sign_in(with_cookie(second, revoked))
        assert len(stored_rows(one)) == 1  # its row deleted; the admin key's kept

        # Past its lifetime a session opens nothing, and the next sign-in deletes its row.
        assert signed_in_page(with_cookie(second, expiring))
        clock.advance(seconds=LIFETIME.total_seconds())
        assert sent_to_sign_in(with_cookie(first, expiring))
        assert sent_to_sign_in(with_cookie(second, expiring))
        assert len(stored_rows(one)) == 1  # expired, not yet deleted
        assert sign_in(with_cookie(second, None), "acme-all").status_code == 303
        fresh = other.cookies[SESSION_COOKIE]
        assert [row[0] for row in stored_rows(one)] == [hashlib.sha256(fresh.encode()).hexdigest()]


# -- the real server: ``stripemeter serve`` with two API processes --------------


@pytest.fixture
def serve_two_processes(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    """``start()`` runs ``stripemeter serve`` with STRIPEMETER_API_PROCESSES=2 (and its writer
    process) over ``settings``' database, stopping the previous run first."""
    env = {
        **os.environ,
        "STRIPEMETER_DATA_DIR": str(settings.data_dir),
        "STRIPEMETER_API_PROCESSES": "2",
        "STRIPEMETER_EMBEDDED_WORKER": "false",
        "STRIPEMETER_EMULATOR_PORT": "0",
    }
    env.pop("STRIPEMETER_DATABASE_URL", None)
    if settings.postgres is not None:
        db = settings.postgres
        env["STRIPEMETER_DATABASE_URL"] = (
            f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/{db.dbname}"
        )
    running: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "serve.log"

    def stop() -> None:
        while running:
            process = running.pop()
            process.terminate()
            assert process.wait(timeout=30) in (0, -15), log_path.read_text()[-3000:]

    def start() -> str:
        stop()
        port = free_port()
        with log_path.open("a") as output:
            running.append(
                subprocess.Popen(
                    [sys.executable, "-m", "api.cli", "serve"],
                    env={**env, "STRIPEMETER_PORT": str(port)},
                    cwd=ROOT,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)

    try:
        yield start
    finally:
        stop()


CLIENTS, REQUESTS = 4, 20


def cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={session_id}"}


def answers(base: str, session_id: str) -> Counter[str]:
    """CLIENTS threads at once, REQUESTS pages each, each on a new connection (so that the
    kernel hands them to either API process): 'signed in' or where each was sent."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        for number in range(REQUESTS):
            path = ("/admin/", "/admin/metrics", "/admin/customers")[number % 3]
            answer = httpx.get(base + path, headers=cookie(session_id), timeout=30)
            signed_in = answer.status_code == 200 and "Sign out" in answer.text
            with lock:
                seen["signed in" if signed_in else answer.headers.get("location", "?")] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_two_api_processes_and_a_restart_keep_one_cookie_signed_in(
    settings: Settings, clock: FakeClock, serve_two_processes: Any
) -> None:
    keys = issue_keys(settings, clock)
    base = serve_two_processes()
    with httpx.Client(base_url=base, timeout=30) as http:
        form = http.get("/admin/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        signed = http.post(
            "/admin/login",
            data={"api_key": keys["acme-all"], "csrf_token": token.group(1)},
            follow_redirects=True,
        )
        assert signed.status_code == 200
        assert "admin session" in signed.text
        session_id = http.cookies[SESSION_COOKIE]
        csrf = csrf_of(signed.text)
    total = CLIENTS * REQUESTS
    assert answers(base, session_id) == Counter({"signed in": total})

    base = serve_two_processes()  # restarted: every process is new
    assert answers(base, session_id) == Counter({"signed in": total})

    out = httpx.post(
        f"{base}/admin/logout", data={"csrf_token": csrf}, headers=cookie(session_id), timeout=30
    )
    assert out.status_code == 303
    assert answers(base, session_id) == Counter({"/admin/login": total})


@pytest.mark.parametrize(
    "value",
    [b"x" * 4000, b"%00", b"\xff\xfe", b"' OR '1'='1", "é\u2028".encode()],
    ids=["long", "nul", "latin-1", "quote", "utf-8"],
)
def test_any_cookie_value_is_a_sign_in_redirect(
    settings: Settings, clock: FakeClock, value: bytes
) -> None:
    keys = issue_keys(settings, clock)
    with an_app(settings, clock) as client:
        for path in ("/admin/", "/admin/login", "/admin/customers/%00"):
            answer = client.get(
                path,
                headers={b"cookie": f"{SESSION_COOKIE}=".encode() + value},
                follow_redirects=False,
            )
            assert answer.status_code in (200, 302), (path, answer.status_code)
            assert answer.status_code == 200 or answer.headers["location"] == "/admin/login"
        assert sign_in(Api(client, keys, clock)).status_code == 303  # the table still works
