"""What build is running: the one place the version comes from.

``stripemeter --version``, ``/health`` and the ``stripemeter_build_info``
metric of the API and of ``stripemeter worker`` all read :func:`version`: the
installed package's metadata (set from ``pyproject.toml`` at install), or,
in a checkout that was never installed, ``pyproject.toml`` itself.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import tomllib
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DISTRIBUTION = "stripemeter"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
UNKNOWN = "0+unknown"


@functools.cache
def version() -> str:
    """The running StripeMeter's version, e.g. ``0.1.0``; ``0+unknown`` if nothing says."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return _pyproject_version(PYPROJECT)


def _pyproject_version(path: Path) -> str:
    try:
        project = tomllib.loads(path.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return UNKNOWN
    found = project.get("version")
    return found if isinstance(found, str) and found else UNKNOWN


class BuildInfoCollector(Collector):
    """``stripemeter_build_info{version, python} 1``: constant, for joins in queries.

    A collector rather than a Gauge, so that it reads the same in the shared-files
    mode of several API processes (one series, not one per process).
    """

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "stripemeter_build_info",
            "The running build: StripeMeter's version and Python's, as labels; always 1.",
            labels=["version", "python"],
        )
        family.add_metric([version(), platform.python_version()], 1)
        yield family
