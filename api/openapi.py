"""The OpenAPI 3.1 document the service serves at /schema/openapi.json (UI at /schema).

Litestar writes it from the controllers: their typed bodies, query
parameters, responses and the problem+json errors each route declares
(``error_responses`` in api/problems.py). Ingest is the one body Litestar does
not decode (it is read event by event, for speed): its request is described
here from the Structs it is decoded with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

from api.schemas import EventIn, IngestRequest

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(
        type="http", scheme="bearer", description="An API key: `Authorization: Bearer <key>`"
    ),
    "apiKey": SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="An API key"
    ),
}


def _spec(value: Any) -> Any:
    """A JSON Schema (msgspec's dict) as Litestar's spec objects, ``extra`` merged in."""
    if isinstance(value, list):
        return [_spec(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {**value, **value.get("extra", {})}
    value.pop("extra", None)
    names = {
        "anyOf": "any_of",
        "minItems": "min_items",
        "additionalProperties": "additional_properties",
    }
    fields: dict[str, Any] = {}
    for key, item in value.items():
        if key == "properties":
            fields[key] = {name: _spec(schema) for name, schema in item.items()}
        else:
            fields[names.get(key, key)] = _spec(item)
    return Schema(**fields)


def ingest_body() -> Schema:
    """The batch with its events, as ingest decodes them (api/schemas.py), in one schema."""
    _, schemas = msgspec.json.schema_components([IngestRequest, EventIn])
    batch = schemas["IngestRequest"]
    batch["properties"]["events"]["items"] = schemas["EventIn"]
    result: Schema = _spec(batch)
    return result


@dataclass
class IngestOperation(Operation):
    """The ingest operation, with the request body its handler reads by hand."""

    def __post_init__(self) -> None:
        self.parameters = [
            Parameter(
                name="Idempotency-Key",
                param_in=ParamType.HEADER,
                required=False,
                schema=Schema(type=OpenAPIType.STRING),
                description="Names the request: an event without its own idempotencyKey gets"
                " `<header>#<index>` (docs/api.md).",
            )
        ]
        self.request_body = RequestBody(
            required=True,
            description="At most the service's batch limit (1,000 by default) of usage events.",
            content={"application/json": OpenAPIMediaType(schema=ingest_body())},
        )


@dataclass
class AlsoCsv(Operation):
    """An operation whose success may also be CSV (``format=csv``), one report line a row."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/csv"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="StripeMeter API",
        version="1",
        description="Exactly-once usage metering with parity against Stripe. Guide: docs/api.md.",
        path="/schema",
        # JSON at /schema/openapi.json; Swagger UI at /schema (its script comes from a CDN
        # when a browser opens the page, never when the service starts or a test runs).
        render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
        components=Components(security_schemes=SECURITY_SCHEMES),
    )
