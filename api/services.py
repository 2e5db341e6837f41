"""The objects a running API needs, built once by ``create_app``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from adapters.metrics import Metrics
from adapters.persistence import Stores
from adapters.price_book import PriceBook
from adapters.push_worker import PushWorker
from adapters.reconciler import Reconciliation
from adapters.settings import Settings
from adapters.usage_writer import UsageWriter
from domain.application import utc_now
from domain.caching import TtlCache
from domain.pushing import PushService, Target
from domain.stripe_mapping import StripeMappingService
from domain.stripe_port import StripeGateway, StripeUnavailableError
from domain.tenancy import Principal, Tenant

# A revoked key stops working within this many seconds (docs/api.md).
AUTH_CACHE_SECONDS = 5.0


@dataclass
class Services:
    settings: Settings
    stores: Stores
    metrics: Metrics
    writer: UsageWriter
    gateways: dict[Target, StripeGateway] = field(default_factory=dict)
    push_worker: PushWorker | None = None
    emulator_url: str | None = None
    background_reconciliation: Reconciliation | None = None
    clock: Callable[[], datetime] = utc_now
    background_price_book: PriceBook | None = None
    _reconciliation: Reconciliation | None = None
    _price_book: PriceBook | None = None
    _principals: TtlCache[str, Principal] = field(
        default_factory=lambda: TtlCache(AUTH_CACHE_SECONDS, 10_000)
    )
    _widget_origins: TtlCache[str, bool] = field(
        default_factory=lambda: TtlCache(AUTH_CACHE_SECONDS, 10_000)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def widget_origin_allowed(self, origin: str) -> bool:
        """Whether any tenant allows ``origin`` (a CORS preflight's question); cached as keys
        are, so a removed origin stops being granted within 5 s."""
        return self._widget_origins.get_or_load(origin, self.stores.app.widget_origin_allowed)

    def cached_widget_origin(self, origin: str) -> bool | None:
        return self._widget_origins.get(origin)

    def principal(self, secret: str) -> Principal:
        """Authenticate a key. Cached for a few seconds: a revocation takes effect within 5 s."""
        return self._principals.get_or_load(secret, self.stores.app.authenticate)

    def cached_principal(self, secret: str) -> Principal | None:
        """The key's principal if authenticated in the last few seconds; else None."""
        return self._principals.get(secret)

    def tenant(self, tenant_id: UUID) -> Tenant:
        return self.stores.app.tenant(tenant_id)

    def reconciliation(self) -> Reconciliation:
        """The worker's own when it runs here; else one for this process's requests."""
        if self.background_reconciliation is not None:
            return self.background_reconciliation
        with self._lock:
            if self._reconciliation is None:
                live = self._live_gateway()
                # With the shadow gateway, if any: shadow lines are read and repaired there.
                pusher = PushService(
                    self.stores.app,
                    {**self.gateways, Target.LIVE: live},
                    locks=self.stores.push_locks,
                )
                self._reconciliation = Reconciliation.build(
                    self.stores, self.settings.reconcile, live, pusher, self.metrics, self.clock
                )
            return self._reconciliation

    def _live_gateway(self) -> StripeGateway:
        live = self.gateways.get(Target.LIVE)
        if live is None:
            raise StripeUnavailableError(
                "Stripe is not configured in this process: set STRIPE_SECRET_KEY"
            )
        return live

    def stripe_mapping(self) -> StripeMappingService:
        return StripeMappingService(
            self.stores.app,
            self._live_gateway(),
            self.gateways.get(Target.SHADOW),
            pushed_open=self.stores.views.ledger,
        )

    def price_book(self) -> PriceBook:
        """The process's cache of Stripe prices (live account), built on first use."""
        if self.background_price_book is not None:
            return self.background_price_book
        with self._lock:
            if self._price_book is None:
                self._price_book = PriceBook(
                    self.stores.app, self._live_gateway(), self.settings.price_cache_seconds
                )
            return self._price_book
