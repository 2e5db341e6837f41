"""Typed readers for decoded request parameters, raising Stripe's errors.

v1 form values are all strings (an empty string means "unset"); v2 JSON values
keep their JSON types. The readers accept both so a handler can serve either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from stripe_emulator.errors import invalid_request, missing_param

Params = Mapping[str, Any]
_INTEGER = re.compile(r"^-?\d+$")


def opt_str(params: Params, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        raise invalid_request(f"Invalid string: {name} must be a string.", param=name)
    return str(value)


def req_str(params: Params, name: str) -> str:
    value = opt_str(params, name)
    if value is None:
        raise missing_param(name)
    return value


def opt_int(params: Params, name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise invalid_request(f"Invalid integer: {value}", param=name)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    raise invalid_request(f"Invalid integer: {value}", param=name)


def req_int(params: Params, name: str) -> int:
    value = opt_int(params, name)
    if value is None:
        raise missing_param(name)
    return value


def opt_decimal(params: Params, name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise invalid_request(f"Invalid decimal: {value}", param=name) from None


def opt_bool(params: Params, name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    raise invalid_request(f"Invalid boolean: {value}", param=name)


def opt_dict(params: Params, name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid object: {name} must be a hash.", param=name)
    return value


def opt_list(params: Params, name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        # A sparse or unusual index set stays a dict after decoding; keep its order.
        return list(value.values())
    if not isinstance(value, list):
        raise invalid_request(f"Invalid array: {name} must be an array.", param=name)
    return value


def one_of(params: Params, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = opt_str(params, name) or default
    if value not in allowed:
        raise invalid_request(f"Invalid {name}: must be one of {', '.join(allowed)}", param=name)
    return value


def metadata(params: Params) -> dict[str, str]:
    return {k: str(v) for k, v in opt_dict(params, "metadata").items() if v != ""}
