"""The objects a running API needs, built once by ``create_app``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from uuid import UUID

from adapters.group_commit import GroupCommitWriter
from adapters.metrics import Metrics
from adapters.persistence import Stores
from adapters.push_worker import PushWorker
from adapters.settings import Settings
from adapters.writer_client import ProcessWriterClient
from domain.pushing import Target
from domain.stripe_mapping import StripeMappingService
from domain.stripe_port import StripeGateway, StripeUnavailableError
from domain.tenancy import Principal, Tenant

AUTH_CACHE_SECONDS = 5.0


@dataclass
class Services:
    settings: Settings
    stores: Stores
    metrics: Metrics
    writer: GroupCommitWriter | ProcessWriterClient
    gateways: dict[Target, StripeGateway] = field(default_factory=dict)
    push_worker: PushWorker | None = None
    emulator_url: str | None = None
    _principals: dict[str, tuple[float, Principal]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def principal(self, secret: str) -> Principal:
        """Authenticate a key. Cached for a few seconds: a revocation takes effect within 5 s."""
        now = time.monotonic()
        with self._lock:
            cached = self._principals.get(secret)
        if cached is not None and now - cached[0] < AUTH_CACHE_SECONDS:
            return cached[1]
        principal = self.stores.app.authenticate(secret)
        with self._lock:
            if len(self._principals) > 10_000:
                self._principals.clear()
            self._principals[secret] = (now, principal)
        return principal

    def cached_principal(self, secret: str) -> Principal | None:
        with self._lock:
            cached = self._principals.get(secret)
        if cached is not None and time.monotonic() - cached[0] < AUTH_CACHE_SECONDS:
            return cached[1]
        return None

    def tenant(self, tenant_id: UUID) -> Tenant:
        return self.stores.app.tenant(tenant_id)

    def stripe_mapping(self) -> StripeMappingService:
        live = self.gateways.get(Target.LIVE)
        if live is None:
            raise StripeUnavailableError(
                "Stripe is not configured in this process: set STRIPE_SECRET_KEY"
            )
        return StripeMappingService(self.stores.app, live, self.gateways.get(Target.SHADOW))
