"""Typed request bodies (``data: SomeStruct``) decoded by the API's own JSON rules.

Litestar would decode a ``data`` body with msgspec alone; the API also refuses
a key repeated in one object and nesting past ``MAX_BODY_DEPTH``
(``decode_json``), and names a bad field the way every other refusal does.
``StrictBody`` is a DTO that only swaps in that decoder: the handler still
declares its Struct, and the OpenAPI document describes the Struct itself.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.dto._backend import DTOBackend
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from api.schemas import decode_json


class StrictBody(AbstractDTO[Any]):
    """Decode the body with ``decode_json`` into the handler's ``data`` annotation.

    An optional body (``data: X | None = None``) may be empty or whitespace.
    Responses are not touched (``return_dto=None`` beside it).
    """

    @classmethod
    def create_for_field_definition(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,
        backend_cls: type[DTOBackend] | None = None,
    ) -> None:
        """Nothing to build: the Struct is its own transfer model."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        result: Reference | Schema = schema_creator.for_field_definition(field_definition)
        return result

    def decode_bytes(self, value: bytes) -> Any:
        field = self.asgi_connection.route_handler.parsed_data_field
        if field is None:  # pragma: no cover - Litestar calls a DTO only for a data field
            raise TypeError("StrictBody decodes only a handler's data parameter")
        if field.is_optional:
            if not value.strip():
                return None
            (struct,) = (arg for arg in field.args if arg is not type(None))
            return decode_json(value, struct)
        return decode_json(value, field.annotation)

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        raise NotImplementedError("StrictBody maps no fields: it decodes whole Structs")

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False
