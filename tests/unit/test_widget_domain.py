"""Widget tokens and origins in the domain: lifetime and origin rules, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import InvalidInputError
from domain.widget import (
    DEFAULT_LIFETIME_SECONDS,
    ExpiredWidgetTokenError,
    WidgetToken,
    check_lifetime,
    new_widget_secret,
    parse_origin,
    parse_origins,
    widget_token_digest,
)

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("https://app.acme.com", "https://app.acme.com"),
        ("https://APP.Acme.com", "https://app.acme.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_kept_as_browsers_send_them(given: str, origin: str) -> None:
    assert parse_origin(given) == origin


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "null",
        "app.acme.com",
        "https://app.acme.com/",
        "https://app.acme.com/billing",
        "https://app.acme.com?x",
        "https://app.acme.com#x",
        "https://me:pw@app.acme.com",
        "ftp://app.acme.com",
        "javascript://x",
        "https://",
        "https://a_b.test",
        "https://app.acme.com:0x1",
        " https://app.acme.com",
        "https://" + "a" * 300 + ".test",
    ],
)
def test_anything_but_an_origin_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse_origin(bad)
    assert refused.value.field == "origins"


def test_origins_lose_repeats_and_are_bounded() -> None:
    assert parse_origins(["https://a.test", "https://A.test", "https://b.test"]) == (
        "https://a.test",
        "https://b.test",
    )
    with pytest.raises(InvalidInputError):
        parse_origins([f"https://{i}.test" for i in range(51)])


def test_lifetime_defaults_to_15_minutes_and_is_bounded() -> None:
    assert check_lifetime(None) == DEFAULT_LIFETIME_SECONDS == 900
    assert check_lifetime(1) == 1 and check_lifetime(86_400) == 86_400
    for bad in (0, -1, 86_401):
        with pytest.raises(InvalidInputError) as refused:
            check_lifetime(bad)
        assert refused.value.field == "lifetimeSeconds"


def test_a_token_keeps_a_digest_and_expires_at_its_time() -> None:
    secret = new_widget_secret()
    tenant = uuid4()
    token = WidgetToken.mint(tenant, "cus_1", secret, NOW, 60)
    assert secret not in repr(vars(token))
    assert token.digest == widget_token_digest(secret)
    grant = token.grant(NOW + timedelta(seconds=59))
    assert (grant.tenant_id, grant.customer_ref) == (tenant, "cus_1")
    with pytest.raises(ExpiredWidgetTokenError) as expired:
        token.grant(NOW + timedelta(seconds=60))
    assert expired.value.tenant_id == tenant
    assert "expired at 2026-03-15T12:01:00Z" in str(expired.value)
