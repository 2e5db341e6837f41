"""The account a secret key belongs to (``GET /v1/account``).

Real Stripe has one account per key. The emulator keeps one set of objects
for every key, but names the account after the key, so that a deployment's
live key and its shadow test key look like two accounts — which is what
StripeMeter scopes its ownership claims by.
"""

from __future__ import annotations

import hashlib

from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State


def account_id_for(api_key: str) -> str:
    return "acct_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def retrieve(state: State, req: ApiRequest) -> Obj:
    return {
        "id": account_id_for(req.api_key),
        "object": "account",
        "country": "US",
        "default_currency": "usd",
        "charges_enabled": True,
        "details_submitted": True,
        "type": "standard",
    }


def register(router: Router) -> None:
    router.add("GET", "/v1/account", retrieve)
