"""Widget origins per tenant, and the cross-tenant answer a preflight reads (both backends)."""

from __future__ import annotations

from adapters.persistence import Stores
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
