"""The OpenAPI 3.1 document the service serves at /schema/openapi.json (UI at /schema).

Litestar writes it from the controllers: their typed bodies, query
parameters, responses and the problem+json errors each route declares
(``error_responses`` in api/problems.py). Ingest is the one body Litestar does
not decode (it is read event by event, for speed): its request is described
here from the Structs it is decoded with.
"""

from __future__ import annotations

import re
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

from api import cloudevents
from api.schemas import EventIn, IngestRequest

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(
        type="http", scheme="bearer", description="An API key: `Authorization: Bearer <key>`"
    ),
    "apiKey": SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="An API key"
    ),
}


CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def _spec(value: Any) -> Any:
    """A JSON Schema (msgspec's dict) as Litestar's spec objects, ``extra`` merged in."""
    if isinstance(value, list):
        return [_spec(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {**value, **value.get("extra", {})}
    value.pop("extra", None)
    fields: dict[str, Any] = {}
    for key, item in value.items():
        if key == "properties":
            fields[key] = {name: _spec(schema) for name, schema in item.items()}
        else:  # JSON Schema's keywords are Schema's fields in snake case: anyOf, any_of
            fields[CAMEL_HUMP.sub("_", key).lower()] = _spec(item)
    return Schema(**fields)


def struct_schema(struct: type[msgspec.Struct]) -> Schema:
    """A Struct's JSON Schema, with the Structs it nests written in place."""
    (top,), defs = msgspec.json.schema_components([struct])

    def inline(value: Any) -> Any:
        if isinstance(value, list):
            return [inline(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$ref" in value:
            return inline(defs[value["$ref"].rsplit("/", 1)[1]])
        return {key: inline(item) for key, item in value.items()}

    result: Schema = _spec(inline(top))
    return result


def read_by_hand(struct: type[msgspec.Struct], description: str) -> RequestBody:
    """The JSON body of a handler that reads its body by hand."""
    content = {"application/json": OpenAPIMediaType(schema=struct_schema(struct))}
    return RequestBody(required=True, description=description, content=content)


def header(name: str, description: str, required: bool = False) -> Parameter:
    schema = Schema(type=OpenAPIType.STRING)
    return Parameter(
        name, ParamType.HEADER, schema=schema, required=required, description=description
    )


@dataclass
class IngestOperation(Operation):
    """The ingest operation, with the request body its handler reads by hand."""

    def __post_init__(self) -> None:
        self.parameters = [
            header(
                "Idempotency-Key",
                "Names the request: an event without its own idempotencyKey gets"
                " `<header>#<index>` (docs/api.md).",
            )
        ]
        self.request_body = read_by_hand(
            IngestRequest, "At most the service's batch limit (1,000 by default) of usage events."
        )
        batch = self.request_body.content["application/json"].schema
        if isinstance(batch, Schema) and batch.properties is not None:
            # Kept undecoded (msgspec.Raw) until each is read alone, as an EventIn.
            events = batch.properties["events"]
            if isinstance(events, Schema):
                events.items = struct_schema(EventIn)
        # The same events as CloudEvents 1.0, structured mode (docs/cloudevents.md).
        event = struct_schema(cloudevents.UsageCloudEvent)
        self.request_body.content[cloudevents.SINGLE] = OpenAPIMediaType(schema=event)
        self.request_body.content[cloudevents.BATCH] = OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.ARRAY, items=event, min_items=1)
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
