"""compose.yaml is for users with Docker (there is no engine here): check what can be checked.

Every command it runs must be one the CLI accepts, and every StripeMeter or
Stripe variable it sets must be one the settings read, so that a typo cannot
ship. A real Compose client (Debian's ``docker-compose``, which .ci/run
installs) validates the file and each profile without an engine, and agrees
with tests/compose_file.py on each container's environment. What the
environment does, with real processes, PostgreSQL and Redis, is
tests/e2e/test_compose_stack.py.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
from typing import Any

import pytest
import yaml

from adapters.settings import Settings
from adapters.stripe_target import MissingStripeKeyError, check_stripe_target
from api.cli import parser
from tests import compose_file

SHELL = {"STRIPE_SECRET_KEY": "sk_live_from_the_shell", "STRIPE_MAX_NETWORK_RETRIES": "3"}


class RecordingEnv(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def stripemeter_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose_file.services().items() if s.get("build")}


def test_every_stripemeter_command_in_compose_parses() -> None:
    commands = [s["command"] for s in stripemeter_services().values()]
    assert commands, "compose.yaml runs no StripeMeter service"
    for command in commands:
        assert command[0] == "stripemeter"
        parser().parse_args(command[1:])


def test_every_stripemeter_variable_in_compose_is_read_by_the_settings() -> None:
    env = RecordingEnv()
    Settings.from_env(env)
    for name in compose_file.services():
        for variable in compose_file.environment(name):
            if variable.startswith(("STRIPEMETER_", "STRIPE_")):
                assert variable in env.asked, f"{name}: {variable} is not a setting"
    for name in stripemeter_services():
        for shell in ({}, SHELL):
            Settings.from_env(compose_file.environment(name, shell))  # parses without error


def pushes(service: dict[str, Any], settings: Settings) -> bool:
    command = service["command"]
    if command[1] == "worker":
        return "--no-pushes" not in command
    return command[1] == "serve" and settings.embedded_worker


def test_every_service_that_pushes_uses_redis_as_its_broker() -> None:
    pushing = []
    for name, service in stripemeter_services().items():
        settings = Settings.from_env(compose_file.environment(name, SHELL))
        if pushes(service, settings):
            pushing.append(name)
            assert settings.broker_url == "redis://redis:6379/0", name
            assert "redis" in service.get("depends_on", {}), name
    assert pushing == ["worker"]


def test_stripe_keys_come_from_the_shell_and_none_means_refusal() -> None:
    worker = compose_file.services()["worker"]
    with_key = Settings.from_env(compose_file.environment("worker", SHELL))
    assert with_key.stripe.secret_key == "sk_live_from_the_shell"
    assert with_key.stripe.max_network_retries == 3
    check_stripe_target(with_key, pushes=pushes(worker, with_key))

    without = Settings.from_env(compose_file.environment("worker", {}))
    assert without.stripe.secret_key is None and not without.stripe.emulator
    with pytest.raises(MissingStripeKeyError):
        check_stripe_target(without, pushes=pushes(worker, without))

    asked = compose_file.environment("worker", {"STRIPEMETER_STRIPE_EMULATOR": "true"})
    check_stripe_target(Settings.from_env(asked), pushes=True)


def test_interpolation_reads_what_compose_uses_and_refuses_the_rest() -> None:
    shell = {"SET": "x", "EMPTY": ""}
    assert compose_file.interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-d}", shell) == "x/d/d"
    assert compose_file.interpolate("${EMPTY-d}/${UNSET-d}/${UNSET}/$$", shell) == "/d//$"
    with pytest.raises(compose_file.ComposeSyntaxError):
        compose_file.interpolate("${SET:?required}", shell)


# -- a real Compose client -----------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> list[str]:
    found = compose_file.client()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("a Compose client is required under CI (.ci/run installs docker-compose)")
        pytest.skip("no Compose client (docker-compose or docker compose) is installed")
    return found


def config(compose: list[str], *options: str, shell: dict[str, str]) -> dict[str, Any]:
    """``config`` needs no Docker engine: it validates the file and prints it resolved.

    The same call is made once per session (each costs seconds: the client is a program
    of its own); every caller gets its own copy of the answer."""
    return copy.deepcopy(_config(tuple(compose), tuple(options), tuple(sorted(shell.items()))))


@functools.cache
def _config(
    compose: tuple[str, ...], options: tuple[str, ...], shell: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    # The client is a program of its own (Debian's runs on the system Python): none of
    # this project's paths, Docker or Stripe settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE", "DOCKER_")) and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    done = subprocess.run(
        [*compose, "-f", str(compose_file.COMPOSE), *options, "config"],
        env={**env, **dict(shell)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "variable is not set" not in done.stderr, done.stderr
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


@pytest.mark.parametrize("profile", [None, *compose_file.profiles()])
def test_a_compose_client_validates_the_file_and_each_profile(
    compose: list[str], profile: str | None
) -> None:
    options = ["--profile", profile] if profile else []
    resolved = config(compose, *options, shell={})
    assert set(stripemeter_services()) <= set(resolved["services"])


def test_the_compose_client_resolves_the_environment_as_the_tests_do(
    compose: list[str],
) -> None:
    for shell in ({}, SHELL):
        resolved = config(compose, shell=shell)
        for name in stripemeter_services():
            seen = {k: str(v) for k, v in (resolved["services"][name]["environment"]).items()}
            assert seen == compose_file.environment(name, shell), name


def test_the_compose_client_refuses_an_invalid_file(compose: list[str], tmp_path: Any) -> None:
    """The check above can fail: a misspelt option is an error, not a warning."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(compose_file.COMPOSE.read_text().replace("depends_on:", "depend_on:", 1))
    done = subprocess.run(
        [*compose, "-f", str(broken), "config"], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "depend_on" in done.stderr
