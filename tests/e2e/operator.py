"""What an operator's CLI commands do before a test (``db migrate``, ``tenants create``,
``keys create``, ``meters create``), done in the test's own process on the same store.

The commands call these same application methods on the store their environment
names; each as a subprocess costs seconds of Python start-up and imports, and the
commands themselves are tested where they are the subject (test_real_server.py,
tests/integration/test_cli_meters.py). Safe while ``stripemeter serve`` runs on that
store: the commands are run against a running service too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from api.queries.meters import declare_meter
from domain.tenancy import parse_scopes, tenant_id_for


@contextmanager
def _stores(env: Mapping[str, str]) -> Iterator[Stores]:
    stores = open_stores(Settings.from_env(env))
    try:
        yield stores
    finally:
        stores.close()


def migrate(env: Mapping[str, str]) -> None:
    """``stripemeter db migrate``: every missing table."""
    with _stores(env):
        pass


def create_tenant(env: Mapping[str, str], slug: str) -> None:
    """``stripemeter tenants create SLUG``."""
    with _stores(env) as stores:
        stores.app.register_tenant(slug, slug)


def create_key(env: Mapping[str, str], slug: str, scopes: str) -> str:
    """``stripemeter keys create --tenant SLUG --scopes A,B``: the key's secret."""
    with _stores(env) as stores:
        wanted = parse_scopes([s.strip() for s in scopes.split(",") if s.strip()])
        return stores.app.issue_api_key(tenant_id_for(slug), wanted).secret


def declare_metric(env: Mapping[str, str], slug: str, name: str, aggregation: str) -> None:
    """``stripemeter meters create --tenant SLUG --name NAME --aggregation AGG``."""
    with _stores(env) as stores:
        declare_meter(stores.app, tenant_id_for(slug), name=name, aggregation=aggregation)
