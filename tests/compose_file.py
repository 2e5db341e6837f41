"""compose.yaml as the tests read it: services, profiles, and each service's environment
as Compose would hand it to the container for a given shell environment.

Only the interpolation compose.yaml uses is understood (``${NAME}``,
``${NAME:-default}``, ``${NAME-default}``, ``$$``); anything else fails loudly,
and tests/unit/test_compose.py compares the result with a real Compose client's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"
_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|(.))")


class ComposeSyntaxError(ValueError):
    """compose.yaml uses interpolation this reader does not understand."""


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = document()["services"]
    return found


def profiles() -> list[str]:
    """Every profile some service belongs to, sorted."""
    return sorted({p for s in services().values() for p in s.get("profiles", [])})


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, name, operator, default, other = match.groups()
        if escaped:
            return "$"
        if other is not None or name is None:
            raise ComposeSyntaxError(f"unsupported interpolation in {value!r}")
        found = shell.get(name)
        if operator == ":-" and not found:
            return default
        if operator == "-" and found is None:
            return default
        return found or ""

    return _VARIABLE.sub(replace, value)


def environment(service: str, shell: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container environment of ``service``, for a shell with ``shell``'s variables."""
    shell = shell or {}
    raw = services()[service].get("environment") or {}
    if isinstance(raw, list):  # the list form: NAME=value
        raw = dict(item.split("=", 1) for item in raw)
    return {name: interpolate(str(value), shell) for name, value in raw.items()}


def client() -> list[str] | None:
    """A Compose client: Debian's ``docker-compose`` or Docker's ``docker compose`` plugin."""
    found = shutil.which("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    if docker is None:
        return None
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return [docker, "compose"] if plugin.returncode == 0 else None
