"""Widget origins per tenant, the cross-tenant answer a preflight reads, and the CLI's
``widget:mint`` key (both backends)."""

from __future__ import annotations

import json

import pytest

from adapters.persistence import Stores
from api import cli
from domain.tenancy import Scope
from tests.helpers import setup_tenant

A = "https://app.example.test"


def test_an_origin_is_allowed_while_any_tenant_allows_it(stores: Stores) -> None:
    app = stores.app
    acme, globex = setup_tenant(stores, "acme"), setup_tenant(stores, "globex")
    assert not app.widget_origin_allowed(A)
    assert app.set_widget_origins(acme, (A,))
    assert not app.set_widget_origins(acme, (A,))  # unchanged: no event
    assert app.set_widget_origins(globex, (A, "https://g.test"))
    assert app.tenant(acme).widget_origins == (A,)
    assert app.set_widget_origins(acme, ())
    assert app.widget_origin_allowed(A)  # globex still allows it
    assert app.set_widget_origins(globex, ("https://g.test",))
    assert not app.widget_origin_allowed(A)
    assert app.widget_origin_allowed("https://g.test")
    # Rebuilt from the log: the same settings.
    assert tuple(app.repository.get(globex).widget_origins) == ("https://g.test",)


@pytest.mark.usefixtures("cli_env")
def test_the_cli_issues_a_key_that_only_mints_widget_tokens(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    stores.app.register_tenant("acme", "Acme")
    code = cli.main(["keys", "create", "--tenant", "acme", "--scopes", "widget:mint"])
    issued = json.loads(capsys.readouterr().out)
    assert (code, issued["scopes"]) == (0, ["widget:mint"])
    principal = stores.app.authenticate(issued["key"])
    assert principal.allows(Scope.WIDGET_MINT)
    assert not any(principal.allows(s) for s in (Scope.READ, Scope.INGEST, Scope.ADMIN))
