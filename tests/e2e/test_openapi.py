"""The served OpenAPI document: valid 3.1, complete, and true of the running API.

schemathesis generates requests from the document for every operation and
checks each answer against it: no 5xx, every status and content type
documented, every body matching its schema. Bounded and derandomized, so a
failure reproduces; run with an admin key and with a read-only key.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import UndefinedStatusCode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import Api

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
EXAMPLES_PER_OPERATION = 25
PROBLEM = "application/problem+json"


def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def test_the_document_is_openapi_3_1(api: Api) -> None:
    doc = document(api)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any departure from the 3.1 specification


def test_the_browsable_page_is_served_with_the_document_in_it(api: Api) -> None:
    page = api.client.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text
    assert '"/v1/events/ingest"' in page.text  # the spec is inlined: no second fetch


def test_every_api_route_documents_its_key_and_its_problems(api: Api) -> None:
    doc = document(api)
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert doc["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
    problem = doc["components"]["schemas"]["ProblemDetails"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    assert "errors" in problem["properties"]
    operations = [
        (path, method, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if path.startswith("/v1/") and path != "/v1/stripe/webhooks"
    ]
    assert len(operations) == 42
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        # The widget reads with a widget token, sent as a bearer token only (docs/widget.md).
        keyed = [{"bearer": []}] if path == "/v1/widget/usage" else [{"bearer": []}, {"apiKey": []}]
        assert operation["security"] == keyed, where
        for status in ("401", "403"):
            content = operation["responses"][status]["content"]
            assert list(content) == [PROBLEM], where
            assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}
        # No error answer keeps Litestar's own (unused) error shape.
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(response.get("content", {PROBLEM: 0})) == [PROBLEM], (where, status)


def test_ingest_documents_the_batch_it_reads_by_hand(api: Api) -> None:
    operation = document(api)["paths"]["/v1/events/ingest"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["events"]
    event = body["properties"]["events"]["items"]
    assert event["required"] == ["metric", "customerRef", "quantity", "ts"]
    assert event["additionalProperties"] is False
    assert event["properties"]["quantity"]["anyOf"] == [{"type": "number"}, {"type": "string"}]
    assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/IngestResponse"}


def test_the_webhook_documents_its_signature_and_body(api: Api) -> None:
    operation = document(api)["paths"]["/v1/stripe/webhooks"]["post"]
    assert "security" not in operation  # Stripe signs it; no API key
    (signature,) = operation["parameters"]
    assert (signature["name"], signature["in"], signature["required"]) == (
        "Stripe-Signature",
        "header",
        True,
    )
    event = operation["requestBody"]["content"]["application/json"]["schema"]
    assert event["required"] == ["type"]
    assert event["properties"]["type"] == {"type": "string", "minLength": 1, "maxLength": 255}


def test_a_wrong_method_is_405_with_allow(api: Api) -> None:
    response = api.call("PUT", "/v1/meters")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


@pytest.mark.parametrize("key", ["acme-all", "acme-read"])
def test_schemathesis_finds_nothing(stripe_api: Api, key: str) -> None:
    """Every operation, EXAMPLES_PER_OPERATION generated requests each, all answered as
    documented (in-process, through the same client as the other tests). Stripe is
    the emulator, so that a 503 would be a finding too."""
    api = stripe_api
    schema = schemathesis.openapi.from_dict(document(api))
    headers = {"Authorization": f"Bearer {api.keys[key]}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 47
    for operation in operations:
        exercise(api, operation, headers)


def test_the_run_fails_on_a_status_the_document_does_not_name(api: Api) -> None:
    """The run above can fail: with 422 struck from a route's responses, it says so."""
    doc = document(api)
    del doc["paths"]["/v1/meters"]["post"]["responses"]["422"]
    schema = schemathesis.openapi.from_dict(doc)
    declare = schema["/v1/meters"]["POST"]
    headers = {"Authorization": f"Bearer {api.keys['acme-all']}"}
    with pytest.raises(FailureGroup) as caught:
        exercise(api, declare, headers)
    assert [type(e) for e in caught.value.exceptions] == [UndefinedStatusCode]


def exercise(api: Api, operation: Any, headers: dict[str, str]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://testserver.local", headers=headers)
        response = api.client.request(**httpx_arguments(kwargs))
        case.validate_response(response, checks=CHECKS)

    run()


def httpx_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis speaks ``requests``; the test client is httpx."""
    names = {"method", "url", "params", "headers", "json"}  # the API reads no cookies
    result = {name: value for name, value in kwargs.items() if name in names}
    if kwargs.get("data") is not None:
        data = kwargs["data"]
        result["content"] = data.encode() if isinstance(data, str) else data
    return result
