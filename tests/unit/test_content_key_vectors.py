"""The shared content-key vectors (sdk/vectors/content-keys.json) hold for the server.

The Python and Node SDKs check the same file against their own derivation, so
a key an SDK computes before its first attempt is the key the server derives.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from api.routes.ingest import read_batch
from domain.idempotency import canonical_payload
from domain.tenancy import Principal, Scope

VECTORS = Path(__file__).parents[2] / "sdk" / "vectors" / "content-keys.json"
PRINCIPAL = Principal(
    tenant_id=uuid4(), tenant_slug="acme", key_id=uuid4(), scopes=frozenset({Scope.INGEST})
)


def _vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return vectors


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_the_server_derives_each_vectors_key_from_its_wire_form(vector: dict[str, Any]) -> None:
    body = ('{"events":[' + vector["wire"] + "]}").encode()
    results, submissions = read_batch(body, PRINCIPAL, None, 10)
    assert results == [None]
    event = submissions[0]
    canonical = canonical_payload(
        event.metric, event.customer_ref, event.quantity, event.occurred_at, event.meta
    )
    assert canonical == vector["canonical"]
    assert event.idempotency_key == vector["key"]
    assert event.derived_key


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_each_vector_is_consistent_in_itself(vector: dict[str, Any]) -> None:
    assert json.loads(vector["wire"]) == vector["event"]
    digest = hashlib.sha256(vector["canonical"].encode()).hexdigest()
    assert vector["key"] == f"content:{digest}"
