"""compose.yaml is for users with Docker (there is no engine here): check what can be checked.

Every command it runs must be one the CLI accepts, and every StripeMeter
variable it sets must be one the settings read, so that a typo cannot ship.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from adapters.settings import Settings
from api.cli import parser

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


class RecordingEnv(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def services() -> Iterator[tuple[str, dict[str, Any]]]:
    document = yaml.safe_load(COMPOSE.read_text())
    yield from document["services"].items()


def test_every_stripemeter_command_in_compose_parses() -> None:
    commands = [s["command"] for _, s in services() if s.get("build")]
    assert commands, "compose.yaml runs no StripeMeter service"
    for command in commands:
        assert command[0] == "stripemeter"
        parser().parse_args(command[1:])


def test_every_stripemeter_variable_in_compose_is_read_by_the_settings() -> None:
    env = RecordingEnv()
    Settings.from_env(env)
    for name, service in services():
        for variable in service.get("environment") or {}:
            if variable.startswith("STRIPEMETER_"):
                assert variable in env.asked, f"{name}: {variable} is not a setting"
    for _name, service in services():
        environment = service.get("environment") or {}
        if "STRIPEMETER_DATABASE_URL" in environment:
            Settings.from_env(environment)  # parses without error
