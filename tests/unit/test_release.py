"""What a release ships beside the code says the same as the code: the licence
pyproject.toml declares, and a changelog entry for the version it builds.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from adapters.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()


class RecordingEnv(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def test_the_license_file_is_the_mit_license_pyproject_declares() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == {"text": "MIT"}
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 StripeMeter contributors" in text


def test_the_changelog_has_the_version_pyproject_builds_and_an_unreleased_section() -> None:
    headings = re.findall(r"^## \[([^\]]+)\]", CHANGELOG, re.M)
    assert headings[0] == "Unreleased"
    assert PROJECT["version"] in headings
    for heading in headings:
        section = CHANGELOG.split(f"## [{heading}]", 1)[1].split("\n## ", 1)[0]
        assert "### Upgrade notes" in section, heading


def test_every_setting_the_changelog_names_is_one_the_settings_read() -> None:
    env = RecordingEnv()
    Settings.from_env(env)
    named = set(re.findall(r"\b(STRIPE(?:METER)?_[A-Z_]+[A-Z])\b", CHANGELOG))
    assert named, "the changelog names no setting"
    assert named - env.asked == set()
