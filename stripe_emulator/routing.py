"""Request/response values passed to handlers, and the path router."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stripe_emulator.errors import unknown_route
from stripe_emulator.state import Obj, State


@dataclass
class ApiRequest:
    method: str
    path: str
    params: dict[str, Any]
    api_key: str
    idempotency_key: str | None = None
    args: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiResponse:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[State, ApiRequest], "Obj | ApiResponse"]


class Router:
    """Maps ``METHOD /path/{arg}`` patterns to handlers."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method.upper(), re.compile(f"^{regex}$"), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        for route_method, regex, handler in self._routes:
            if route_method == method:
                found = regex.match(path)
                if found is not None:
                    return handler, found.groupdict()
        raise unknown_route(method, path)
